"""`farm controller` mints a join token only when asked or while no key is allowed (real processes)."""

from __future__ import annotations

from join_helpers import farm_processes

from farm.keys import KeyStore
from farm.tokens import TokenStore


def test_a_controller_start_makes_a_token_only_when_asked_or_before_any_key_is_allowed(tmp_path):
    with farm_processes(tmp_path) as farm:
        first, _, _ = farm.controller()  # fresh keys: prints a join command (the helper waits for it)
        first.stop()
        ctl = KeyStore(tmp_path / "ctl")
        ctl.allow(KeyStore(tmp_path / "n1").create("node").public.decode(), name="n1")
        before = {t.id for t in TokenStore(ctl).all()}

        quiet = farm.start("quiet", "controller", "--bind", "tcp://127.0.0.1:0", "--keys-dir", str(ctl.root),
                           "--state-dir", str(tmp_path / "state-q"))
        quiet.wait_line("to add a render node: `farm keys invite`")
        assert "farm agent --join" not in quiet.text()
        assert {t.id for t in TokenStore(ctl).all()} == before
        quiet.stop()

        asked = farm.start("asked", "controller", "--bind", "tcp://127.0.0.1:0", "--keys-dir", str(ctl.root),
                           "--state-dir", str(tmp_path / "state-a"), "--invite")
        asked.wait_line("farm agent --join ")
        assert len({t.id for t in TokenStore(ctl).all()} - before) == 1
