"""A stand-in for a vLLM OpenAI-compatible server, with and without a speculator (no GPU here, so no vLLM).

It serves `/health`, `/metrics` (vLLM's spec-decode counters), `/v1/models`, `/v1/completions` and
`/v1/chat/completions` (streamed as vLLM streams: SSE chunks, `usage` with `continuous_usage_stats`,
`[DONE]`) from one continuous-batching engine whose
timing is a known model, so what a benchmark measures against it is known in advance:

- every engine step serves all running sequences at once and takes
  `step = a + u * b * (k + 1) + d * k` seconds (b running sequences, k draft tokens per step, 0 without a
  speculator): a memory-bound floor `a` (the weights are read once per step), compute `u` per token the
  verifier checks, and drafting `d` per draft token;
- without a speculator each sequence gets one token per step; with one, 1 + the drafts accepted, sampled
  per step from the conditional acceptance rates `q` (position i is accepted if 0..i-1 were), so tokens
  arrive in bursts, as from vLLM with speculative decoding;
- a new request's first token comes after its prefill, `prefill + prefill_per_token * prompt_tokens`.

So the mean acceptance length is `tau = 1 + q0 + q0 q1 + ...`, the inter-token latency at b running
sequences is `step(b) / tau` (baseline: `step(b)` with k = 0), the speed-up is
`tau * (a + u b) / (a + u b (k + 1) + d k)`, and speculation stops paying above
`b* = (a (tau - 1) - d k) / (u (k + 1 - tau))` sequences (`Model.breakeven_concurrency`).

Run: `python -m localrun.openai_speculative_standin --port 8000 [--k 3 --q 0.8,0.7,0.6]` (k 0: baseline).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from dataclasses import dataclass, field, replace
from typing import Any

from aiohttp import web

ENGINE: web.AppKey[Engine] = web.AppKey("engine")
_TASK: web.AppKey[asyncio.Task[None]] = web.AppKey("engine_task")


@dataclass(frozen=True)
class Model:
    """The engine's timing and acceptance (seconds)."""

    k: int = 3
    q: tuple[float, ...] = (0.8, 0.7, 0.6)  # conditional acceptance per draft position
    a: float = 0.020
    u: float = 0.002
    d: float = 0.001
    prefill: float = 0.010
    prefill_per_token: float = 0.0001

    def step_seconds(self, running: int) -> float:
        return self.a + self.u * running * (self.k + 1) + self.d * self.k

    @property
    def mean_acceptance_length(self) -> float:
        tau, p = 1.0, 1.0
        for qi in self.q[: self.k]:
            p *= qi
            tau += p
        return tau

    def itl_seconds(self, running: float) -> float:
        """Expected inter-token latency with `running` sequences in the batch."""
        return (self.a + self.u * running * (self.k + 1) + self.d * self.k) / self.mean_acceptance_length

    @property
    def breakeven_concurrency(self) -> float:
        tau = self.mean_acceptance_length
        return (self.a * (tau - 1) - self.d * self.k) / (self.u * (self.k + 1 - tau))

    @property
    def baseline(self) -> Model:
        """The same server without a speculator."""
        return replace(self, k=0, q=())

    def concurrency_at_rate(self, rate: float, output_tokens: int, prompt_tokens: int = 0) -> float:
        """Sequences in flight at `rate` requests/s (Little's law: b = rate * request time(b)); inf
        beyond what the server sustains."""
        prefill = self.prefill + self.prefill_per_token * prompt_tokens
        # b = rate * (prefill + (n - 1) * (a + d k + u (k + 1) b) / tau), linear in b
        per_b = rate * (output_tokens - 1) * self.u * (self.k + 1) / self.mean_acceptance_length
        if per_b >= 1:
            return float("inf")
        fixed = rate * (
            prefill + (output_tokens - 1) * (self.a + self.d * self.k) / self.mean_acceptance_length
        )
        return fixed / (1 - per_b)

    def batch_at_rate(self, rate: float, output_tokens: int, prompt_tokens: int = 0) -> float:
        """The batch a request decodes in at `rate`: itself at least (at low rates requests seldom
        overlap, and Little's mean, idle time included, would understate it), else Little's mean."""
        return max(1.0, self.concurrency_at_rate(rate, output_tokens, prompt_tokens))

    def itl_at_rate(self, rate: float, output_tokens: int, prompt_tokens: int = 0) -> float:
        return self.itl_seconds(self.batch_at_rate(rate, output_tokens, prompt_tokens))

    def speedup_at_rate(self, rate: float, output_tokens: int, prompt_tokens: int = 0) -> float:
        """Baseline ITL over this server's, each at the batch `rate` gives it (0 beyond its capacity)."""
        b_spec = self.batch_at_rate(rate, output_tokens, prompt_tokens)
        if b_spec == float("inf"):
            return 0.0
        return self.baseline.itl_at_rate(rate, output_tokens, prompt_tokens) / self.itl_seconds(b_spec)

    def breakeven_rate(self, output_tokens: int, prompt_tokens: int = 0) -> float:
        """The request rate where speedup_at_rate falls to 1 (bisection; it falls monotonically)."""
        lo, hi = 1e-6, 1e3
        for _ in range(200):
            mid = (lo + hi) / 2
            if self.speedup_at_rate(mid, output_tokens, prompt_tokens) >= 1:
                lo = mid
            else:
                hi = mid
        return lo


@dataclass
class _Sequence:
    remaining: int
    aborted: bool = False  # the client went away: vLLM drops the request from the batch
    queue: asyncio.Queue[int] = field(default_factory=asyncio.Queue)  # tokens per chunk; 0 ends


class Engine:
    """All running sequences advance together, one step at a time."""

    def __init__(self, model: Model, seed: int = 0) -> None:
        self.model = model
        self.rng = random.Random(seed)
        self.running: list[_Sequence] = []
        self._wake = asyncio.Event()
        self.steps = 0
        self.accepted = 0
        self.drafted = 0
        self.drafts = 0
        self.accepted_per_pos = [0] * model.k

    def _tokens_this_step(self) -> int:
        n = 1
        for i, qi in enumerate(self.model.q[: self.model.k]):
            if self.rng.random() >= qi:
                break
            self.accepted_per_pos[i] += 1
            n += 1
        self.drafted += self.model.k
        self.drafts += 1 if self.model.k else 0
        self.accepted += n - 1
        return n

    async def run(self) -> None:
        while True:
            if not self.running:
                self._wake.clear()
                await self._wake.wait()
            self.running = [seq for seq in self.running if not seq.aborted]
            if not self.running:
                continue
            batch = list(self.running)
            await asyncio.sleep(self.model.step_seconds(len(batch)))
            self.steps += 1
            for seq in batch:
                n = min(seq.remaining, self._tokens_this_step())
                seq.remaining -= n
                seq.queue.put_nowait(n)
                if seq.remaining <= 0 and seq in self.running:
                    seq.queue.put_nowait(0)
                    self.running.remove(seq)

    async def generate(self, prompt_tokens: int, max_tokens: int) -> _Sequence:
        await asyncio.sleep(self.model.prefill + self.model.prefill_per_token * prompt_tokens)
        seq = _Sequence(remaining=max_tokens - 1)
        seq.queue.put_nowait(1)  # the prefill's token
        if seq.remaining <= 0:
            seq.queue.put_nowait(0)
        else:
            self.running.append(seq)
            self._wake.set()
        return seq


def _prompt_tokens(body: dict[str, Any]) -> int:
    if "messages" in body:
        text = " ".join(str(m.get("content", "")) for m in body["messages"])
    else:
        prompt = body.get("prompt", "")
        text = " ".join(prompt) if isinstance(prompt, list) else str(prompt)
    return max(1, len(text.split()))


def build_app(model: Model, name: str = "standin", seed: int = 0) -> web.Application:
    engine = Engine(model, seed)
    app = web.Application()

    async def start(_: web.Application) -> None:
        app[_TASK] = asyncio.create_task(engine.run())

    async def stop(_: web.Application) -> None:
        app[_TASK].cancel()

    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    app[ENGINE] = engine

    async def health(_: web.Request) -> web.Response:
        return web.Response(text="")

    async def models(_: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": name, "object": "model"}]})

    async def complete(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        chat = request.path.endswith("/chat/completions")
        prompt_tokens = _prompt_tokens(body)
        max_tokens = int(body.get("max_tokens") or body.get("max_completion_tokens") or 16)
        seq = await engine.generate(prompt_tokens, max_tokens)
        queue = seq.queue
        rid = f"cmpl-{id(seq):x}"
        created = int(time.time())
        kind = "chat.completion" if chat else "text_completion"

        def choice(text: str, final: bool) -> dict[str, Any]:
            out: dict[str, Any] = {"index": 0, "finish_reason": "length" if final else None}
            if chat:
                out["delta" if body.get("stream") else "message"] = {"role": "assistant", "content": text}
            else:
                out["text"] = text
            return out

        def usage(done: int) -> dict[str, int]:
            return {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": done,
                "total_tokens": prompt_tokens + done,
            }

        if not body.get("stream"):
            done = 0
            while n := await queue.get():
                done += n
            payload = {"id": rid, "object": kind, "created": created, "model": name,
                       "choices": [choice(" tok" * done, True)], "usage": usage(done)}  # fmt: skip
            return web.json_response(payload)

        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        try:
            await resp.prepare(request)
            continuous = bool((body.get("stream_options") or {}).get("continuous_usage_stats"))
            done = 0
            while n := await queue.get():
                done += n
                chunk = {"id": rid, "object": f"{kind}.chunk", "created": created, "model": name,
                         "choices": [choice(" tok" * n, done >= max_tokens)]}  # fmt: skip
                if continuous:
                    chunk["usage"] = usage(done)
                await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())
            if (body.get("stream_options") or {}).get("include_usage"):
                final = {"id": rid, "object": f"{kind}.chunk", "created": created, "model": name,
                         "choices": [], "usage": usage(done)}  # fmt: skip
                await resp.write(f"data: {json.dumps(final)}\n\n".encode())
            await resp.write(b"data: [DONE]\n\n")
            await resp.write_eof()
        except ConnectionResetError:
            seq.aborted = True  # the client cut the request off (GuideLLM's max_duration): not an error
        except asyncio.CancelledError:
            seq.aborted = True
            raise
        return resp

    async def metrics(_: web.Request) -> web.Response:
        """vLLM's spec-decode counters (the names and labels of vLLM's SpecDecodingProm)."""
        labels = f'engine="0",model_name="{name}"'
        lines = []
        if model.k:
            for family, value in (
                ("num_drafts", engine.drafts),
                ("num_draft_tokens", engine.drafted),
                ("num_accepted_tokens", engine.accepted),
            ):
                lines += [f"# TYPE vllm:spec_decode_{family} counter",
                          f"vllm:spec_decode_{family}_total{{{labels}}} {float(value)}"]  # fmt: skip
            lines.append("# TYPE vllm:spec_decode_num_accepted_tokens_per_pos counter")
            for i, value in enumerate(engine.accepted_per_pos):
                series = f'vllm:spec_decode_num_accepted_tokens_per_pos_total{{{labels},position="{i}"}}'
                lines.append(f"{series} {float(value)}")
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")

    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/completions", complete)
    app.router.add_post("/v1/chat/completions", complete)
    return app


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--model-name", default="standin")
    ap.add_argument("--k", type=int, default=3, help="draft tokens per step; 0 is the baseline")
    ap.add_argument("--q", default="0.8,0.7,0.6", help="conditional acceptance per draft position")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    q = tuple(float(x) for x in args.q.split(",") if x) if args.k else ()
    web.run_app(build_app(Model(k=args.k, q=q), args.model_name, args.seed), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
