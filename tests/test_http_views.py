"""What the API says about runs and jobs, checked against a real controller and agents: queued jobs
and the ones not split off yet, a paused run, attempts as the job log numbers them, every field
documented, and JSON 404/405 for routes that do not exist or do not take the method."""

# ruff: noqa: F811  (pytest fixtures imported from the helpers are parameters of the tests)
from __future__ import annotations

import re
from pathlib import Path

from conftest import wait_for
from http_helpers import HttpFarm, Submitted, start_http_farm, web  # noqa: F401  (fixture)

DOC = Path(__file__).resolve().parent.parent / "docs" / "api-http.md"


def _run(web: HttpFarm, name: str) -> dict:
    def found() -> dict | None:
        runs = [p for p in web.get("/api/v1/projects").json()["projects"] if p["project"] == name]
        return runs[-1] if runs and runs[-1]["total"] else None
    return wait_for(found, 30, f"the {name} run")


def test_queued_jobs_are_listed_and_the_unsplit_ones_counted(web, synthetic):
    Submitted(web.controller.url, synthetic(jobs=500, name="waiting"))  # no agent: nothing runs
    run = _run(web, "waiting")
    assert run["total"] == 500
    every = web.get(f"/api/v1/projects/{run['id']}/jobs?limit=1000").json()
    queued = web.get(f"/api/v1/projects/{run['id']}/jobs?state=queued&limit=1000").json()
    for page in (every, queued):
        assert page["total"] + page["unlisted"] == 500, page  # the pager's total is the run's job count
        assert len(page["jobs"]) == page["total"]
        assert all(job["state"] == "queued" and job["attempts"] == 0 for job in page["jobs"])
    assert web.get(f"/api/v1/projects/{run['id']}/jobs?state=running").json()["total"] == 0


def test_a_paused_run_says_so_and_why_nothing_runs(web, synthetic):
    from farm.client import Client

    Submitted(web.controller.url, synthetic(jobs=5, name="held"))
    run = _run(web, "held")
    assert web.get(f"/api/v1/projects/{run['id']}").json()["stalled"] == "no agents connected yet"
    assert web.post(f"/api/v1/projects/{run['id']}/pause").status_code == 200
    for snap in (web.get(f"/api/v1/projects/{run['id']}").json(),
                 next(p for p in web.get("/api/v1/projects").json()["projects"] if p["id"] == run["id"])):
        assert (snap["state"], snap["paused"], snap["stalled"]) == ("running", True, "paused")
    with Client(web.controller.url) as client:
        snap = client.project(run["id"])
    assert (snap["state"], snap["paused"], snap["stalled"]) == ("running", True, "paused")
    web.post(f"/api/v1/projects/{run['id']}/resume")
    assert web.get(f"/api/v1/projects/{run['id']}").json()["stalled"] == "no agents connected yet"


def test_attempts_in_the_jobs_table_are_the_job_logs_numbers(web, agents, synthetic, tmp_path):
    agents(web.controller.url, 1, extra=["--cache-dir", str(tmp_path / "cache")])
    project = synthetic(jobs=3, fail=["job-0000001"], extra="[jobs]\nmax_attempts = 1\n", name="again")
    assert Submitted(web.controller.url, project).result().failed == 1
    run = _run(web, "again")["id"]
    for retry in (2, 3):  # each retry runs it once more; it fails again
        assert web.post(f"/api/v1/projects/{run}/retry").status_code == 200
        wait_for(lambda: web.get(f"/api/v1/projects/{run}").json()["state"] == "failed", 60, "the retry over")
        logged = web.get(f"/api/v1/projects/{run}/jobs/job-0000001/log").json()["attempts"]
        (row,) = web.get(f"/api/v1/projects/{run}/jobs?state=failed").json()["jobs"]
        assert logged[-1]["attempt"] == row["attempts"] == retry
    page = web.get(f"/api/v1/projects/{run}/jobs?state=done").json()
    done = {j["key"]: j["attempts"] for j in page["jobs"]}
    assert done == {"job-0000000": 1, "job-0000002": 1}


def _documented(fields: set[str]) -> set[str]:
    text = DOC.read_text()
    return {name for name in fields if not re.search(rf"`{re.escape(name)}`", text)}


def test_every_field_the_api_answers_is_documented(web, agents, synthetic, tmp_path):
    agents(web.controller.url, 1, extra=["--cache-dir", str(tmp_path / "cache")])
    summary = Submitted(web.controller.url, synthetic(jobs=4, fail=["job-0000001"], name="doc")).result()
    snap = web.get(f"/api/v1/projects/{summary.id}").json()
    assert snap["first_dispatch_s"] >= 0
    page = web.get(f"/api/v1/projects/{summary.id}/jobs").json()
    log = web.get(f"/api/v1/projects/{summary.id}/jobs/job-0000001/log").json()
    (agent,) = web.get("/api/v1/agents").json()["agents"]
    fields = {*snap, *snap["progress"], *snap["progress"]["jobs"], *(snap["units"] or {}), *page,
              *page["jobs"][0], *log, *log["attempts"][0], *agent}
    assert not _documented(fields), f"fields missing from docs/api-http.md: {sorted(_documented(fields))}"


def test_unknown_routes_are_404_and_wrong_methods_405_in_json(web):
    cases = [
        ("POST", "/api/v1/projects/x/frobnicate", 404, "no route"),
        ("GET", "/api/v1/no-such-thing", 404, "no route"),
        ("GET", "/api/v1/projects/x/pause", 405, "takes POST"),
        ("DELETE", "/api/v1/projects/x", 405, "GET, PATCH"),
        ("POST", "/metrics", 405, "takes GET"),
        ("PUT", "/api/v1/agents/a/drain", 405, "takes POST"),
    ]
    import requests

    # routing comes first: a request no route takes is 404 or 405 whatever its content type,
    # and the 415 is for a control route only (its handler never runs: the run does not exist)
    types = ({"Content-Type": "application/json"}, {}, {"Content-Type": "text/plain"})
    for method, path, status, said in [*cases, ("POST", "/api/v1/projects/x/pause", 415, "application/json")]:
        for headers in types[1:] if status == 415 else types:
            response = requests.request(method, web.base + path, data="{}", timeout=30,
                                        headers={**web.auth, **headers})
            assert response.status_code == status, (method, path, headers, response.text)
            assert response.headers["content-type"] == "application/json"
            assert said in response.json()["error"], (method, path, response.json())


def test_every_route_the_api_serves_is_in_the_docs_table(web):
    """The OpenAPI document lists the routes served; docs/api-http.md's table names each (method and
    path, any parameter names): a new route is not left to be found only in /openapi.json."""
    def shape(path: str) -> str:
        return re.sub(r"\{[^}]*\}", "{}", path.split("?")[0])

    table = {(m, shape(p)) for m, p in re.findall(r"^\| `([A-Z]+) (/[^`]*)`", DOC.read_text(), re.M)}
    paths = web.get("/api/v1/openapi.json").json()["paths"]
    served = {(method.upper(), shape(path)) for path, methods in paths.items()
              for method in methods if path.startswith("/api/")}
    assert served and not served - table, f"routes missing from docs/api-http.md: {sorted(served - table)}"
