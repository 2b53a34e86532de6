"""A stand-in for a running vLLM server's /metrics (no GPU here, so no vLLM).

It serves Prometheus exposition text in exactly the shape of vLLM 0.33's `SpecDecodingProm` (the names,
labels, `_created` gauges and unrelated series of tests/fixtures/vllm_spec_decode_metrics.txt), with
counters that grow on every scrape at the per-position acceptance rates it is given — for the demo, the
rates the offline evaluation measured for the trained draft.
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PREFIX = "vllm:spec_decode_num_"


class Counters:
    def __init__(self, per_position: list[float], drafts_per_scrape: int = 200) -> None:
        self.per_position = per_position
        self.step = drafts_per_scrape
        self.created = time.time()
        self.drafts = 0
        self.accepted_per_pos = [0] * len(per_position)
        self.lock = threading.Lock()

    def advance(self) -> None:
        with self.lock:
            self.drafts += self.step
            for i, rate in enumerate(self.per_position):
                self.accepted_per_pos[i] += round(self.step * rate)

    def exposition(self, model_name: str) -> str:
        labels = f'engine="0",model_name="{model_name}"'
        k = len(self.per_position)
        lines = [
            "# HELP vllm:num_requests_running Number of requests in model execution batches.",
            "# TYPE vllm:num_requests_running gauge",
            f"vllm:num_requests_running{{{labels}}} 4.0",
        ]
        totals = {
            "drafts": self.drafts,
            "draft_tokens": self.drafts * k,
            "accepted_tokens": sum(self.accepted_per_pos),
        }
        for name, value in totals.items():
            lines += [
                f"# TYPE {PREFIX}{name}_total counter",
                f"{PREFIX}{name}_total{{{labels}}} {float(value)}",
                f"# TYPE {PREFIX}{name}_created gauge",
                f"{PREFIX}{name}_created{{{labels}}} {self.created}",
            ]
        lines.append(f"# TYPE {PREFIX}accepted_tokens_per_pos_total counter")
        for i, value in enumerate(self.accepted_per_pos):
            lines.append(f'{PREFIX}accepted_tokens_per_pos_total{{{labels},position="{i}"}} {float(value)}')
        return "\n".join(lines) + "\n"


def serve(host: str, port: int, per_position: list[float], model_name: str) -> ThreadingHTTPServer:
    """Start serving on host:port in a daemon thread; returns the server (call shutdown() to stop)."""
    counters = Counters(per_position)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path != "/metrics":
                self.send_response(404)
                self.end_headers()
                return
            counters.advance()
            body = counters.exposition(model_name).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
