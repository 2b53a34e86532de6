"""Two replicas with Kopf peering: when a replica with a higher priority appears, the other one pauses —
Kopf's handlers and the operator's own scrape and resync loops alike."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
from conftest import Kube, OperatorProcess
from spd_testlib import REPO, speculator_body

pytestmark = pytest.mark.kwok


def _counter(metrics: str, name: str) -> float:
    found = re.findall(rf"^{name}\{{[^}}]*\}} (\S+)$", metrics, re.M)
    return sum(float(v) for v in found)


def _paused(log: str) -> bool:
    """Kopf's peering state from its log: a replica starts paused and logs each change."""
    resumed = log.rfind("Resuming operations after the pause")
    return resumed == -1 or log.rfind("Pausing operations in favour of") > resumed


def scrapes(op: OperatorProcess) -> float:
    return _counter(op.metrics(), "speculators_operator_scrapes_total")


def test_a_higher_priority_replica_takes_over(
    cluster: Any, install_crds: Any, operator_crds: list[str], namespace: str, k: Kube, tmp_path: Any
) -> None:
    install_crds(*sorted((REPO / "crds").glob("kopf.dev_*.yaml")))
    k.api.create(
        {"apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": {"name": "speculators"}}, namespace
    )
    (tmp_path / "leader").mkdir()
    first = OperatorProcess(cluster.kubeconfig, namespace, tmp_path, extra=["--peering", "speculators"])
    leader = OperatorProcess(
        cluster.kubeconfig,
        namespace,
        tmp_path / "leader",
        extra=["--peering", "speculators", "--priority", "10"],
    )
    first.start()
    try:
        k.create(
            speculator_body("peered", method="eagle3", numSpeculativeTokens=3, metrics={"intervalSeconds": 2})
        )
        k.wait_phase("Speculator", "peered", "Running")
        k.wait(lambda: scrapes(first), lambda n: n >= 1, what="the first replica scraping")

        leader.start()
        k.wait(
            lambda: first.log_path.read_text(),
            lambda log: "Pausing operations in favour of" in log,
            what="the first replica to pause",
        )
        paused_at = scrapes(first)
        k.wait(lambda: scrapes(leader), lambda n: n >= 6, what="six scrape rounds of the leader (>= 10 s)")
        # Unpaused, the first replica would have scraped ~5 more times; the gate allows one in flight.
        assert scrapes(first) <= paused_at + 1
        assert _counter(leader.metrics(), "speculators_operator_reconciles_total") >= 1
    finally:
        leader.stop()
        first.stop()


def test_identical_replicas_draw_priorities_and_the_standby_takes_over_a_dead_one(
    cluster: Any, install_crds: Any, operator_crds: list[str], namespace: str, k: Kube, tmp_path: Any
) -> None:
    """The chart's replicas are identical: `--priority random` makes exactly one active (equal priorities
    would make Kopf pause them all); SIGKILLed, its peer entry expires after --peering-lifetime and the
    standby resumes."""
    install_crds(*sorted((REPO / "crds").glob("kopf.dev_*.yaml")))
    k.api.create(
        {"apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": {"name": "speculators"}}, namespace
    )
    lifetime = 15
    extra = ["--peering", "speculators", "--priority", "random", "--peering-lifetime", str(lifetime)]
    replicas = []
    for i in range(2):
        (tmp_path / str(i)).mkdir()
        replicas.append(OperatorProcess(cluster.kubeconfig, namespace, tmp_path / str(i), extra=extra))
    try:
        for replica in replicas:
            replica.start()
        # The drawn priorities (each logs its own); the highest works, the other one stays paused.
        drawn = {r: int(re.search(r"\(priority (\d+)\)", r.log_path.read_text())[1]) for r in replicas}
        active = max(replicas, key=drawn.__getitem__)
        (standby,) = [r for r in replicas if r is not active]
        k.wait(
            lambda: (_paused(standby.log_path.read_text()), _paused(active.log_path.read_text())),
            lambda states: states == (True, False),
            what=f"replica with priority {drawn[active]} active, {drawn[standby]} paused",
        )
        k.create(speculator_body("first", method="eagle3", numSpeculativeTokens=3))
        k.wait_phase("Speculator", "first", "Running")

        active.kill()
        started = time.monotonic()
        k.create(speculator_body("second", method="eagle3", numSpeculativeTokens=3))
        k.wait(
            lambda: k.get("Deployment", "second-vllm"), what="the standby to take over", timeout=lifetime + 45
        )
        resumed = time.monotonic() - started
        assert not _paused(standby.log_path.read_text())
        print(
            f"\nfailover, --peering-lifetime {lifetime}: the standby's new Deployment after {resumed:.1f} s"
        )
        assert resumed < lifetime + 30
    finally:
        for replica in replicas:
            replica.stop()
