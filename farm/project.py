"""A render project: a folder with a `farm.toml`, loaded and validated in one place."""

from __future__ import annotations

import datetime
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import msgpack

from farm.assetrules import AssetRules, BadPattern, check_pattern
from farm.errors import FarmError, ProjectError, ProtocolError, UnknownMediaType
from farm.ids import BadIdentifier, check_name
from farm.notify import MAX_HOOKS, BadWebhook, check_webhook
from farm.ownoutput import file_id, output_files
from farm.paths import UnsafePath, safe_relpath
from farm.plugincode import raised_at
from farm.settings import STATE_DIR, SettingsReader, line_of  # noqa: F401  (STATE_DIR: imported from here)
from farm.tomltext import parse_toml

PROJECT_FILE = "farm.toml"
DEFAULT_ATTEMPTS = 3
# A job's outputs together; [jobs] max_output_mib overrides. They ride in one RESULTS message,
# which the controller takes up to farm.protocol.MAX_MESSAGE (64 MiB): leave room for the rest.
MAX_OUTPUT_MIB = 60
DEFAULT_MAX_OUTPUT_MIB = MAX_OUTPUT_MIB
DEFAULT_MAX_OUTPUT = DEFAULT_MAX_OUTPUT_MIB * 2**20  # bytes
# Seconds a job of a media type that groups units aims at ([jobs] target; farm.controller.chunking).
DEFAULT_TARGET_S = 60.0
MAX_TARGET_S = 86400.0


@dataclass(frozen=True)
class Project:
    """A loaded, validated project. Everything in it is plain data that can travel."""

    root: Path
    name: str
    media_type: str
    settings: dict[str, Any]  # the media type's normalised table
    include: tuple[str, ...] = ("**",)
    exclude: tuple[str, ...] = ()
    output: str = "output"
    timeout: float | None = None  # None: the media type's default
    max_attempts: int = DEFAULT_ATTEMPTS
    max_output: int = DEFAULT_MAX_OUTPUT  # bytes one job may return
    target: float = DEFAULT_TARGET_S  # seconds a chunked job aims at
    extra: dict[str, Any] = field(default_factory=dict)
    # the media type's table as written, so an agent can run the plugin's own checks on it
    table: dict[str, Any] = field(default_factory=dict)
    notify: tuple[str, ...] = ()  # [notify] webhook: URLs told when a run ends (farm.notify)
    # what the renderer told `configure` (`MediaType.renderer_facts`), for a controller without it
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def file(self) -> Path:
        return self.root / PROJECT_FILE

    @property
    def output_dir(self) -> Path:
        return self.root / self.output

    def assets(self) -> Iterator[str]:
        """Relative POSIX paths of the project's source assets, sorted."""
        yield from list_assets(self.root, self.rules)

    @property
    def rules(self) -> AssetRules:
        """Which of the project's files reach the agents (``[assets]``, the output folder)."""
        return AssetRules(self.include, self.exclude, self.output)

    def identity(self) -> str:
        """Same folder, media type, settings and output: the same project (a re-submit resumes it)."""
        blob = json.dumps([str(self.root), self.media_type, self.settings, self.output], sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:20]

    def to_wire(self) -> dict[str, Any]:
        return {
            "root": str(self.root),
            "name": self.name,
            "media_type": self.media_type,
            "settings": self.settings,
            "include": list(self.include),
            "exclude": list(self.exclude),
            "output": self.output,
            "timeout": self.timeout,
            "max_attempts": self.max_attempts,
            "table": _plain(self.table),
            "max_output": self.max_output,
            "facts": self.facts,
            "target": self.target,
        }

    @classmethod
    def from_wire(cls, data: Any) -> Project:
        """A project as a controller described it. Raises `ProtocolError` naming the first bad field.

        Checks shapes and identifiers only; `reconfigure` runs the media type's own checks.
        """
        if not isinstance(data, dict):
            raise ProtocolError(f"a project must be a map, got {type(data).__name__}")
        for key, kind in _WIRE_FIELDS.items():
            value = data.get(key)
            if not isinstance(value, kind) or isinstance(value, bool):
                raise ProtocolError(f"project field {key!r} is missing or not {_kind_name(kind)}")
        try:
            name = check_name(data["name"], "project name")
            media_type = check_name(data["media_type"], "media type")
        except BadIdentifier as exc:
            raise ProtocolError(str(exc)) from None
        for key in ("include", "exclude"):
            if not all(isinstance(p, str) for p in data[key]):
                raise ProtocolError(f"project field {key!r} must be a list of strings")
            try:
                for pattern in data[key]:
                    check_pattern(pattern)
            except BadPattern as exc:
                raise ProtocolError(f"project field {key!r}: {exc}") from None
        return cls(
            root=Path(data["root"]),
            name=name,
            media_type=media_type,
            settings=data["settings"],
            include=tuple(data["include"]),
            exclude=tuple(data["exclude"]),
            output=data["output"],
            timeout=data["timeout"],
            max_attempts=data["max_attempts"],
            table=data.get("table") if isinstance(data.get("table"), dict) else {},
            max_output=data.get("max_output", DEFAULT_MAX_OUTPUT),
            facts=data.get("facts") if isinstance(data.get("facts"), dict) else {},
            target=_target(data.get("target", DEFAULT_TARGET_S)),
        )

    def reconfigure(self, root: Path) -> Project:
        """This project rooted at ``root`` (an agent's own copy), its settings made afresh by the
        media type's `configure` from the table as written: the plugin's own checks, run where
        the files are used. Raises `ProjectError` as `load_project` does.
        """
        from farm.plugins import get_media_type

        media = get_media_type(self.media_type)
        file = root / PROJECT_FILE
        reader = SettingsReader(self.table, table=media.name, file=file, text="", root=root)
        reader.output, reader.include, reader.exclude = self.output, self.include, self.exclude
        reader.max_output = self.max_output
        settings = _configure(media, reader, file)
        facts = _renderer_facts(media, settings, file)
        if self.facts:  # the controller split and collates by these: a renderer that disagrees cannot render
            for key in sorted(set(facts) | set(self.facts)):
                mine, theirs = facts.get(key), self.facts.get(key)
                if mine != theirs:
                    raise ProjectError(
                        f"the renderer here finds {media.name} fact {key!r} = {_short(mine)}, but the "
                        f"project was submitted with {_short(theirs)}: its files or the renderer differ from "
                        "the submitter's (or the submitter's facts are false); submit it again", file=file)
        return replace(self, root=root, settings=settings, facts=facts)


def _read_utf8(file: Path) -> str:
    """The file's text; TOML is UTF-8, and a byte that is not would end up in settings and
    outputs (an attribution, a title) as U+FFFD: refused with its line and column."""
    raw = file.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise ProjectError(f"not UTF-8: byte 0x{raw[exc.start]:02x} at column {column} (TOML files are "
                           "UTF-8: save it as UTF-8)", file=file, line=line) from None


def load_project(path: Path | str, *, output: str | None = None, renderer_checks: bool = True,
                 facts: Any = None) -> Project:
    """Read and validate ``path/farm.toml`` and the media type's own table.

    With ``renderer_checks`` False (the controller), the media type's `configure` skips what
    needs its renderer (`SettingsReader.renderer_checks`) and reads what only the renderer can
    tell from ``facts``: the map a submitter's load put in `Project.facts` (untrusted; the
    media type checks it). Raises `ProjectError` naming the file, line and key of the first problem.
    """
    from farm.plugins import get_media_type

    root = Path(path).resolve()
    file = root / PROJECT_FILE
    if root.is_file():  # `farm submit proj/farm.toml`: the folder was meant
        raise ProjectError(f"{path} is a file: give the project's folder (the one holding its {PROJECT_FILE})")
    if not root.is_dir():
        raise ProjectError(f"project folder {path} does not exist")
    if not file.is_file():
        raise ProjectError(f"no {PROJECT_FILE} in {root}: a project is a folder with a {PROJECT_FILE}", file=file)
    if not (facts is None or isinstance(facts, dict)):
        raise ProjectError("the renderer facts sent with the project must be a map, not "
                           f"{type(facts).__name__}", file=file)
    text = _read_utf8(file)
    data = parse_toml(text, file)

    def reader(table: str, required: bool = False) -> SettingsReader:
        value = data.get(table, {})
        if required and table not in data:
            raise ProjectError(f"missing [{table}] table", file=file)
        if not isinstance(value, dict):
            raise ProjectError(f"{table} must be a table", file=file, key=table, line=line_of(text, "", table))
        return SettingsReader(value, table=table, file=file, text=text, root=root,
                              renderer_checks=renderer_checks, facts=None if renderer_checks else facts)

    proj = reader("project", required=True)
    name = proj.str("name", None)
    what = "project name" if name is not None else "project name (the folder's name; set [project] name)"
    try:  # the name becomes part of folder names on every node: checked here, where it has a line
        name = check_name(root.name if name is None else name, what)
    except BadIdentifier as exc:
        raise proj.error("name", str(exc)) from None
    media_type = proj.str("media_type")
    proj.finish()

    assets = reader("assets")
    include = _patterns(assets, "include", ["**"])
    exclude = _patterns(assets, "exclude", [])
    assets.finish()

    out = reader("output")
    out_dir = out.str("directory", "output")
    out.finish()
    if output is not None:
        out_dir = output
    try:
        out_dir = safe_relpath(out_dir)
    except UnsafePath as exc:
        if output is not None:  # the caller's (`farm submit --output`), not farm.toml's
            raise ProjectError(f"--output {output!r}: {exc}") from None
        raise out.error("directory", str(exc)) from None

    jobs = reader("jobs")
    timeout = jobs.number("timeout", None, min=0.001)
    attempts = jobs.integer("max_attempts", DEFAULT_ATTEMPTS, min=1)
    max_output = jobs.number("max_output_mib", DEFAULT_MAX_OUTPUT_MIB, min=0.001, max=MAX_OUTPUT_MIB)
    target = jobs.number("target", DEFAULT_TARGET_S, min=0.1, max=MAX_TARGET_S)  # nan, inf: refused there
    jobs.finish()
    notify = _webhooks(reader("notify"))

    try:
        media = get_media_type(media_type)
    except UnknownMediaType as exc:
        raise UnknownMediaType(
            exc.message, file=file, key="[project] media_type", line=line_of(text, "project", "media_type")
        ) from None
    known = {"project", "assets", "output", "jobs", "notify", media.name}
    for table in data:
        if table not in known:
            raise ProjectError(
                f"unknown table (expected {', '.join(sorted(known))})",
                file=file, key=f"[{table}]", line=line_of(text, table),
            )
    table = reader(media.name)
    table.output, table.include, table.exclude = out_dir, tuple(include), tuple(exclude)
    table.max_output = int(max_output * 2**20)
    settings = _configure(media, table, file)
    return Project(
        root=root,
        name=name,
        media_type=media.name,
        settings=settings,
        include=tuple(include),
        exclude=tuple(exclude),
        output=out_dir,
        timeout=timeout,
        max_attempts=attempts,
        table=dict(table.values),
        max_output=int(max_output * 2**20),
        notify=notify,
        facts=_renderer_facts(media, settings, file),
        target=float(target),
    )


def _patterns(table: SettingsReader, key: str, default: list[str]) -> list[str]:
    """``[assets] include`` or ``exclude``: patterns `farm.assetrules.check_pattern` accepts."""
    patterns = table.str_list(key, default)
    try:
        for pattern in patterns:
            check_pattern(pattern)
    except BadPattern as exc:
        raise table.error(key, str(exc)) from None
    return patterns


def _webhooks(table: SettingsReader) -> tuple[str, ...]:
    """``[notify] webhook``: one URL or a list, each checked by `farm.notify.check_webhook`."""
    urls = table.str_list("webhook", [])
    table.finish()
    if len(urls) > MAX_HOOKS:
        raise table.error("webhook", f"{len(urls)} webhooks; at most {MAX_HOOKS}")
    try:
        return tuple(check_webhook(url) for url in urls)
    except BadWebhook as exc:
        raise table.error("webhook", str(exc)) from None


def _configure(media: Any, reader: SettingsReader, file: Path) -> dict[str, Any]:
    try:
        return media.configure(reader)
    except FarmError:
        raise
    except Exception as exc:  # a crashing plugin is reported, not propagated as a traceback
        place = raised_at(exc, media)
        raise ProjectError(f"media type {media.name!r} failed to read its settings: {exc!r}"
                           + (f" (at {place})" if place else ""), file=file) from exc


def _renderer_facts(media: Any, settings: dict[str, Any], file: Path) -> dict[str, Any]:
    """The media type's renderer facts, as they travel (msgpack: tuples become lists)."""
    try:
        facts = dict(media.renderer_facts(settings))
        return msgpack.unpackb(msgpack.packb(facts, use_bin_type=True), raw=False)
    except Exception as exc:
        raise ProjectError(f"media type {media.name!r} failed to give its renderer facts: {exc!r}",
                           file=file) from exc


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


_WIRE_FIELDS: dict[str, Any] = {
    "root": str, "name": str, "media_type": str, "settings": dict, "include": list, "exclude": list,
    "output": str, "timeout": (int, float, type(None)), "max_attempts": int,
}


def _target(value: Any) -> float:
    # "not a <= value <= b" refuses nan too
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.1 <= value <= MAX_TARGET_S:
        raise ProtocolError(f"project field 'target' must be seconds from 0.1 to {MAX_TARGET_S:g}")
    return float(value)


def _kind_name(kind: Any) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join("None" if k is type(None) else k.__name__ for k in kinds)


def _plain(value: Any) -> Any:
    """A TOML value as msgpack can carry it: dates and times become their TOML text."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    return value


def list_assets(root: Path, rules: AssetRules) -> Iterator[str]:
    """Relative POSIX paths of the files under ``root`` that ``rules`` send to the agents, sorted:
    those `AssetRules.left_out` keeps (folders it would leave out whole are not walked), less the
    files this process's own output goes into (`farm.ownoutput`). Raises `BadPattern` as it does."""
    own = output_files()
    found = []
    for folder, dirs, files in os.walk(root):
        rel_folder = os.path.relpath(folder, root).replace(os.sep, "/")
        rel_folder = "" if rel_folder == "." else rel_folder + "/"
        dirs[:] = sorted(d for d in dirs if not rules.folder_left_out(rel_folder + d))
        for name in files:
            rel = rel_folder + name
            if rules.left_out(rel) is None:
                if own and file_id(os.path.join(folder, name)) in own:
                    continue
                found.append(rel)
    yield from sorted(found)
