"""The same acceptance numbers from a Prometheus server: a handful of queries per namespace for a whole
fleet, instead of scraping every pod.

Prometheus' increase() already handles counter resets. Series are selected by the `namespace` and `pod`
labels that the usual Kubernetes scrape configs (ServiceMonitor/PodMonitor, kubernetes_sd relabelling)
attach. One round asks for every pod of a namespace at once (`sum by (pod)`) and splits the answer by
Deployment here (a pod is `<deployment>-<replicaset hash>-<pod hash>`): four queries per namespace and
window whatever the number of Speculators, where per-Speculator selectors cost five each (at 1000
Speculators every 30 s that is 170 queries a second for one Prometheus).
"""

from __future__ import annotations

import re
from typing import Any

import aiohttp

from speculators_core.vllm_metrics.acceptance import ACCEPTED, DRAFT_TOKENS, DRAFTS, PER_POS, Counters


class PrometheusError(RuntimeError):
    pass


def _vector(payload: dict[str, Any]) -> list[dict[str, Any]]:
    if payload.get("status") != "success":
        raise PrometheusError(payload.get("error") or "query failed")
    data = payload.get("data") or {}
    if data.get("resultType") != "vector":
        raise PrometheusError(f"unexpected result type {data.get('resultType')!r}")
    return list(data.get("result") or [])


def fleet_queries(namespace: str, window_seconds: int) -> dict[str, str]:
    """Per-pod window increases of every pod in the namespace."""
    sel = f'{{namespace="{namespace}"}}'
    w = f"{int(window_seconds)}s"
    return {
        "drafts": f"sum by (pod) (increase({DRAFTS}_total{sel}[{w}]))",
        "draft_tokens": f"sum by (pod) (increase({DRAFT_TOKENS}_total{sel}[{w}]))",
        "accepted": f"sum by (pod) (increase({ACCEPTED}_total{sel}[{w}]))",
        "per_pos": f"sum by (pod, position) (increase({PER_POS}_total{sel}[{w}]))",
    }


# Kubernetes' own alphabet for generated name parts (no vowels, no 0/1/3): the ReplicaSet's
# pod-template-hash and the pod's 5-character suffix.
_SAFE = "[bcdfghjklmnpqrstvwxz2456789]"
_POD = re.compile(rf"(?P<deployment>[a-z0-9]([-a-z0-9]*[a-z0-9])?)-{_SAFE}{{1,10}}-{_SAFE}{{5}}")


def deployment_of(pod: str) -> str | None:
    """The Deployment a pod belongs to (`<deployment>-<replicaset hash>-<pod suffix>`), else None (a
    StatefulSet's `<name>-0`, a bare pod)."""
    found = _POD.fullmatch(pod)
    return found.group("deployment") if found else None


def counters_by_deployment(results: dict[str, list[dict[str, Any]]]) -> dict[str, tuple[Counters, int]]:
    """(window increases, pods with a drafts series) per Deployment, from the results of `fleet_queries`."""
    sums: dict[str, dict[str, float]] = {}
    per_pos: dict[str, dict[int, float]] = {}
    pods: dict[str, set[str]] = {}
    for key in ("drafts", "draft_tokens", "accepted"):
        for item in results.get(key, []):
            try:
                pod = str(item["metric"]["pod"])
                value = float(item["value"][1])
            except (KeyError, ValueError, IndexError, TypeError):
                continue
            deployment = deployment_of(pod)
            if deployment is None:
                continue
            bucket = sums.setdefault(deployment, {})
            bucket[key] = bucket.get(key, 0.0) + value
            if key == "drafts":
                pods.setdefault(deployment, set()).add(pod)
    for item in results.get("per_pos", []):
        try:
            pod = str(item["metric"]["pod"])
            position = int(item["metric"]["position"])
            value = float(item["value"][1])
        except (KeyError, ValueError, IndexError, TypeError):
            continue
        deployment = deployment_of(pod)
        if deployment is not None:
            positions = per_pos.setdefault(deployment, {})
            positions[position] = positions.get(position, 0.0) + value
    out = {}
    for deployment in set(sums) | set(per_pos):
        got = sums.get(deployment, {})
        counters = Counters(
            got.get("drafts", 0.0),
            got.get("draft_tokens", 0.0),
            got.get("accepted", 0.0),
            per_pos.get(deployment, {}),
        )
        out[deployment] = (counters, len(pods.get(deployment, ())))
    return out


async def query_namespace(
    base_url: str, namespace: str, window_seconds: int, *, timeout: float = 10.0
) -> dict[str, tuple[Counters, int]]:
    """Run `fleet_queries` against /api/v1/query (one connection); raise PrometheusError on any failure.
    A Deployment without series is absent from the answer (nothing drafted: zero counters, no pods)."""
    results: dict[str, list[dict[str, Any]]] = {}
    url = base_url.rstrip("/") + "/api/v1/query"
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session:
            for key, promql in fleet_queries(namespace, window_seconds).items():
                async with session.get(url, params={"query": promql}) as resp:
                    payload = await resp.json(content_type=None)
                    results[key] = _vector(payload)
    except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as exc:
        raise PrometheusError(f"{type(exc).__name__}: {exc}") from exc
    return counters_by_deployment(results)
