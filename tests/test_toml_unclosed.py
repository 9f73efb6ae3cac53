"""An array left open in farm.toml is named where it opens, with its key: tomllib reports the
line where it met what came next (blank lines and comments later), which is not where the user erred."""

from __future__ import annotations

import subprocess
import sys

import pytest

from farm.errors import ProjectError
from farm.tomltext import parse_toml


def test_farm_submit_names_the_line_and_key_of_the_unclosed_array(tmp_path):
    (tmp_path / "farm.toml").write_text('[project]\nmedia_type = "synthetic"\n[synthetic]\njobs = 3\n'
                                        'fail = ["job-0000001",\n  "job-0000002"\n\n# the rest\n[jobs]\n'
                                        'max_attempts = 1\n')
    done = subprocess.run([sys.executable, "-m", "farm", "submit", str(tmp_path)], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 1
    assert (f"{tmp_path / 'farm.toml'}:5: [synthetic] fail: invalid TOML: the array that opens on this "
            "line is never closed with ']'") in done.stderr, done.stderr
    assert "(tomllib: Unclosed array (at line 9, column 1))" in done.stderr, done.stderr  # its own word too


@pytest.mark.parametrize(("text", "where"), [
    ('a = [1, 2\n', "farm.toml:1: a:"),
    ('a = [1, 2', "farm.toml:1: a:"),
    ('x = "]"\n[t.u]\nk = [\n  "a]b", \'c]\', """d\n]""", # ]\n  [1, 2],\n  [3\n\ny = 1\n',
     "farm.toml:7: [t.u] k:"),
    ('[[runs]]\nname = "a#b"\nlist = [1, # [\n 2\nz = 2\n', "farm.toml:3: [runs] list:"),
])
def test_strings_comments_and_nesting_do_not_move_the_line(text, where):
    with pytest.raises(ProjectError) as caught:
        parse_toml(text, "farm.toml")
    assert str(caught.value).startswith(f"{where} invalid TOML: the array that opens"), caught.value


def test_other_toml_errors_keep_tomllib_s_line():
    with pytest.raises(ProjectError) as caught:
        parse_toml('a = 1\nb = = 2\n', "farm.toml")
    assert str(caught.value).startswith("farm.toml:2: invalid TOML: "), caught.value
