"""`farm controller` mints a join token only when asked, or beyond loopback before any key is allowed
(real processes): a token printed at every start would be a live credential for whoever reads the
terminal or the log file."""

from __future__ import annotations

from join_helpers import farm_processes

from farm.keys import KeyStore
from farm.tokens import TokenStore


def _tokens(keys) -> set[str]:
    return {t.id for t in TokenStore(KeyStore(keys)).all()}


def test_a_loopback_controller_makes_no_token_unasked_even_with_fresh_keys(tmp_path):
    with farm_processes(tmp_path) as farm:
        proc, _, join = farm.controller(invite=False)  # fresh keys, on 127.0.0.1
        assert join is None
        hint = proc.wait_line("to add a render node")
        assert "`farm keys invite`" in hint and "--invite" in hint and "farm agent" in hint
        assert "--join" not in proc.text()
        assert _tokens(tmp_path / "ctl") == set()


def test_a_controller_start_makes_a_token_only_when_asked_or_before_any_key_is_allowed(tmp_path):
    KeyStore(tmp_path / "ctl").create("controller")  # beyond loopback it needs keys: made beforehand
    with farm_processes(tmp_path) as farm:
        first, _, join = farm.controller("--no-announce", bind="tcp://0.0.0.0:0", invite=False)
        assert join is not None  # beyond loopback with fresh keys: the documented first command
        first.stop()
        ctl = KeyStore(tmp_path / "ctl")
        ctl.allow(KeyStore(tmp_path / "n1").create("node").public.decode(), name="n1")
        before = _tokens(ctl.root)

        quiet = farm.start("quiet", "controller", "--bind", "tcp://0.0.0.0:0", "--no-announce", "--keys-dir",
                           str(ctl.root), "--state-dir", str(tmp_path / "state-q"))
        quiet.wait_line("to add a render node: `farm keys invite`")
        assert "farm agent --join" not in quiet.text()
        assert _tokens(ctl.root) == before
        quiet.stop()

        asked = farm.start("asked", "controller", "--bind", "tcp://127.0.0.1:0", "--keys-dir", str(ctl.root),
                           "--state-dir", str(tmp_path / "state-a"), "--invite")
        asked.wait_line("farm agent --join ")
        assert len(_tokens(ctl.root) - before) == 1
