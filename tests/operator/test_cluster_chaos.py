"""Chaos, bounded and seeded: three trainings and three Speculators while the operator is SIGKILLed at
random points, the API server is SIGKILLed and restarted once and etcd once, all mid-run.

50 seeded actions (release a held step pod, change a Speculator's k, touch a training's metadata), each of
which wakes reconciles of one or both kinds; after any action the operator may be killed after a random
delay and started again after another. Afterwards: every resource converges (trainings Succeeded,
Speculators Ready at their last spec), no child is duplicated (one Deployment and Service per Speculator,
one Job per step, never replaced), no finished step re-runs (its pods are released once; a re-run would
hold a new pod forever), no status field is lost on the way (a key, once written, stays; a Succeeded step
stays Succeeded), and every Job's spec-hash is the one its training's spec gives.

SPECULATORS_CHAOS_SEED replays a run; the seed is in the failure message and the log.
"""

from __future__ import annotations

import json
import os
import random
import time
from dataclasses import dataclass, field
from typing import Any

import pytest
from conftest import Kube, OperatorProcess
from spd_testlib import EVAL, PREPARE, TRAIN, cond, speculator_body, training_body

from speculators_operator import constants as c
from speculators_operator.render.training import TrainingContext, step_hashes

pytestmark = pytest.mark.kwok

SEED = int(os.environ.get("SPECULATORS_CHAOS_SEED", "20261204"))
ACTIONS = 50
TRAININGS = ("chaos-a", "chaos-b", "chaos-c")
SPECULATORS = ("chaos-x", "chaos-y", "chaos-z")
RESTART_AT = {17: "kube-apiserver", 33: "etcd"}
SUMMARY = {"prepare": PREPARE, "train": TRAIN, "eval": EVAL}
POD_RUNS = len(TRAININGS) * 5  # prepare, 2 datagen shards, train, eval: each pod runs once


@dataclass
class Ledger:
    """What the run saw: Job uids by name, status keys and finished steps by object, pods released."""

    job_uids: dict[str, str] = field(default_factory=dict)
    status_keys: dict[str, set[str]] = field(default_factory=dict)
    succeeded: dict[str, set[str]] = field(default_factory=dict)
    released: set[str] = field(default_factory=set)  # pod names
    kills: int = 0
    restarts: dict[str, float] = field(default_factory=dict)

    def observe(self, k: Kube, seed: int) -> None:
        for job in k.list("Job"):
            name, uid = job["metadata"]["name"], job["metadata"]["uid"]
            assert self.job_uids.setdefault(name, uid) == uid, f"seed {seed}: Job {name} was replaced"
        for kind in ("SpeculatorTraining", "Speculator"):
            for obj in k.list(kind):
                key = f"{kind}/{obj['metadata']['name']}"
                status = obj.get("status") or {}
                lost = self.status_keys.get(key, set()) - set(status)
                assert not lost, f"seed {seed}: {key} lost status fields {sorted(lost)}"
                self.status_keys[key] = self.status_keys.get(key, set()) | set(status)
                done = {s["name"] for s in status.get("steps") or [] if s["state"] == "Succeeded"}
                undone = self.succeeded.get(key, set()) - done
                assert not undone, f"seed {seed}: {key} steps {sorted(undone)} went back from Succeeded"
                self.succeeded[key] = self.succeeded.get(key, set()) | done


def _message(pod: dict[str, Any]) -> str:
    job = pod["metadata"]["labels"]["job-name"]
    step = job.rsplit("-", 1)[1]
    if step == "datagen":
        index = pod["metadata"]["annotations"].get("batch.kubernetes.io/job-completion-index", "0")
        return json.dumps({"step": "datagen", "shard": int(index)})
    return json.dumps(SUMMARY[step])


def _release_one(k: Kube, rng: random.Random, ledger: Ledger) -> bool:
    """Finish one held, running step pod not released before (a re-run's pod would never be)."""
    pods = [
        p
        for p in k.list("Pod", f"{c.LABEL_TRAINING}")
        if p["status"].get("phase") == "Running" and p["metadata"]["name"] not in ledger.released
    ]
    if not pods:
        return False
    pod = rng.choice(sorted(pods, key=lambda p: p["metadata"]["name"]))
    ann = {"sim.speculators.ai/hold": "false", "sim.speculators.ai/termination-message": _message(pod)}
    k.patch("Pod", pod["metadata"]["name"], {"metadata": {"annotations": ann}})
    ledger.released.add(pod["metadata"]["name"])
    return True


def test_seeded_chaos_converges_without_duplicates_or_lost_status(
    operator: OperatorProcess, k: Kube, cluster: Any
) -> None:
    if cluster.control is None:  # SPECULATORS_TEST_KUBECONFIG: a cluster whose etcd is not ours to kill
        pytest.skip("needs the embedded control plane: it SIGKILLs and restarts etcd and the kube-apiserver")
    rng = random.Random(SEED)
    ledger = Ledger()
    want_k = {}
    for name in TRAININGS:
        k.create(training_body(name))
    for name in SPECULATORS:
        want_k[name] = 3
        k.create(speculator_body(name, method="eagle3", numSpeculativeTokens=3))

    t0 = time.monotonic()
    for i in range(ACTIONS):
        if i in RESTART_AT:
            component = RESTART_AT[i]
            ledger.restarts[component] = cluster.control.restart(component)
        action = rng.choices(("release", "k", "touch"), weights=(5, 3, 2))[0]
        if action == "release" and len(ledger.released) < POD_RUNS:
            if not operator.alive():
                operator.start()
            # Wait for a pod to release: the operator may still be creating the next step's Job.
            k.wait(
                lambda: _release_one(k, rng, ledger), what=f"seed {SEED}: a held pod to release", timeout=60
            )
        elif action == "k":
            name = rng.choice(SPECULATORS)
            want_k[name] = rng.choice([n for n in (2, 3, 4, 5) if n != want_k[name]])
            k.patch("Speculator", name, {"spec": {"numSpeculativeTokens": want_k[name]}})
        else:
            k.patch(
                "SpeculatorTraining",
                rng.choice(TRAININGS),
                {"metadata": {"annotations": {"chaos/touch": str(i)}}},
            )
        if rng.random() < 0.35 and operator.alive():
            time.sleep(rng.uniform(0.0, 0.6))
            operator.kill()
            ledger.kills += 1
            time.sleep(rng.uniform(0.0, 0.5))  # the cluster moves on meanwhile
            operator.start()
        ledger.observe(k, SEED)

    # Drain: the rest of the steps, with the operator up.
    if not operator.alive():
        operator.start()

    def all_succeeded() -> bool:
        _release_one(k, rng, ledger)
        ledger.observe(k, SEED)
        phases = [
            ((k.get("SpeculatorTraining", n) or {}).get("status") or {}).get("phase") for n in TRAININGS
        ]
        return phases == ["Succeeded"] * len(TRAININGS)

    k.wait(all_succeeded, what=f"seed {SEED}: every training Succeeded", timeout=180)
    elapsed = time.monotonic() - t0
    print(
        f"\nchaos seed {SEED}: {ACTIONS} actions, {ledger.kills} operator kills, restarts "
        f"{ {n: round(s, 1) for n, s in ledger.restarts.items()} } s, {len(ledger.released)} pods released, "
        f"converged in {elapsed:.0f} s"
    )
    assert set(ledger.restarts) == {"kube-apiserver", "etcd"}

    for name in TRAININGS:
        body = k.get("SpeculatorTraining", name)
        status = body["status"]
        assert cond(status, "Ready")["status"] == "True", f"seed {SEED}: {name} {status['conditions']}"
        hashes = step_hashes(TrainingContext.of(body))
        assert [s["name"] for s in status["steps"]] == ["prepare", "datagen", "train", "eval"]
        for step in status["steps"]:
            job = k.get("Job", step["jobName"])
            assert (
                job["metadata"]["annotations"][c.ANNOTATION_SPEC_HASH] == hashes[step["name"]] == step["hash"]
            )
            assert job["metadata"]["uid"] == ledger.job_uids[step["jobName"]]
        assert status["evaluation"]["meanAcceptanceLength"] == EVAL["mean_accept_len"]
    assert sorted(ledger.job_uids) == sorted(
        f"{t}-{s}" for t in TRAININGS for s in ("prepare", "datagen", "train", "eval")
    )
    assert len(ledger.released) == POD_RUNS

    for name in SPECULATORS:
        status = k.wait_status(
            "Speculator",
            name,
            lambda s, n=name: (
                s.get("observedGeneration") == k.get("Speculator", n)["metadata"]["generation"]
                and (cond(s, "Ready") or {}).get("status") == "True"
            ),
            f"seed {SEED}: Ready at its last generation",
            timeout=120,
        )
        assert status["draft"]["numSpeculativeTokens"] == want_k[name]
        (dep,) = k.list("Deployment", f"{c.LABEL_SPECULATOR}={name}")
        spec_config = json.loads(dep["spec"]["template"]["spec"]["containers"][0]["args"][3])
        assert spec_config["num_speculative_tokens"] == want_k[name]
        assert len([s for s in k.list("Service") if s["metadata"]["name"] == name]) == 1
    ledger.observe(k, SEED)
