"""A worker whose agent offers a media type no plugin has (a typo in farm.toml's media_type:
the embedded farm starts its agents before the project is checked) starts no renderer and
logs nothing: the project's own error says what is wrong, once (with --json, as one object)."""

from __future__ import annotations

import logging

from farm.agent.capabilities import MEDIA_TYPES_ENV
from farm.agent.worker import prewarm


def test_prewarm_for_an_unknown_media_type_is_quiet(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv(MEDIA_TYPES_ENV, "maptile")  # the typo of the report: maptiles is installed
    with caplog.at_level(logging.DEBUG):
        prewarm(tmp_path)
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert list(tmp_path.iterdir()) == []  # nothing started, nothing written
