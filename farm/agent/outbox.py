"""The agent's results on their way to the controller: checked, batched into RESULTS messages, sent.

A worker's W_RESULTS message without output files, whose leases are the first its slot was
running, goes on as one RESULTS message whose body is the bytes the worker packed for it (a
`Forwarded`, `farm.agent.wresults`): the agent reads only the leases listed beside them, to free
its slots, and neither decodes the results nor builds a `JobResult` per job nor encodes them again;
the controller checks them as it checks every RESULTS message. Anything else, and any result of a
placed project whose files changed while it ran (`Agent._check_placed`: those bytes are decoded
and checked then), travels as `JobResult`s, batched as before.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from farm.agent.wresults import read
from farm.errors import ProtocolError
from farm.protocol import MAX_FRAMES, MAX_MESSAGE, JobResult, T, pack, pack_body

MAX_RESULTS_PER_MESSAGE = 512
MAX_PAYLOAD_PER_MESSAGE = MAX_MESSAGE  # what the controller takes in one message


class Forwarded(NamedTuple):
    """A worker's results message, sent on unchanged (no output files)."""

    body: bytes  # the RESULTS body the worker packed: {"results": [RESULT_ROW array, ...]}, not decoded here
    leases: list[str]  # each result's lease, as the worker listed them beside it
    projects: list[str]  # each result's project (run id)


#: what waits to go: a result and its output bytes, or a forwarded message (no files)
Outgoing = tuple[JobResult | Forwarded, list[bytes]]


def checked(unchecked: list[tuple[JobResult | Forwarded, list[bytes], str]],
            changed: Callable[[str], str | None],
            stale: dict[str, str] | None = None) -> tuple[list[Outgoing], dict[str, str | None]]:
    """Results of placed projects, in order, each failed if its project's files changed while it ran
    (`changed(project)`: why, or None; asked once per project) or if its lease is in `stale` (lease ->
    why: it was running on files found edited before; taken out of `stale` as it comes); and what
    each project answered."""
    projects: set[str] = set()
    for item, _, project in unchecked:
        projects.update(item.projects) if item.__class__ is Forwarded else projects.add(project)
    moved = {project: changed(project) for project in projects}
    if not any(moved.values()) and not stale:  # the common answer: every result goes as it is
        return [(item, files) for item, files, _ in unchecked], moved
    stale = {} if stale is None else stale
    out: list[Outgoing] = []
    for item, files, project in unchecked:
        if item.__class__ is Forwarded:
            if not any(map(moved.__getitem__, item.projects)) and stale.keys().isdisjoint(item.leases):
                out.append((item, []))
                continue
            pairs = _decoded(item)
        else:
            pairs = [(item, files, project)]
        for result, result_files, result_project in pairs:
            why = stale.pop(result.lease, None) or moved[result_project]
            if why is not None:  # the result may be wrong
                result, result_files = JobResult(result.lease, False, error=why, log=result.log,
                                                 duration=result.duration), []
            out.append((result, result_files))
    return out, moved


def stale_leases(slots: Iterable[Any], project: str, why: str) -> dict[str, str]:
    """The leases of ``project``'s jobs in these worker slots (running, or waiting in the worker's
    socket) when its placed files were found edited: they may read the edited files, whenever their
    results come (the project's view is gone by then), so they fail with ``why`` (`checked`)."""
    return {job.lease: why for slot in slots for job in slot.running if job.project == project}


def _decoded(item: Forwarded) -> list[tuple[JobResult, list[bytes], str]]:
    """A forwarded message's results, decoded and checked now; a worker's message that is not what it
    says fails each of its jobs, saying why (the controller would have dropped it)."""
    try:
        wires = read({"results": item.body, "leases": item.leases})
    except ProtocolError as exc:
        return [(JobResult(lease, False, error=f"its worker's results could not be read: {exc}"), [], p)
                for lease, p in zip(item.leases, item.projects, strict=True)]
    return [(JobResult.from_wire(wire), [], p) for wire, p in zip(wires, item.projects, strict=True)]


def flush(outgoing: list[Outgoing], send: Callable[[list[bytes]], bool]) -> None:
    """Send what waits, in order, as RESULTS messages (`send(frames)`: False if it could not go:
    what is left stays in `outgoing` for the next try)."""
    while outgoing:
        first = outgoing[0][0]
        if first.__class__ is Forwarded:
            if not send(pack_body(T.RESULTS, first.body)):
                return
            outgoing.pop(0)
            continue
        batch, payloads, size = [], [], 0
        while outgoing and len(batch) < MAX_RESULTS_PER_MESSAGE and outgoing[0][0].__class__ is not Forwarded:
            result, files = outgoing[0]
            if batch and (size + sum(map(len, files)) > MAX_PAYLOAD_PER_MESSAGE
                          or len(payloads) + len(files) > MAX_FRAMES - 4):
                break
            outgoing.pop(0)
            batch.append(result)
            payloads.extend(files)
            size += sum(map(len, files))
        if not send(pack(T.RESULTS, {"results": [r.to_wire() for r in batch]}, payloads)):
            outgoing[:0] = list(zip(batch, _split_payloads(batch, payloads), strict=True))
            return


def _split_payloads(results: list[JobResult], payloads: list[bytes]) -> list[list[bytes]]:
    out, offset = [], 0
    for result in results:
        n = len(result.files)
        out.append(payloads[offset:offset + n])
        offset += n
    return out
