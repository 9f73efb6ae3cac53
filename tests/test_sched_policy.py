"""The scheduler's blame and blocklist rules (farm.controller.policy), without sockets."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from farm.controller.policy import BLOCKLIST_AFTER, HANDBACK_ALLOWANCE, Conduct, cannot_arrive
from farm.controller.registry import AgentState, Registry


def agent(agent_id: str, *, caps: tuple[str, ...] = ("synthetic",), broken: str | None = None) -> AgentState:
    return AgentState(identity=agent_id.encode(), id=agent_id, host="h", slots=1, prefetch=0, caps=set(caps),
                      missing={}, broken=broken)


RUN = SimpleNamespace(media=SimpleNamespace(name="synthetic", requirements=()))


def test_a_job_that_fails_everywhere_costs_no_agent_a_strike():
    conduct = Conduct()
    for key in ("bad-1", "bad-2", "bad-3", "bad-4"):
        for who in ("a", "b", "a"):
            conduct.failed(key, who)
        conduct.failed_for_good(key)
    assert not conduct.strikes and not conduct.blocklist and not conduct.avoid


def test_failures_count_against_an_agent_once_the_job_succeeds_elsewhere():
    conduct = Conduct()
    for i in range(BLOCKLIST_AFTER):
        conduct.failed(f"j{i}", "a")
        assert conduct.succeeded(f"j{i}", "b") == ([] if i < BLOCKLIST_AFTER - 1 else ["a"])
    assert "a" in conduct.blocklist and "b" not in conduct.blocklist


def test_a_flaky_job_that_succeeds_on_the_same_agent_is_no_strike():
    conduct = Conduct()
    conduct.failed("j", "a")
    conduct.failed("j", "a")
    assert conduct.succeeded("j", "a") == [] and not conduct.strikes


def test_hand_backs_count_against_the_agent_beyond_its_allowance():
    conduct = Conduct()
    reasons = [conduct.handed_back(f"j{i}", "saboteur") for i in range(HANDBACK_ALLOWANCE + 1)]
    assert reasons[:-1] == [None] * HANDBACK_ALLOWANCE and "handed back" in reasons[-1]
    assert "saboteur" in conduct.blocklist


def test_an_agent_that_completes_work_may_hand_some_back():
    conduct = Conduct()
    for i in range(100):
        conduct.succeeded(f"done{i}", "honest")
    # e.g. a worker died with a batch queued behind its job
    assert all(conduct.handed_back(f"j{i}", "honest") is None for i in range(50))
    assert not conduct.blocklist


@pytest.mark.parametrize("how", ["failed", "lost", "handed_back"])
def test_a_job_goes_elsewhere_while_an_agent_that_has_not_had_it_exists(how):
    conduct = Conduct()
    getattr(conduct, how)("j", "a")
    assert conduct.skip("j", "a", eligible=2) and not conduct.skip("j", "b", eligible=2)
    assert not conduct.skip("j", "a", eligible=1)  # nobody else: it may come back
    getattr(conduct, how)("j", "b")
    assert not conduct.skip("j", "a", eligible=2)  # both had it


def test_lifting_gives_a_clean_record():
    conduct = Conduct()
    for i in range(HANDBACK_ALLOWANCE + 1):
        conduct.handed_back(f"j{i}", "a")
    conduct.lift(["a"])
    assert not conduct.blocklist and conduct.handed_back("k", "a") is None


def test_an_open_farm_waits_for_agents_a_closed_one_does_not():
    assert cannot_arrive(RUN, [], "no agents connected yet", None) is None
    assert cannot_arrive(RUN, [], "no agents connected yet", [None, None]) is None  # still starting
    assert "exit codes: 1, -9" in cannot_arrive(RUN, [], "no agents connected yet", [1, -9])
    lacking = [agent("a", caps=())]
    assert cannot_arrive(RUN, lacking, "a lacks it", None) is None
    assert cannot_arrive(RUN, lacking, "a lacks it", [None]) == "a lacks it"
    assert cannot_arrive(RUN, lacking, "a lacks it", [None, None]) is None  # one more may come


def test_broken_agents_fail_a_run_on_any_farm_unless_an_able_one_is_healthy():
    broken = [agent("a", broken="workers die"), agent("b", broken="workers die too")]
    verdict = cannot_arrive(RUN, broken, "stalled", None)
    assert "a: workers die" in verdict and "b: workers die too" in verdict
    assert cannot_arrive(RUN, [*broken, agent("c")], "stalled", None) is None


def test_registry_gives_a_second_claimant_a_free_id():
    registry = Registry()
    for name in ("render01", "render01-2"):
        registry.add(agent(name))
    assert registry.free_id("render01") == "render01-3" and registry.free_id("other") == "other"
    assert registry.by_id("render01-2").id == "render01-2" and registry.by_id("nope") is None
