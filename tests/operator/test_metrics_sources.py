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


def _prometheus_stand_in(series: dict[str, dict[str, float]], seen: list[str]):
    """Answers fleet_queries from per-pod counter increases: {pod: {drafts, draft_tokens, accepted,
    pos0, pos1, ...}} (a stand-in for Prometheus' HTTP API, in its response format)."""

    def respond(path: str):
        url = urlsplit(path)
        if url.path != "/api/v1/query":
            return 404, b""
        promql = parse_qs(url.query)["query"][0]
        seen.append(promql)
        result = []
        for pod, values in series.items():
            if "by (pod, position)" in promql:
                result += [
                    {"metric": {"pod": pod, "position": k[3:]}, "value": [0, str(v)]}
                    for k, v in values.items()
                    if k.startswith("pos")
                ]
            else:
                key = next(k for k in ("draft_tokens", "accepted", "drafts") if k in promql)
                result.append({"metric": {"pod": pod}, "value": [0, str(values[key])]})
        body = {"status": "success", "data": {"resultType": "vector", "result": result}}
        return 200, json.dumps(body).encode()

    return respond


KEYS = ("drafts", "draft_tokens", "accepted", "pos0", "pos1", "pos2")
POD_SERIES = {
    pod: dict(zip(KEYS, values, strict=False))
    for pod, values in {
        "llama-vllm-5d8f7c9b4-x2k9q": (600, 1800, 1000, 500, 300, 200),
        "llama-vllm-5d8f7c9b4-b7w2m": (400, 1200, 788, 296, 279, 213),
        "llama-vllm-canary-7c9b4d8f5-bz42c": (100, 300, 250, 95, 85, 70),
        "other-app-7c9b4d8f5-zz9zz": (5, 15, 1, 1),
    }.items()
}


def test_prometheus_namespace_round_splits_the_fleet_by_deployment():
    seen: list[str] = []
    with http_server(_prometheus_stand_in(POD_SERIES, seen)) as address:
        found = asyncio.run(prometheus.query_namespace(f"http://{address}", "team-a", 300))
    assert sorted(seen) == sorted(prometheus.fleet_queries("team-a", 300).values())
    assert all('namespace="team-a"' in q and "[300s]" in q for q in seen)
    stable, pods = found["llama-vllm"]
    assert (stable.drafts, stable.draft_tokens, stable.accepted, pods) == (1000.0, 3000.0, 1788.0, 2)
    assert stable.per_pos == {0: 796.0, 1: 579.0, 2: 413.0}
    canary, canary_pods = found["llama-vllm-canary"]  # a Deployment of its own, never the stable one's
    assert (canary.drafts, canary_pods) == (100.0, 1)
    assert set(found) == {"llama-vllm", "llama-vllm-canary", "other-app"}


def test_pods_map_to_their_deployment_only():
    assert prometheus.deployment_of("chat-vllm-5d8f7c9b4-x2k9q") == "chat-vllm"
    assert prometheus.deployment_of("chat-vllm-canary-7c9b4d8f5-bz42c") == "chat-vllm-canary"
    assert prometheus.deployment_of("chat-vllm-0") is None  # a StatefulSet's pod
    assert prometheus.deployment_of("standalone") is None


def test_one_round_of_queries_answers_every_speculator_in_a_namespace():
    """A fleet on one Prometheus: a round of four queries per (namespace, window, interval) group serves
    all its Speculators due (their numbers split by Deployment), one that comes due seconds later reuses
    the answer, and nobody is asked again before the interval is up."""
    from spd_testlib import speculator

    from speculators_operator.handlers.loops import MetricsLoop
    from speculators_operator.handlers.registry import Registry
    from speculators_operator.metrics.store import MetricsStore, canary_key

    class Runner:
        def __init__(self) -> None:
            self.triggered: list[tuple[str, str, str]] = []

        def trigger(self, key: tuple[str, str, str]) -> None:
            self.triggered.append(key)

    seen: list[str] = []
    with http_server(_prometheus_stand_in(POD_SERIES, seen)) as address:
        metrics = {"source": "prometheus", "prometheusUrl": f"http://{address}", "windowSeconds": 300}
        registry = Registry()
        for name, extra in (("llama", {}), ("quiet", {}), ("short", {"windowSeconds": 60})):
            body = speculator(name, metrics={**metrics, **extra})
            body["metadata"]["namespace"] = "team-a"
            if name == "llama":
                body["status"] = {"canary": {"phase": "Running"}}
            registry.upsert("Speculator", body)
        store, runner = MetricsStore(), Runner()
        loop = MetricsLoop(registry, store, None, runner)  # type: ignore[arg-type]

        async def ticks() -> None:
            await loop._tick()
            await asyncio.gather(*list(loop._tasks))
            await loop._tick()  # nobody is due again yet
            await asyncio.gather(*list(loop._tasks))
            # A Speculator that comes due just after its group's round takes that round's answer.
            late = speculator("late", metrics=metrics)
            late["metadata"]["namespace"] = "team-a"
            registry.upsert("Speculator", late)
            await loop._tick()
            await asyncio.gather(*list(loop._tasks))

        asyncio.run(ticks())
    assert len(seen) == 8  # two groups (windows 300 s and 60 s), four queries each, one round
    assert store.get(("team-a", "late")) is not None
    llama = store.get(("team-a", "llama"))
    assert llama is not None and llama.summary["drafts"] == 1000 and llama.summary["pods"] == 2
    assert llama.summary["meanAcceptanceLength"] == pytest.approx(2.788)
    canary = store.get(canary_key(("team-a", "llama")))
    assert canary is not None and canary.summary["drafts"] == 100
    quiet = store.get(("team-a", "quiet"))
    assert quiet is not None and quiet.summary["drafts"] == 0 and quiet.summary["pods"] == 0
    assert store.get(("team-a", "short")).summary["windowSeconds"] == 60


def test_prometheus_errors_are_reported():
    def failing(path: str):
        return 400, json.dumps({"status": "error", "error": "parse error at char 5"}).encode()

    with http_server(failing) as address, pytest.raises(prometheus.PrometheusError, match="parse error"):
        asyncio.run(prometheus.query_namespace(f"http://{address}", "ns", 60))
