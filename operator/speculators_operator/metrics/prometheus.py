"""The same acceptance numbers from a Prometheus server (large fleets: one query instead of N scrapes).

Prometheus' increase() already handles counter resets. Series are selected by the `namespace` and `pod`
labels that the usual Kubernetes scrape configs (ServiceMonitor/PodMonitor, kubernetes_sd relabelling)
attach.
"""

from __future__ import annotations

from typing import Any

import aiohttp

from speculators_core.vllm_metrics.acceptance import ACCEPTED, DRAFT_TOKENS, DRAFTS, PER_POS, Counters


def selector(namespace: str, deployment: str) -> str:
    """Series of the Deployment's pods (<deployment>-<replicaset hash>-<pod hash>).

    Names are DNS labels ([a-z0-9-]), so nothing in them needs regex escaping.
    """
    return f'{{namespace="{namespace}",pod=~"{deployment}-[a-z0-9]+-[a-z0-9]+"}}'


def queries(namespace: str, deployment: str, window_seconds: int) -> dict[str, str]:
    sel = selector(namespace, deployment)
    w = f"{int(window_seconds)}s"
    return {
        "drafts": f"sum(increase({DRAFTS}_total{sel}[{w}]))",
        "draft_tokens": f"sum(increase({DRAFT_TOKENS}_total{sel}[{w}]))",
        "accepted": f"sum(increase({ACCEPTED}_total{sel}[{w}]))",
        "per_pos": f"sum by (position) (increase({PER_POS}_total{sel}[{w}]))",
        "pods": f"count(count by (pod) ({DRAFTS}_total{sel}))",
    }


class PrometheusError(RuntimeError):
    pass


def _vector(payload: dict[str, Any]) -> list[dict[str, Any]]:
    if payload.get("status") != "success":
        raise PrometheusError(payload.get("error") or "query failed")
    data = payload.get("data") or {}
    if data.get("resultType") != "vector":
        raise PrometheusError(f"unexpected result type {data.get('resultType')!r}")
    return list(data.get("result") or [])


def _scalar(result: list[dict[str, Any]]) -> float:
    return float(result[0]["value"][1]) if result else 0.0


def counters_from_results(results: dict[str, list[dict[str, Any]]]) -> tuple[Counters, int]:
    """(window increases, pods) from the instant-vector results of `queries`."""
    per_pos: dict[int, float] = {}
    for item in results.get("per_pos", []):
        try:
            per_pos[int(item["metric"]["position"])] = float(item["value"][1])
        except (KeyError, ValueError, IndexError):
            continue
    counters = Counters(
        _scalar(results.get("drafts", [])),
        _scalar(results.get("draft_tokens", [])),
        _scalar(results.get("accepted", [])),
        per_pos,
    )
    return counters, int(_scalar(results.get("pods", [])))


async def query_acceptance(
    base_url: str, namespace: str, deployment: str, window_seconds: int, *, timeout: float = 10.0
) -> tuple[Counters, int]:
    """Run the queries against /api/v1/query; raise PrometheusError on any failure."""
    results: dict[str, list[dict[str, Any]]] = {}
    url = base_url.rstrip("/") + "/api/v1/query"
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session:
            for key, promql in queries(namespace, deployment, window_seconds).items():
                async with session.get(url, params={"query": promql}) as resp:
                    payload = await resp.json(content_type=None)
                    results[key] = _vector(payload)
    except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as exc:
        raise PrometheusError(f"{type(exc).__name__}: {exc}") from exc
    return counters_from_results(results)
