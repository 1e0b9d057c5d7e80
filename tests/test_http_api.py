"""`rankitect serve --http-port`: the JSON API (launcher/web) over a real server on 127.0.0.1.

Real parts: the gRPC server and its HTTP port in this process, real SQLite, a real search job
on the session's Ray; HTTP through urllib, as curl would call it.
"""

from __future__ import annotations

import hashlib
import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from launcher.cli import main
from launcher.rpc.auth import TokenTable
from launcher.rpc.client import RankitectClient
from tests.conftest import wait_until
from tests.helpers import tiny_synth
from tests.rpc_helpers import GOOD_TOKEN, OTHER_TOKEN, running_server, write_token_file
from tests.test_job_faults import gated  # noqa: F401,F811 (the trial gate, seen by the server's drivers)
from tests.test_rpc_search import search_config, state


def call(url: str, token: str | None = None, method: str = "GET", headers: dict | None = None) -> tuple[int, dict, bytes]:
    """(status, headers, body) of one request; refusals included."""
    request = urllib.request.Request(url, method=method, headers=dict(headers or {}),
                                     data=b"{}" if method == "POST" else None)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return reply.status, dict(reply.headers), reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def get_json(url: str, token: str | None = GOOD_TOKEN, **kw) -> tuple[int, dict]:
    status, _, body = call(url, token, **kw)
    return status, json.loads(body)


@pytest.fixture(scope="module")
def served(ray_cluster, tmp_path_factory):
    root = tmp_path_factory.mktemp("allowed")
    tiny_synth(root / "ds", days=3, rows_per_day=1200)
    tokens = TokenTable.load(write_token_file(tmp_path_factory.mktemp("tokens") / "tokens"))
    with running_server(tokens=tokens, allow_roots=(root.resolve(),), ray_address=ray_cluster, http_port=0,
                        runs_dir=tmp_path_factory.mktemp("serve") / "runs", max_jobs=1, max_queued=4) as server:
        yield server, root / "ds"


def test_the_json_api_follows_a_job_to_its_artifact_as_the_owner_only(served, gated, tmp_path) -> None:  # noqa: F811
    server, data = served
    api = f"{server.http.url}/api/jobs"
    with RankitectClient(server.address, token=GOOD_TOKEN, timeout=30) as alice:
        gated.hold(first=0, last=0)  # the first job holds the one slot, so the second stays QUEUED
        job, _ = alice.submit_search(search_config(data, trials=2, baselines=[]))
        queued, _ = alice.submit_search(search_config(data, trials=1, baselines=[], seed=3))
        gated.wait_started("trial 0")
        # Cancel is a POST with a JSON content type from no other origin.
        assert call(f"{api}/{queued.job_id}/cancel", GOOD_TOKEN)[0] == 405  # a GET
        status, refused = get_json(f"{api}/{queued.job_id}/cancel", method="POST",
                                   headers={"Content-Type": "text/plain"})
        assert status == 403 and "Content-Type: application/json" in refused["error"]["message"]
        status, refused = get_json(f"{api}/{queued.job_id}/cancel", method="POST",
                                   headers={"Content-Type": "application/json", "Origin": "https://evil.example"})
        assert status == 403 and "evil.example" in refused["error"]["message"]
        assert state(alice.get_job(queued.job_id)) == "QUEUED"  # neither refused POST cancelled it
        status, cancelled = get_json(f"{api}/{queued.job_id}/cancel", method="POST",
                                     headers={"Content-Type": "application/json"})
        assert status == 200 and cancelled["state"] == "JOB_STATE_CANCELLED"  # a queued job: at once
        gated.release()
        # The events, fetched in pages as a page following the job would: each number once.
        numbers: list[int] = []
        kinds: list[str] = []
        following, done = 1, False
        def page() -> bool:
            nonlocal following, done
            status, body = get_json(f"{api}/{job.job_id}/events?from_event={following}&limit=3")
            assert status == 200, body
            numbers.extend(int(e["number"]) for e in body["events"])
            kinds.extend(next(k for k in e if k in ("state", "trial", "best", "pareto", "progress", "log"))
                         for e in body["events"])
            following, done = body["next_event"], body["done"]
            return done
        wait_until(page, None, 300, "the job's end among its events")
        final = alice.get_job(job.job_id)
        assert numbers == list(range(1, final.last_event + 1))
        assert kinds.count("trial") == 2 and kinds[0] == "state"

        status, listing = get_json(api)
        assert status == 200 and {j["job_id"] for j in listing["jobs"]} == {job.job_id, queued.job_id}
        status, one = get_json(f"{api}/{job.job_id}")
        assert status == 200 and one["state"] == "JOB_STATE_SUCCEEDED" and one["owner"] == "alice"
        assert int(one["last_event"]) == final.last_event and one["progress"]["trials_done"] == 2
        status, running = get_json(f"{api}?state=SUCCEEDED")
        assert [j["job_id"] for j in running["jobs"]] == [job.job_id]
        status, result = get_json(f"{api}/{job.job_id}/result")
        assert status == 200
        assert [t["metrics"]["ne"] for t in result["trials"]] == \
            pytest.approx([t.metrics.ne for t in alice.get_result(job.job_id).trials])

        status, headers, blob = call(f"{api}/{job.job_id}/artifact", GOOD_TOKEN)
        info = alice.download_artifact(job.job_id, tmp_path / "model.tar.gz")
        assert status == 200 and headers["Content-Type"] == "application/gzip"
        assert hashlib.sha256(blob).hexdigest() == headers["X-Sha256"] == info.sha256
        assert blob == (tmp_path / "model.tar.gz").read_bytes()


    # Another owner: the job is 404 with the very message of a missing id; the list is theirs (empty).
    status, theirs = get_json(f"{api}/{job.job_id}", OTHER_TOKEN)
    status_missing, missing = get_json(f"{api}/job-999999", OTHER_TOKEN)
    assert status == status_missing == 404
    assert theirs["error"]["message"].replace(job.job_id, "ID") == missing["error"]["message"].replace("job-999999", "ID")
    assert get_json(api, OTHER_TOKEN) == (200, {})
    assert get_json(f"{api}/{job.job_id}/artifact", OTHER_TOKEN)[0] == 404


@pytest.mark.parametrize("token", [None, "not-a-token-of-this-server"])
def test_no_route_answers_without_a_valid_token(served, token) -> None:
    server, _ = served
    for path, method in [("/api/jobs", "GET"), ("/api/jobs/job-000001", "GET"), ("/api/jobs/job-000001/events", "GET"),
                         ("/api/jobs/job-000001/cancel", "POST"), ("/nowhere", "GET")]:
        status, headers, body = call(f"{server.http.url}{path}", token, method=method,
                                     headers={"Content-Type": "application/json"})
        assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer"), (path, status)
        assert json.loads(body)["error"]["code"] == "UNAUTHENTICATED"
        assert b"job-" not in body


def test_bad_queries_name_the_parameter(served) -> None:
    api = f"{served[0].http.url}/api/jobs"
    status, body = get_json(f"{api}?state=BOGUS")
    assert status == 400 and body["error"]["message"].startswith("state[0]: not a job state: 'BOGUS'")
    status, body = get_json(f"{api}/job-000001/events?from_event=abc")
    assert status == 400 and body["error"]["message"].startswith("from_event: must be an integer >= 1")
    status, body = get_json(f"{api}?page_token=xyz")
    assert status == 400 and body["error"]["message"].startswith("page_token:")
    assert get_json(f"{served[0].http.url}/api/elsewhere")[0] == 404
    assert get_json(api, method="POST", headers={"Content-Type": "application/json"})[0] == 405


@pytest.mark.parametrize("args, message", [
    (["--http-port", "70000"], "--http-port 70000: must be in 0..65535"),
    (["--port", "50123", "--http-port", "50123"], "--http-port 50123: is --port too"),
])
def test_serve_refuses_a_bad_http_port(args, message, tmp_path: Path, capsys) -> None:
    assert main(["serve", "--runs-dir", str(tmp_path / "runs"), *args]) == 2
    assert message in capsys.readouterr().err
