"""Synthesise this project's source audio: three minutes of a two-voice "podcast", made not downloaded.

Speech-like material from ffmpeg's own generators: a buzzing glottal source (a band-limited
sawtooth with intonation) shaped by vowel formants, syllables at about four a second,
pauses between phrases, two speakers taking turns (a low and a high voice), some breath
noise, and a short chord jingle at the start and the end. Encoded as mono Opus, small
enough to keep in the repository.

    python sample_projects/podcast/make_source.py [--seconds 180] [--output source.opus]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

RATE = 48000
TURN = 20.0  # seconds per speaker turn
PHRASE = 3.7  # seconds per phrase, the last PAUSE of it silent
PAUSE = 0.6

# Each speaker: fundamental in Hz and a formant scale (a higher voice has higher formants).
SPEAKERS = ((112.0, 1.0), (196.0, 1.17))
# Two vowels ("ah", "ee") as (frequency, bandwidth, gain) triples; speech glides between them.
VOWELS = (
    ((730, 90, 1.0), (1090, 110, 0.5), (2440, 170, 0.25)),
    ((300, 60, 1.0), (2290, 200, 0.35), (3010, 250, 0.2)),
)


def speaker_on(index: int) -> str:
    """1 while speaker ``index`` has the turn, else 0."""
    turn = f"lt(mod(t,{2 * TURN}),{TURN})"
    return turn if index == 0 else f"(1-{turn})"


def envelope() -> str:
    """Syllables (an uneven 4.3 Hz swell) inside phrases, with soft-edged pauses between them."""
    syllables = "pow(max(0,sin(2*PI*4.3*t+1.7*sin(2*PI*0.61*t))),1.5)"
    phrase = (f"min(1,max(0,(mod(t,{PHRASE})-{PAUSE})/0.04))"
              f"*min(1,max(0,({PHRASE}-mod(t,{PHRASE}))/0.04))")
    turn_gap = (f"min(1,max(0,(mod(t,{TURN})-0.8)/0.05))"  # a breath before each new turn
                f"*min(1,max(0,({TURN}-mod(t,{TURN}))/0.05))")
    return f"{syllables}*{phrase}*{turn_gap}"


def glottal(f0: float) -> str:
    """A band-limited sawtooth (six harmonics, falling 1/k) with a slow intonation contour."""
    phase = f"({f0}*(t+0.35*sin(2*PI*0.23*t)/(2*PI*0.23)+0.1*sin(2*PI*1.9*t)/(2*PI*1.9)))"
    return "+".join(f"sin(2*PI*{k}*{phase})/{k}" for k in range(1, 7))


def graph(seconds: float) -> str:
    env = envelope()
    vowel_mix = "(0.5+0.5*sin(2*PI*1.3*t+2*sin(2*PI*0.37*t)))"  # 1 for "ah", 0 for "ee"
    chains, labels = [], []
    for s, (f0, scale) in enumerate(SPEAKERS):
        chains.append(f"aevalsrc=exprs='({glottal(f0)})*{speaker_on(s)}*{env}':s={RATE}:d={seconds},"
                      f"asplit=2[buzz{s}0][buzz{s}1]")
        for v, formants in enumerate(VOWELS):
            weight = vowel_mix if v == 0 else f"(1-{vowel_mix})"
            bands = "".join(f"[x{s}{v}{i}]" for i in range(3))
            chains.append(f"aevalsrc=exprs='{weight}':s={RATE}:d={seconds}[w{s}{v}]")
            chains.append(f"[buzz{s}{v}][w{s}{v}]amultiply,asplit=3{bands}")
            for i, (freq, width, gain) in enumerate(formants):
                band = f"bandpass=f={freq * scale:.0f}:t=h:w={width * scale:.0f}"
                chains.append(f"[x{s}{v}{i}]{band},volume={gain}[f{s}{v}{i}]")
                labels.append(f"[f{s}{v}{i}]")
    breath = f"anoisesrc=c=pink:a=0.004:s={RATE}:d={seconds}:seed=7,highpass=f=1500[breath]"
    jingle_env = f"(min(1,t/0.5)*max(0,1-t/7)+max(0,1-({seconds}-t)/7)*min(1,({seconds}-t)/0.5))"
    jingle = (f"aevalsrc=exprs='0.05*{jingle_env}*(sin(2*PI*220*t)+sin(2*PI*277.2*t)+sin(2*PI*329.6*t)"
              f"+0.5*sin(2*PI*440*t))':s={RATE}:d={seconds}[jingle]")
    mix = f"{''.join(labels)}[breath][jingle]amix=inputs={len(labels) + 2}:normalize=0,volume=1.3[out]"
    return ";".join([*chains, breath, jingle, mix])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=180.0)
    parser.add_argument("--output", type=Path, default=Path(__file__).with_name("source.opus"))
    parser.add_argument("--bitrate", default="20k")
    args = parser.parse_args()
    import imageio_ffmpeg

    cmd = [
        imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
        "-filter_complex", graph(args.seconds), "-map", "[out]",
        "-c:a", "libopus", "-b:a", args.bitrate, "-application", "voip",
        "-fflags", "+bitexact", "-flags:a", "+bitexact", str(args.output),
    ]
    return subprocess.run(cmd).returncode


if __name__ == "__main__":
    sys.exit(main())
