"""The two sources over real HTTP on loopback: scraping vLLM /metrics (a stand-in serving the real
exposition text) and querying the Prometheus HTTP API (a stand-in replaying recorded API responses)."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest
from spd_testlib import FIXTURE_METRICS

from speculators_operator.metrics import prometheus, scraper


@contextmanager
def http_server(respond) -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, body = respond(self.path)
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _pod(name: str, ip: str, ready: bool = True, restarts: int = 0) -> dict:
    return {
        "metadata": {"name": name, "uid": f"uid-{name}"},
        "status": {
            "phase": "Running",
            "podIP": ip,
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
            "containerStatuses": [
                {
                    "name": "vllm",
                    "restartCount": restarts,
                    "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}},
                }
            ],
        },
    }


def test_targets_are_ready_pods_only():
    pods = [_pod("a", "127.0.0.5", restarts=2), _pod("b", "127.0.0.6", ready=False), _pod("c", "fd00::1")]
    pods[2]["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    (target,) = scraper.targets(pods, 8000)
    assert target.url == "http://127.0.0.5:8000/metrics" and target.instance == "uid-a/2"
    assert target.started_at == 1767225600.0


def test_scrape_vllm_stand_in_and_a_dead_pod():
    def vllm_stand_in(path: str):
        return (200, FIXTURE_METRICS.read_bytes()) if path == "/metrics" else (404, b"")

    with http_server(vllm_stand_in) as address:
        live = scraper.Target("live", f"http://{address}/metrics", "u/0", None)
        dead = scraper.Target("dead", "http://127.0.0.1:9/metrics", "d/0", None)  # nothing listens on port 9
        results = asyncio.run(scraper.scrape([live, dead], timeout=2))
    by_pod = {r.target.pod: r for r in results}
    assert by_pod["live"].counters.drafts == 1000.0 and by_pod["live"].error is None
    assert by_pod["dead"].counters is None and by_pod["dead"].error.startswith("dead:")


def test_prometheus_query_against_recorded_api_responses():
    recorded = {
        "drafts": "1000",
        "draft_tokens": "3000",
        "accepted": "1788",
        "pods": "2",
    }
    queries = prometheus.queries("team-a", "llama-vllm", 300)
    seen: list[str] = []

    def prometheus_stand_in(path: str):
        url = urlsplit(path)
        if url.path != "/api/v1/query":
            return 404, b""
        promql = parse_qs(url.query)["query"][0]
        seen.append(promql)
        key = next(k for k, q in queries.items() if q == promql)
        if key == "per_pos":
            result = [
                {"metric": {"position": str(i)}, "value": [0, v]} for i, v in enumerate(["796", "579", "413"])
            ]
        else:
            result = [{"metric": {}, "value": [0, recorded[key]]}]
        body = {"status": "success", "data": {"resultType": "vector", "result": result}}
        return 200, json.dumps(body).encode()

    with http_server(prometheus_stand_in) as address:
        counters, pods = asyncio.run(
            prometheus.query_acceptance(f"http://{address}", "team-a", "llama-vllm", 300)
        )
    assert sorted(seen) == sorted(queries.values())
    assert (counters.drafts, counters.draft_tokens, counters.accepted, pods) == (1000.0, 3000.0, 1788.0, 2)
    assert counters.per_pos == {0: 796.0, 1: 579.0, 2: 413.0}


def test_prometheus_errors_are_reported():
    def failing(path: str):
        return 400, json.dumps({"status": "error", "error": "parse error at char 5"}).encode()

    with http_server(failing) as address, pytest.raises(prometheus.PrometheusError, match="parse error"):
        asyncio.run(prometheus.query_acceptance(f"http://{address}", "ns", "x-vllm", 60))
