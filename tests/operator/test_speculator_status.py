"""The Speculator's decisions (pure): draft resolution, trainingRef waiting, Deployment health, acceptance."""

from __future__ import annotations

import json

import pytest
from spd_testlib import (
    FIXTURE_METRICS,
    LATER,
    NOW,
    as_observed_job,
    scaled_fixture,
    speculator,
    terminated_pod,
)

from speculators_core.vllm_metrics.acceptance import counters_from_text
from speculators_operator.metrics.scraper import ScrapeResult, Target
from speculators_operator.metrics.store import MetricsStore
from speculators_operator.render.speculator import SpeculatorContext, resolve_job
from speculators_operator.status.conditions import find
from speculators_operator.status.speculator import SpeculatorObserved, derive_speculator

INSPECT = {
    "algorithm": "eagle3",
    "method": "eagle3",
    "speculative_tokens": 3,
    "verifier": "meta-llama/Llama-3.1-8B-Instruct",
    "vocab_size": 128256,
    "draft_vocab_size": 32000,
    "params": 1000,
}


def _cond(plan, type_):
    return find(plan.status["conditions"], type_)


def _resolve_done(body, summary=INSPECT, state="Complete"):
    job = as_observed_job(resolve_job(SpeculatorContext.of(body)), state)
    exit_code = 0 if state == "Complete" else 3
    pod = terminated_pod(
        "llama-spd-resolve",
        "inspect",
        exit_code=exit_code,
        message=json.dumps(summary) if isinstance(summary, dict) else summary,
    )
    return job, [pod]


HUB_DRAFT_URI = "hf://RedHatAI/Llama-3.1-8B-Instruct-speculator.eagle3"


def _deployment(replicas=1, ready=1, updated=1, generation=1, observed=1, draft=HUB_DRAFT_URI):
    """The vLLM Deployment as observed; `draft` is the draft its last applied template serves."""
    return {
        "metadata": {
            "name": "llama-spd-vllm",
            "generation": generation,
            "annotations": {"speculators.ai/draft": draft},
        },
        "status": {
            "observedGeneration": observed,
            "replicas": replicas,
            "readyReplicas": ready,
            "updatedReplicas": updated,
        },
    }


def test_an_available_deployment_of_the_previous_draft_is_not_ready_for_the_new_one():
    """Observed before this reconcile's apply, the Deployment still runs the old draft: fully available,
    but Ready must wait for the roll (a training's Deployed follows this Ready)."""
    body = speculator(method="eagle3", numSpeculativeTokens=3)
    old = _deployment(draft="pvc://first-workspace/first/model")
    plan = derive_speculator(body, SpeculatorObserved(deployment=old, service={}), now=NOW)
    deployed = _cond(plan, "DeploymentReady")
    assert (deployed["status"], deployed["reason"]) == ("Unknown", "Progressing")
    assert HUB_DRAFT_URI in deployed["message"] and _cond(plan, "Ready")["status"] == "Unknown"
    plan = derive_speculator(body, SpeculatorObserved(deployment=_deployment(), service={}), now=NOW)
    assert _cond(plan, "Ready")["status"] == "True"


def test_uri_draft_without_method_runs_the_resolve_job_first():
    body = speculator()
    plan = derive_speculator(body, SpeculatorObserved(), now=NOW)
    assert [o["metadata"]["name"] for o in plan.create] == ["llama-spd-resolve"]
    assert plan.apply == []  # no Deployment before method and k are known
    assert plan.status["phase"] == "ResolvingDraft"
    assert _cond(plan, "DraftResolved")["status"] == "Unknown"
    assert _cond(plan, "DeploymentReady")["reason"] == "WaitingForDraft"
    assert _cond(plan, "Ready")["status"] == "Unknown"


def test_resolved_draft_is_deployed_and_remembered_after_the_job_is_gone():
    body = speculator(numSpeculativeTokens=5)  # k from spec wins; method from the draft
    job, pods = _resolve_done(body)
    plan = derive_speculator(body, SpeculatorObserved(resolve_job=job, resolve_pods=pods), now=NOW)
    assert [o["kind"] for o in plan.apply] == ["Deployment", "Service"]
    assert plan.status["draft"] == {
        "uri": "hf://RedHatAI/Llama-3.1-8B-Instruct-speculator.eagle3",
        "method": "eagle3",
        "numSpeculativeTokens": 5,
    }
    assert _cond(plan, "DraftResolved")["reason"] == "Resolved"
    assert plan.status["phase"] == "Deploying"
    spec_config = json.loads(plan.apply[0]["spec"]["template"]["spec"]["containers"][0]["args"][3])
    assert spec_config["num_speculative_tokens"] == 5
    body["status"] = plan.status
    plan = derive_speculator(body, SpeculatorObserved(deployment=_deployment(), service={}), now=LATER)
    assert plan.create == []  # the resolution is in status.draft; no new resolve Job
    assert plan.status["phase"] == "Running"
    assert _cond(plan, "Ready")["status"] == "True" and plan.status["url"] == "http://llama-spd.ns.svc:8000"
    assert (
        plan.status["selector"]
        == "app.kubernetes.io/instance=llama-spd-vllm,speculators.ai/speculator=llama-spd"
    )


def test_resolve_failure_is_a_condition_with_the_cli_message():
    body = speculator()
    job, pods = _resolve_done(body, summary="error: config.json is not a speculators config", state="Failed")
    plan = derive_speculator(body, SpeculatorObserved(resolve_job=job, resolve_pods=pods))
    cond = _cond(plan, "DraftResolved")
    assert cond["status"] == "False" and cond["reason"] == "ResolveFailed"
    assert "not a speculators config" in cond["message"]
    assert plan.status["phase"] == "Failed" and plan.apply == []
    assert [e.type for e in plan.events] == ["Warning"]


def test_unservable_method_from_the_draft():
    body = speculator()
    job, pods = _resolve_done(body, summary={**INSPECT, "method": "mtp", "algorithm": "mtp"})
    plan = derive_speculator(body, SpeculatorObserved(resolve_job=job, resolve_pods=pods))
    assert _cond(plan, "DraftResolved")["reason"] == "UnsupportedMethod"


def test_draft_vllm_cannot_serve_is_a_condition_not_a_crashlooping_deployment():
    body = speculator()
    note = "vLLM 0.33 cannot serve speculators_model_type 'eagle'"
    summary = {
        **INSPECT,
        "method": "eagle",
        "algorithm": "eagle",
        "vllm_serve": None,
        "vllm_serve_note": note,
    }
    job, pods = _resolve_done(body, summary=summary)
    plan = derive_speculator(body, SpeculatorObserved(resolve_job=job, resolve_pods=pods))
    cond = _cond(plan, "DraftResolved")
    assert (cond["status"], cond["reason"], cond["message"]) == ("False", "DraftNotServable", note)
    assert plan.apply == []


def test_training_ref_to_a_legacy_eagle_training_is_not_deployed():
    body = speculator(draft={"trainingRef": {"name": "llama"}})
    training = {
        "spec": {"algorithm": "eagle"},
        "status": {"phase": "Succeeded", "output": {"uri": "pvc://w/llama/model", "method": "eagle"}},
    }
    plan = derive_speculator(body, SpeculatorObserved(training=training))
    cond = _cond(plan, "TrainingReady")
    assert (cond["status"], cond["reason"]) == ("False", "DraftNotServable") and "eagle3" in cond["message"]
    assert plan.apply == []


def test_training_ref_waits_then_deploys_from_the_training_output():
    body = speculator(draft={"trainingRef": {"name": "llama"}})
    plan = derive_speculator(body, SpeculatorObserved(training=None))
    assert plan.status["phase"] == "WaitingForTraining"
    assert _cond(plan, "TrainingReady")["reason"] == "TrainingNotFound"
    assert _cond(plan, "TrainingReady")["status"] == "Unknown" and plan.create == [] and plan.apply == []
    training = {"status": {"phase": "Training"}}
    plan = derive_speculator(body, SpeculatorObserved(training=training))
    assert _cond(plan, "TrainingReady")["reason"] == "TrainingInProgress"
    training = {
        "status": {
            "phase": "Succeeded",
            "output": {
                "uri": "pvc://llama-workspace/llama/model",
                "method": "eagle3",
                "numSpeculativeTokens": 3,
            },
        }
    }
    plan = derive_speculator(body, SpeculatorObserved(training=training))
    assert _cond(plan, "TrainingReady")["status"] == "True"
    assert _cond(plan, "DraftResolved")["reason"] == "FromTraining"
    dep = plan.apply[0]
    pod = dep["spec"]["template"]["spec"]
    assert {
        "name": "pvc-llama-workspace",
        "persistentVolumeClaim": {"claimName": "llama-workspace", "readOnly": True},
    } in pod["volumes"]
    assert json.loads(pod["containers"][0]["args"][3])["model"] == "/mnt/pvc/llama-workspace/llama/model"
    failed = {
        "status": {"phase": "Failed", "conditions": [{"type": "Ready", "status": "False", "message": "x"}]}
    }
    plan = derive_speculator(body, SpeculatorObserved(training=failed))
    assert _cond(plan, "TrainingReady")["status"] == "False" and plan.status["phase"] == "Failed"


def test_crashlooping_pods_degrade_the_speculator():
    body = speculator(method="eagle3", numSpeculativeTokens=3)
    pod = {
        "metadata": {"name": "llama-spd-vllm-abc-1"},
        "status": {
            "containerStatuses": [
                {
                    "name": "vllm",
                    "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 5m0s"}},
                }
            ]
        },
    }
    plan = derive_speculator(
        body, SpeculatorObserved(deployment=_deployment(ready=0), pods=[pod], service={})
    )
    cond = _cond(plan, "DeploymentReady")
    assert cond["status"] == "False" and cond["reason"] == "CrashLoopBackOff"
    assert plan.status["phase"] == "Degraded" and _cond(plan, "Ready")["status"] == "False"


def test_kserve_backend_without_kserve_on_the_cluster_fails():
    """(backend kserve with KServe installed: tests/ship/test_kserve_status.py)"""
    plan = derive_speculator(
        speculator(method="eagle3", numSpeculativeTokens=3, backend="kserve"), SpeculatorObserved()
    )
    assert _cond(plan, "DeploymentReady")["reason"] == "KServeNotInstalled" and plan.apply == []
    assert plan.status["phase"] == "Failed" and _cond(plan, "Ready")["status"] == "False"


def _store_with(text_by_time):
    store = MetricsStore()
    target = Target("llama-spd-vllm-abc-1", "http://x/metrics", "uid/0", started_at=0.0)
    for t, text in text_by_time:
        store.record_scrape(("ns", "llama-spd"), 300, [ScrapeResult(target, counters_from_text(text))], t)
    return store.get(("ns", "llama-spd"))


def test_acceptance_is_written_only_when_it_changes():
    fixture = FIXTURE_METRICS.read_text()
    body = speculator(method="eagle3", numSpeculativeTokens=3)
    observed = SpeculatorObserved(
        deployment=_deployment(), service={}, acceptance=_store_with([(1000.0, "")])
    )
    plan = derive_speculator(body, observed)
    assert _cond(plan, "MetricsAvailable")["reason"] == "Waiting"
    assert "acceptance" not in plan.status
    doubled = fixture.replace("1000.0", "2000.0").replace("3000.0", "6000.0").replace("1788.0", "3576.0")
    doubled = doubled.replace(" 796.0", " 1592.0").replace(" 579.0", " 1158.0").replace(" 413.0", " 826.0")
    observed.acceptance = _store_with([(1000.0, fixture), (1030.0, doubled)])
    plan = derive_speculator(body, observed)
    acc = plan.status["acceptance"]
    assert acc["acceptanceRate"] == 0.596 and acc["meanAcceptanceLength"] == 2.788
    assert acc["perPosition"] == [0.796, 0.579, 0.413] and acc["pods"] == 1 and acc["source"] == "pods"
    assert acc["lastScrapeTime"] == "1970-01-01T00:17:10Z"
    met = _cond(plan, "MetricsAvailable")
    assert met["status"] == "True" and _cond(plan, "Ready")["status"] == "True"
    body["status"] = plan.status
    # The next scrape sees no new traffic... same window numbers: status (and lastScrapeTime) unchanged.
    observed.acceptance = _store_with([(1000.0, fixture), (1030.0, doubled), (1060.0, doubled)])
    plan = derive_speculator(body, observed)
    assert plan.status["acceptance"] == acc


def test_acceptance_is_written_at_most_once_per_window_while_traffic_keeps_its_shape():
    """A busy fleet's numbers move every scrape; status.acceptance follows once per metrics window (the
    live window drives drift, canary and automatic k), and at once when traffic starts or stops."""
    from speculators_operator.status.speculator import _recent

    written = {"drafts": 1000, "perPosition": [0.8, 0.6, 0.4], "lastScrapeTime": "2026-01-01T00:00:00Z"}
    moved = {"drafts": 1010, "perPosition": [0.81, 0.6, 0.4]}
    assert _recent(written, moved, "2026-01-01T00:04:59Z", 300)  # kept: no write
    assert not _recent(written, moved, "2026-01-01T00:05:00Z", 300)  # a window later: written
    assert not _recent(written, {**moved, "drafts": 0}, "2026-01-01T00:00:30Z", 300)  # traffic stopped
    assert not _recent(written, {**moved, "perPosition": [0.8, 0.6]}, "2026-01-01T00:00:30Z", 300)  # new k
    assert not _recent(None, moved, "2026-01-01T00:00:30Z", 300)


def test_one_failed_scrape_is_not_reported_two_in_a_row_are():
    """A single timeout (a loaded Prometheus, a restarting pod) would flap MetricsAvailable and rewrite the
    status of every Speculator it touched; two failures in a row are a real outage."""
    body = speculator(method="eagle3", numSpeculativeTokens=3)
    store = MetricsStore()
    key = ("ns", "llama-spd")
    target = Target("llama-spd-vllm-abc-1", "http://x/metrics", "uid/0", started_at=0.0)
    failed = [ScrapeResult(target, None, "timed out after 5 s")]
    reasons = []
    for i, t in enumerate((1000.0, 1030.0, 1060.0, 1090.0, 1120.0, 1150.0)):
        ok = [ScrapeResult(target, counters_from_text(scaled_fixture(1 + i)))]
        store.record_scrape(key, 300, failed if i in (2, 4, 5) else ok, t)
        observed = SpeculatorObserved(deployment=_deployment(), service={}, acceptance=store.get(key))
        plan = derive_speculator(body, observed)
        reasons.append(_cond(plan, "MetricsAvailable")["reason"])
        body["status"] = plan.status
    assert reasons == ["NoTraffic", "Scraped", "Scraped", "Scraped", "Scraped", "ScrapeFailed"]
    assert "timed out after 5 s" in _cond(plan, "MetricsAvailable")["message"]
    # Prometheus queries count the same way.
    store.record_query(key, 300, None, 1, 2000.0, error="query timed out")
    assert store.get(key).failed_in_a_row == 1
    store.record_query(key, 300, None, 1, 2030.0, error="query timed out")
    assert store.get(key).failed_in_a_row == 2
    store.record_query(key, 300, None, 1, 2060.0)
    assert store.get(key).failed_in_a_row == 0


def test_a_scrape_reconciles_only_when_it_could_change_status():
    """At steady traffic a scrape changes nothing a reconcile would write (status.acceptance is refreshed
    once per window), so the scrape loop skips the reconcile and its reads of every child."""
    from speculators_operator.status.speculator import scrape_changes_status

    body = speculator(method="eagle3", numSpeculativeTokens=3)
    store = MetricsStore()
    key = ("ns", "llama-spd")
    target = Target("llama-spd-vllm-abc-1", "http://x/metrics", "uid/0", started_at=0.0)
    decisions = []
    for i, t in enumerate((1000.0, 1030.0, 1060.0, 1090.0, 1360.0)):
        state = store.record_scrape(
            key, 300, [ScrapeResult(target, counters_from_text(scaled_fixture(1 + i)))], t
        )
        now = f"1970-01-01T00:{int(t) // 60:02d}:{int(t) % 60:02d}Z"
        decisions.append(scrape_changes_status(SpeculatorContext.of(body), state, now))
        if decisions[-1]:  # the loop reconciles: the status it writes is the next scrape's baseline
            observed = SpeculatorObserved(deployment=_deployment(), service={}, acceptance=state)
            body["status"] = derive_speculator(body, observed, now=now).status
    # first scrape (NoTraffic), traffic starts (written), two scrapes inside the window (skipped), a window
    # later (written again)
    assert decisions == [True, True, False, False, True]
    auto = speculator(method="eagle3", numSpeculativeTokens=3, tuning={"mode": "auto"})
    auto["status"] = body["status"]
    # automatic k decides every window
    assert scrape_changes_status(SpeculatorContext.of(auto), state, "1970-01-01T00:22:41Z")


def test_metrics_do_not_gate_ready():
    body = speculator(method="eagle3", numSpeculativeTokens=3, metrics={"enabled": False})
    plan = derive_speculator(body, SpeculatorObserved(deployment=_deployment(), service={}))
    assert _cond(plan, "MetricsAvailable")["reason"] == "Disabled"
    assert _cond(plan, "Ready")["status"] == "True"


@pytest.mark.parametrize(
    ("served", "trained_for", "mismatch"),
    [
        ("hf://meta-llama/Llama-3.1-8B-Instruct", "meta-llama/Llama-3.1-8B-Instruct", False),
        (
            "hf://meta-llama/Llama-3.1-8B-Instruct",
            "META-LLAMA/llama-3.1-8b-instruct",
            False,
        ),  # hub ids: any case
        ("hf://Qwen/Qwen3-8B", "meta-llama/Llama-3.1-8B-Instruct", True),
        ("hf://Qwen/Qwen3-8B", "hf://meta-llama/Llama-3.1-8B-Instruct", True),  # a training's verifier URI
        ("pvc://models/verifier", "meta-llama/Llama-3.1-8B-Instruct", False),  # a local copy: cannot tell
        ("hf://Qwen/Qwen3-8B", "/tmp/verifier", False),
        ("hf://Qwen/Qwen3-8B", None, False),
    ],
)
def test_verifier_mismatch_only_between_two_different_hub_models(served, trained_for, mismatch):
    from speculators_operator.status.speculator import verifier_mismatch

    why = verifier_mismatch(served, trained_for)
    assert (why is not None) is mismatch
    if why:
        assert "set spec.verifier.uri to hf://meta-llama/Llama-3.1-8B-Instruct" in why


DFLASH_INSPECT = {
    **INSPECT,
    "algorithm": "dflash",
    "method": "dflash",
    "speculators_model_type": "dflash",
    "speculative_tokens": 15,
    "block_size": 16,
    "max_speculative_tokens": 15,
    "mask_token_id": 151669,
}


def test_a_dflash_draft_is_served_as_dflash_with_its_blocks_k():
    body = speculator(draft={"uri": "hf://z-lab/Qwen3-8B-DFlash-b16"})
    job, pods = _resolve_done(body, summary=DFLASH_INSPECT)
    plan = derive_speculator(body, SpeculatorObserved(resolve_job=job, resolve_pods=pods))
    assert _cond(plan, "DraftResolved")["reason"] == "Resolved"
    dep = next(o for o in plan.apply if o["kind"] == "Deployment")
    args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
    config = json.loads(args[args.index("--speculative-config") + 1])
    assert (config["method"], config["num_speculative_tokens"]) == ("dflash", 15)


def test_more_tokens_than_a_dflash_block_drafts_is_refused_with_the_limit():
    body = speculator(draft={"uri": "hf://z-lab/Qwen3-8B-DFlash-b16"}, numSpeculativeTokens=16)
    job, pods = _resolve_done(body, summary=DFLASH_INSPECT)
    plan = derive_speculator(body, SpeculatorObserved(resolve_job=job, resolve_pods=pods))
    cond = _cond(plan, "DraftResolved")
    assert (cond["status"], cond["reason"]) == ("False", "TooManySpeculativeTokens")
    assert "set spec.numSpeculativeTokens to 15 or less" in cond["message"]
    assert not [o for o in plan.apply if o["kind"] == "Deployment"]


def test_automatic_k_of_a_dflash_draft_stays_within_the_block_it_was_resolved_with():
    body = speculator(
        draft={"uri": "hf://z-lab/Qwen3-8B-DFlash-b16"}, tuning={"mode": "auto", "max": 16, "minDrafts": 100}
    )
    job, pods = _resolve_done(body, summary=DFLASH_INSPECT)
    plan = derive_speculator(body, SpeculatorObserved(resolve_job=job, resolve_pods=pods))
    assert plan.status["draft"]["maxSpeculativeTokens"] == 15  # kept for when the Job is gone
    assert plan.status["tuning"]["numSpeculativeTokens"] == 15
    # Once the resolve Job is gone, the limit comes from status; a k tuned above it before (or above a
    # lowered tuning.max) is brought back within range at once, data or not.
    status = json.loads(json.dumps(plan.status))
    status["tuning"]["numSpeculativeTokens"] = 16
    again = derive_speculator({**body, "status": status}, SpeculatorObserved())
    assert again.status["draft"]["maxSpeculativeTokens"] == 15
    assert again.status["tuning"]["numSpeculativeTokens"] == 15
    dep = next(o for o in again.apply if o["kind"] == "Deployment")
    args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
    assert json.loads(args[args.index("--speculative-config") + 1])["num_speculative_tokens"] == 15
