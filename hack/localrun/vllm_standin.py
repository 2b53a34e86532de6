"""A stand-in for running vLLM servers' /metrics (no GPU here, so no vLLM), speculation-aware.

It serves Prometheus exposition text in exactly the shape of vLLM 0.33's `SpecDecodingProm` and its
latency histogram (the names, labels, `_created` gauges and unrelated series of
tests/fixtures/vllm_spec_decode_metrics.txt), with counters that grow on every scrape as a server would
that drafts the k its own command line says:

- per-position acceptance follows the scenario's conditional rates q_i: p_i = q_0 ... q_i, for i < k;
- every verifier step takes a * (1 + c * k) seconds, which vLLM's `inter_token_latency_seconds`
  histogram records once per request and step;
- `num_requests_running` is the scenario's load, and with a batch-size schedule (vLLM's
  num_speculative_tokens_per_batch_size) the k of that load's range applies — so speculation can be made
  not to pay at high load (`high_load_cost_ratio`).

`Fleet` follows the pods of a Speculator and serves each Running pod on its own IP (kwok gives pods
loopback IPs), so a rollout to a new k is seen as new pods with new counters, as on a real cluster.

Acceptance can depend on the draft a pod serves (`by_draft`: a substring of its draft's location in the pod
spec -> conditional rates) and on the traffic (tests change `conditional` while it runs: the traffic
drifted), so a retrained draft can be made better or worse than the one it replaces.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PREFIX = "vllm:spec_decode_num_"
ITL = "vllm:inter_token_latency_seconds"


@dataclass
class Scenario:
    """What the simulated traffic and hardware are like (tests may change fields while it runs)."""

    conditional: list[float]  # q_i: acceptance of position i given all before it were accepted
    step_seconds: float = 0.02  # a: one verifier step without drafting
    cost_ratio: float = 0.05  # c: one draft pass relative to a verifier step
    running: float = 4.0  # requests in the running batch
    drafts_per_scrape: int = 400
    high_load: int | None = None  # from this running batch size on, drafting costs high_load_cost_ratio
    high_load_cost_ratio: float = 1.0
    by_draft: dict[str, list[float]] = field(default_factory=dict)  # draft location substring -> q_i

    def conditional_for(self, draft: str) -> list[float]:
        for key, rates in self.by_draft.items():
            if key in draft:
                return rates
        return self.conditional

    def per_position(self, k: int, draft: str = "") -> list[float]:
        conditional = self.conditional_for(draft)
        out, run = [], 1.0
        for i in range(k):
            run *= conditional[i] if i < len(conditional) else conditional[-1]
            out.append(run)
        return out

    def step_time(self, k: int) -> float:
        c = self.cost_ratio
        if self.high_load is not None and self.running >= self.high_load:
            c = self.high_load_cost_ratio
        return self.step_seconds * (1.0 + c * k)


def plan_of(argv: list[str]) -> int | list[list[int]]:
    """The k (or the batch-size schedule) of a vLLM command line."""
    config = json.loads(argv[argv.index("--speculative-config") + 1])
    return config.get("num_speculative_tokens_per_batch_size") or int(config["num_speculative_tokens"])


def draft_of(pod_spec: dict[str, Any]) -> str:
    """Where a vLLM pod's draft comes from, as its spec says (the draft-fetching init container's arguments
    and the speculative config's model path)."""
    parts = [
        json.dumps(c.get("args") or []) for c in pod_spec.get("initContainers") or [] if "draft" in c["name"]
    ]
    argv = pod_spec["containers"][0].get("args") or []
    if "--speculative-config" in argv:
        parts.append(json.loads(argv[argv.index("--speculative-config") + 1]).get("model", ""))
    return " ".join(parts)


def k_at(plan: int | list[list[int]], running: float) -> int:
    if isinstance(plan, int):
        return plan
    size, k = max(1, round(running)), plan[0][2]
    for lo, _, value in sorted(plan):
        if size >= lo:
            k = value
    return k


class Server:
    """The counters of one vLLM server (one pod)."""

    def __init__(
        self, scenario: Scenario, plan: int | list[list[int]], model_name: str, draft: str = ""
    ) -> None:
        self.scenario = scenario
        self.plan = plan
        self.draft = draft
        self.model_name = model_name
        self.created = time.time()
        self.drafts = 0.0
        self.draft_tokens = 0.0
        self.itl_sum = 0.0
        self.itl_count = 0.0
        self.accepted: dict[int, float] = {}
        self.scrapes = 0
        self.lock = threading.Lock()

    def advance(self) -> None:
        with self.lock:
            s = self.scenario
            k = k_at(self.plan, s.running)
            n = s.drafts_per_scrape
            self.itl_sum += n * s.step_time(k)
            self.itl_count += n
            if k > 0:
                self.drafts += n
                self.draft_tokens += n * k
                for i, p in enumerate(s.per_position(k, self.draft)):
                    self.accepted[i] = self.accepted.get(i, 0.0) + round(n * p)
            self.scrapes += 1

    def exposition(self) -> str:
        labels = f'engine="0",model_name="{self.model_name}"'
        top = self.plan if isinstance(self.plan, int) else max(k for _, _, k in self.plan)
        lines = [
            "# HELP vllm:num_requests_running Number of requests in model execution batches.",
            "# TYPE vllm:num_requests_running gauge",
            f"vllm:num_requests_running{{{labels}}} {float(self.scenario.running)}",
            f"# TYPE {ITL} histogram",
            f'{ITL}_bucket{{{labels},le="+Inf"}} {self.itl_count}',
            f"{ITL}_count{{{labels}}} {self.itl_count}",
            f"{ITL}_sum{{{labels}}} {self.itl_sum}",
            f"{ITL}_created{{{labels}}} {self.created}",
        ]
        totals = {
            "drafts": self.drafts,
            "draft_tokens": self.draft_tokens,
            "accepted_tokens": sum(self.accepted.values()),
        }
        for name, value in totals.items():
            lines += [
                f"# TYPE {PREFIX}{name}_total counter",
                f"{PREFIX}{name}_total{{{labels}}} {float(value)}",
                f"# TYPE {PREFIX}{name}_created gauge",
                f"{PREFIX}{name}_created{{{labels}}} {self.created}",
            ]
        lines.append(f"# TYPE {PREFIX}accepted_tokens_per_pos_total counter")
        for i in range(max(top, 0)):
            value = self.accepted.get(i, 0.0)
            lines.append(f'{PREFIX}accepted_tokens_per_pos_total{{{labels},position="{i}"}} {float(value)}')
        return "\n".join(lines) + "\n"


def serve_server(host: str, port: int, server: Server) -> ThreadingHTTPServer:
    """Serve /metrics (and the probes' paths) for one Server on host:port, in a daemon thread."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/metrics":
                server.advance()
                body = server.exposition().encode()
            elif self.path in ("/health", "/v1/models"):
                body = b'{"object": "list", "data": []}'
            else:
                self.send_response(404)
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    http = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    return http


@dataclass
class Fleet:
    """A Server per Running vLLM pod, started as pods appear and stopped as they go."""

    list_pods: Callable[[], list[dict[str, Any]]]
    scenario: Scenario
    port: int
    model_name: str = "model"
    servers: dict[str, tuple[Server, ThreadingHTTPServer]] = field(default_factory=dict)

    def sync(self) -> None:
        live = {}
        for pod in self.list_pods():
            status = pod.get("status") or {}
            if (
                status.get("phase") != "Running"
                or not status.get("podIP")
                or pod["metadata"].get("deletionTimestamp")
            ):
                continue
            argv = pod["spec"]["containers"][0].get("args") or []
            live[pod["metadata"]["uid"]] = (status["podIP"], plan_of(argv), draft_of(pod["spec"]))
        for uid in set(self.servers) - set(live):
            _, http = self.servers.pop(uid)
            http.shutdown()
            http.server_close()
        for uid, (ip, plan, draft) in live.items():
            if uid not in self.servers:
                server = Server(self.scenario, plan, self.model_name, draft)
                self.servers[uid] = (server, serve_server(ip, self.port, server))

    def run(self, stop: threading.Event, every: float = 0.5) -> None:
        while not stop.wait(every):
            try:
                self.sync()
            except Exception:  # an API hiccup: try again next round
                continue

    def close(self) -> None:
        for _, http in self.servers.values():
            http.shutdown()
            http.server_close()
        self.servers.clear()
