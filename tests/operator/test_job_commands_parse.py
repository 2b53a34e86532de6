"""Contract between the operator and the pipeline: every `speculators` command line the operator renders is
accepted by the real CLI parser of `speculators_core` (flags, choices, types), for every step and option.

The parser is the one the runtime image's entrypoint runs; it imports nothing heavy: a unit test.
"""

from __future__ import annotations

import argparse
from typing import Any

import pytest
from spd_testlib import speculator, training

from speculators_core.cli.main import build_parser
from speculators_operator.api.common import ModelSource
from speculators_operator.render.common import Images
from speculators_operator.render.kserve import inference_service
from speculators_operator.render.speculator import ResolvedDraft, SpeculatorContext, deployment, resolve_job
from speculators_operator.render.training import TrainingContext, step_hashes, step_job, steps_for

IMAGES = Images(runtime="registry.example/runtime:1", vllm="registry.example/vllm:1")

TRAININGS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "everything": {
        "verifier": {"uri": "s3://models/llama", "revision": "v2", "secretRef": {"name": "aws"}},
        "algorithm": "eagle3",
        "data": {
            "datasets": [
                {"uri": "hf://HuggingFaceH4/ultrachat_200k", "split": "train_sft"},
                {"uri": "pvc://datasets/sharegpt.jsonl"},
            ],
            "maxSamples": 5000,
            "maxLength": 4096,
            "regenerateResponses": True,
            "regenerateEndpoint": "http://vllm:8000/v1",
        },
        "datagen": {"shards": 4},
        "training": {
            "epochs": 2,
            "learningRate": 5e-5,
            "tttSteps": 5,
            "draftVocabSize": 16384,
            "numLayers": 2,
            "nodes": 2,
            "gpusPerNode": 4,
            "mode": "online",
        },
        "output": {"s3": {"uri": "s3://drafts/llama", "secretRef": {"name": "aws"}}},
    },
    "trainjob-two-nodes-kueue": {
        "training": {"runtime": "trainjob", "nodes": 2, "gpusPerNode": 4},
        "scheduling": {"queueName": "gpu-team"},
    },
    "trainjob-one-gpu": {"training": {"runtime": "trainjob"}},
    "hub-push-single-node-multi-gpu": {
        "verifier": {"uri": "pvc://models/llama"},
        "algorithm": "eagle",
        "training": {"gpusPerNode": 8},
        "output": {"hub": {"repo": "org/llama-eagle", "secretRef": {"name": "hf"}}},
    },
    "dflash-recipe": {"algorithm": "dflash"},
    "upstream-recipe": {"training": {"stepWeighting": "uniform", "trainLmHead": False, "loss": "lk"}},
    "dflash-tuned": {
        "algorithm": "dflash",
        "training": {
            "numLayers": 3,
            "numSpeculativeTokens": 6,
            "dflash": {"blockSize": 8, "maskTokenId": 151669, "lossWeighting": "fixed-exp-decay"},
        },
    },
}


def _speculators_argv(container: dict[str, Any]) -> list[str] | None:
    """The argv `speculators` receives, or None for containers that do not run our CLI (vLLM)."""
    command, args = container.get("command", []), container.get("args", [])
    if command[:1] == ["speculators"]:
        return [*command[1:], *args]
    if command == ["torchrun"]:
        return args[args.index("speculators_core.cli") + 1 :]
    return None


def _containers(pod_spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [*pod_spec.get("initContainers", []), *pod_spec.get("containers", [])]


def _step_pod(obj: dict[str, Any]) -> dict[str, Any]:
    """A step Job's pod spec, or a TrainJob's node container as Trainer runs it (trainer.command/args)."""
    if obj["kind"] == "TrainJob":
        trainer = obj["spec"]["trainer"]
        return {"containers": [{"name": "node", "command": trainer["command"], "args": trainer["args"]}]}
    return obj["spec"]["template"]["spec"]


def _parse(argv: list[str]) -> argparse.Namespace:
    # Kubernetes expands $(VAR) in args; the CLI sees the value, so substitute a plausible one.
    argv = [a.replace("$(JOB_COMPLETION_INDEX)", "0") for a in argv]
    try:
        return build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse reports on stderr and exits 2
        raise AssertionError(f"`speculators {' '.join(argv)}` is rejected by the CLI parser") from exc


@pytest.mark.parametrize("case", sorted(TRAININGS))
def test_every_training_step_parses(case):
    try:
        body = training("llama", **TRAININGS[case])
    except Exception as exc:  # a field name drifted: say which case
        raise AssertionError(f"case {case} no longer validates") from exc
    ctx = TrainingContext.of(body, IMAGES)
    hashes = step_hashes(ctx)
    seen: set[str] = set()
    for step in steps_for(ctx.spec):
        job = step_job(ctx, step, hashes[step])
        for container in _containers(_step_pod(job)):
            argv = _speculators_argv(container)
            assert argv is not None, f"{step}: container {container['name']} does not run speculators"
            ns = _parse(argv)
            seen.add(ns.command)
    # Online training runs the verifier inside the trainer: no hidden states on disk, no datagen step.
    online = TRAININGS[case].get("training", {}).get("mode") == "online"
    assert {"prepare-data", "train", "eval"} <= seen and ("datagen" in seen) != online


def test_speculator_fetch_and_resolve_commands_parse():
    spec = {
        "verifier": {"uri": "hf://meta-llama/Llama-3.1-8B-Instruct", "secretRef": {"name": "hf"}},
        "draft": {"uri": "s3://drafts/llama", "secretRef": {"name": "aws"}},
    }
    ctx = SpeculatorContext.of(speculator("llama-spd", **spec), IMAGES)
    draft = ResolvedDraft(ModelSource(uri="s3://drafts/llama"), "eagle3", 3)
    parsed = []
    pod_specs = [
        resolve_job(ctx)["spec"]["template"]["spec"],
        deployment(ctx, draft)["spec"]["template"]["spec"],
    ]
    kserve_ctx = SpeculatorContext.of(speculator("llama-spd", backend="kserve", **spec), IMAGES)
    isvc = inference_service(kserve_ctx, draft)
    pod_specs.append({"initContainers": isvc["spec"]["predictor"].get("initContainers", [])})
    for pod_spec in pod_specs:
        for container in _containers(pod_spec):
            argv = _speculators_argv(container)
            if argv is not None:
                parsed.append(_parse(argv).command)
    assert "inspect" in parsed and parsed.count("fetch") >= 3


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        (
            "dflash-recipe",
            {"block_size": 16, "num_layers": 5, "num_speculative_tokens": 15, "mask_token_id": None},
        ),
        (
            "dflash-tuned",
            {"block_size": 8, "num_layers": 3, "num_speculative_tokens": 6, "mask_token_id": 151669},
        ),
    ],
)
def test_a_dflash_training_trains_and_evaluates_blocks(case, expected):
    ctx = TrainingContext.of(training("llama", **TRAININGS[case]), IMAGES)
    hashes = step_hashes(ctx)
    train = _parse(_speculators_argv(_containers(_step_pod(step_job(ctx, "train", hashes["train"])))[-1]))
    assert train.algorithm == "dflash"
    assert {key: getattr(train, key) for key in expected} == expected
    assert train.dflash_loss_weighting == ("fixed-exp-decay" if case == "dflash-tuned" else "dpace")
    evaluation = _parse(_speculators_argv(_containers(_step_pod(step_job(ctx, "eval", hashes["eval"])))[-1]))
    # Evaluated at the served k, never drafting more than a block holds.
    assert evaluation.num_speculative_tokens == expected["num_speculative_tokens"]
    assert evaluation.max_speculative_tokens == max(
        min(8, expected["block_size"] - 1), expected["num_speculative_tokens"]
    )


def test_an_eagle3_trainings_step_hashes_do_not_move_with_the_new_defaults():
    """Objects stored under the older CRD carry numLayers 1 and numSpeculativeTokens 3; new ones omit
    them: both hash alike, so an operator upgrade re-runs no finished step."""
    stored = training("llama", training={"numLayers": 1, "numSpeculativeTokens": 3})
    fresh = training("llama")
    assert "numLayers" not in fresh["spec"]["training"]
    assert step_hashes(TrainingContext.of(stored, IMAGES)) == step_hashes(TrainingContext.of(fresh, IMAGES))


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("defaults", {"step_weighting": "acceptance", "train_lm_head": None, "loss": "kl"}),
        ("upstream-recipe", {"step_weighting": "uniform", "train_lm_head": False, "loss": "lk"}),
    ],
)
def test_the_training_recipe_reaches_the_trainer(case, expected):
    """Unset trainLmHead leaves the trainer's per-algorithm default (eagle3: trained); the rest is set."""
    ctx = TrainingContext.of(training("llama", **TRAININGS[case]), IMAGES)
    job = step_job(ctx, "train", step_hashes(ctx)["train"])
    train = _parse(_speculators_argv(_containers(_step_pod(job))[-1]))
    assert {key: getattr(train, key) for key in expected} == expected


def test_the_evaluation_runs_at_the_serving_temperature():
    """evaluation.temperature reaches `speculators eval`; at its default 0 (greedy) it is neither passed nor
    hashed, so greedy evaluations keep their hash, and choosing a temperature re-evaluates only."""
    greedy = TrainingContext.of(training("llama"), IMAGES)
    sampled = TrainingContext.of(training("llama", evaluation={"temperature": 0.7}), IMAGES)
    for ctx, want in ((greedy, 0.0), (sampled, 0.7)):
        job = step_job(ctx, "eval", step_hashes(ctx)["eval"])
        assert _parse(_speculators_argv(_containers(_step_pod(job))[-1])).temperature == want
    a, b = step_hashes(greedy), step_hashes(sampled)
    assert a["train"] == b["train"] and a["eval"] != b["eval"]
    assert step_hashes(TrainingContext.of(training("llama", evaluation={"temperature": 0}), IMAGES)) == a


def test_recipe_fields_hash_only_away_from_their_defaults():
    """Objects stored before stepWeighting existed hash like fresh ones (the API server defaults the field
    on read): an upgrade re-runs no finished training; choosing upstream's recipe re-trains."""
    stored = training("llama")
    fresh = training("llama", training={"stepWeighting": "acceptance"})
    assert step_hashes(TrainingContext.of(stored, IMAGES)) == step_hashes(TrainingContext.of(fresh, IMAGES))
    for change in ({"stepWeighting": "uniform"}, {"trainLmHead": False}, {"trainLmHead": True}):
        other = step_hashes(TrainingContext.of(training("llama", training=change), IMAGES))
        assert other["train"] != step_hashes(TrainingContext.of(stored, IMAGES))["train"], change
