"""Scrape vLLM /metrics from each ready pod, concurrently, with a timeout per pod."""

from __future__ import annotations

import asyncio
import json
import shlex
from dataclasses import dataclass
from typing import Any

import aiohttp

from speculators_core.vllm_metrics.acceptance import Counters, counters_from_text
from speculators_operator.status.conditions import parse_time

MAX_BODY = 8 * 1024 * 1024  # a /metrics page is tens of KiB; refuse anything absurd


@dataclass(frozen=True)
class Target:
    """One ready vLLM pod."""

    pod: str
    url: str
    instance: str  # pod uid + container restart count: changes when counters restart
    started_at: float | None  # container start (epoch seconds)
    plan: Any = None  # the pod's k, or its batch-size schedule ((lo, hi, k), ...), from its command line


@dataclass(frozen=True)
class ScrapeResult:
    target: Target
    counters: Counters | None
    error: str | None = None


def _ready(pod: dict[str, Any]) -> bool:
    status = pod.get("status") or {}
    if status.get("phase") != "Running" or not status.get("podIP"):
        return False
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return False
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])


def speculative_plan(pod: dict[str, Any]) -> int | tuple[tuple[int, int, int], ...] | None:
    """What the pod drafts, read from --speculative-config in its command line (either backend)."""
    for ctr in (pod.get("spec") or {}).get("containers") or []:
        argv = [*(ctr.get("command") or []), *(ctr.get("args") or [])]
        for i, arg in enumerate(argv):
            if arg in ("--speculative-config", "-sc") and i + 1 < len(argv):
                raw = argv[i + 1]
            elif arg.startswith("--speculative-config="):
                raw = arg.split("=", 1)[1]
            else:
                continue
            try:
                if raw[:1] == "'":
                    raw = shlex.split(raw)[0]  # quoted for a shell's eval (backend llmisvc)
                config = json.loads(raw)
                schedule = config.get("num_speculative_tokens_per_batch_size")
                if schedule:
                    return tuple((int(lo), int(hi), int(k)) for lo, hi, k in schedule)
                return int(config["num_speculative_tokens"])
            except (ValueError, TypeError, KeyError, AttributeError):
                return None
    return None


# The vLLM container of each backend: ours, KServe's InferenceService's, the LLMInferenceService preset's.
VLLM_CONTAINERS = ("vllm", "kserve-container", "main")


def _scheme(pod: dict[str, Any]) -> str:
    """https when the vLLM container's probes are (KServe's LLMInferenceService with TLS), else http."""
    for ctr in (pod.get("spec") or {}).get("containers") or []:
        if ctr.get("name") in VLLM_CONTAINERS:
            probe = (ctr.get("readinessProbe") or {}).get("httpGet") or {}
            return "https" if str(probe.get("scheme", "")).upper() == "HTTPS" else "http"
    return "http"


def targets(pods: list[dict[str, Any]], port: int) -> list[Target]:
    """Ready pods as scrape targets."""
    out = []
    for pod in pods:
        if not _ready(pod):
            continue
        meta = pod["metadata"]
        status = pod["status"]
        restarts, started = 0, None
        for cs in status.get("containerStatuses") or []:
            if cs.get("name") in VLLM_CONTAINERS:
                restarts = cs.get("restartCount") or 0
                started = ((cs.get("state") or {}).get("running") or {}).get("startedAt")
        ip = status["podIP"]
        host = f"[{ip}]" if ":" in ip else ip
        out.append(
            Target(
                pod=meta["name"],
                url=f"{_scheme(pod)}://{host}:{port}/metrics",
                instance=f"{meta.get('uid', '')}/{restarts}",
                started_at=parse_time(started or status.get("startTime")),
                plan=speculative_plan(pod),
            )
        )
    return out


async def scrape_one(
    session: aiohttp.ClientSession, target: Target, model_name: str | None, timeout: float
) -> ScrapeResult:
    try:
        # A pod IP has no name a certificate could be checked against (KServe's are self-signed anyway).
        verify = not target.url.startswith("https:")
        async with session.get(target.url, timeout=aiohttp.ClientTimeout(total=timeout), ssl=verify) as resp:
            if resp.status != 200:
                return ScrapeResult(target, None, f"{target.pod}: HTTP {resp.status}")
            body = await resp.content.read(MAX_BODY)
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        return ScrapeResult(target, None, f"{target.pod}: {type(exc).__name__}: {exc}".strip(": "))
    text = body.decode("utf-8", errors="replace")
    return ScrapeResult(target, counters_from_text(text, model_name))


async def scrape(
    pod_targets: list[Target], *, model_name: str | None = None, timeout: float = 5.0, concurrency: int = 32
) -> list[ScrapeResult]:
    """Scrape every target; failures come back as results with an error, never as exceptions."""
    if not pod_targets:
        return []
    limit = asyncio.Semaphore(concurrency)

    async def bounded(session: aiohttp.ClientSession, target: Target) -> ScrapeResult:
        async with limit:
            return await scrape_one(session, target, model_name, timeout)

    async with aiohttp.ClientSession() as session:
        return list(await asyncio.gather(*(bounded(session, t) for t in pod_targets)))
