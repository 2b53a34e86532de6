"""Offline evaluation: lossless greedy speculative decoding, acceptance statistics, cost model, quality."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

from speculators_core.eval.cost import expected_speedup, per_token_flops_verifier
from speculators_core.eval.prompts import prompts_from_prepared
from speculators_core.eval.simulate import AcceptanceStats, SpecDecoder

from .conftest import REPO, cli, read_json

K = 4


@pytest.fixture(scope="module")
def drafts(stack, prepared, hidden_states, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("drafts")
    common = [
        "--verifier",
        stack.verifier,
        "--data",
        prepared,
        "--hidden-states",
        hidden_states,
        "--lr",
        2e-3,
        "--total-seq-len",
        320,
        "--num-speculative-tokens",
        K,
        "--no-validate",
    ]
    # Untrained: the same draft, initial weights (embeddings and lm_head from the verifier, as upstream).
    cli("train", *common, "--max-steps", 0, "--output", root / "untrained", "--checkpoint-dir", root / "c0")
    cli("train", *common, "--epochs", 3, "--output", root / "trained", "--checkpoint-dir", root / "c1")
    return {"untrained": root / "untrained", "trained": root / "trained"}


def test_speculative_decoding_is_lossless(stack, prepared, drafts):
    from speculators_core.data.features import VerifierFeatures, load_verifier
    from speculators_core.models import load_draft_model

    model = load_verifier(stack.verifier, device="cpu")
    draft = load_draft_model(drafts["trained"], dtype=torch.float32)
    features = VerifierFeatures(model, draft.config.eagle_aux_hidden_state_layer_ids)
    eos = model.generation_config.eos_token_id
    decoder = SpecDecoder(model, draft, features, k=K, eos_ids=[eos])
    stats = AcceptanceStats(K)
    for prompt in prompts_from_prepared(prepared, "heldout", 6):
        out = decoder.generate(prompt, 48, stats)
        ref = model.generate(
            torch.tensor([prompt]), max_new_tokens=48, do_sample=False, eos_token_id=eos, pad_token_id=0
        )
        assert out == ref[0, len(prompt) :].tolist()
    assert stats.drafts > 0 and stats.samples == 6
    rates = stats.per_pos_rates
    assert all(a >= b for a, b in itertools.pairwise(rates))
    assert stats.mean_accept_len == pytest.approx(1 + sum(rates))


def test_eval_summary_and_trained_beats_untrained(stack, prepared, drafts, tmp_path):
    results = {}
    for name, path in drafts.items():
        cli(
            "eval",
            "--verifier",
            stack.verifier,
            "--draft",
            path,
            "--data",
            prepared,
            "--max-samples",
            16,
            "--max-new-tokens",
            48,
            "--summary-path",
            tmp_path / f"{name}.json",
        )
        results[name] = read_json(tmp_path / f"{name}.json")
    s = results["trained"]
    assert s["step"] == "eval" and s["k"] == K and len(s["per_pos"]) == K and s["samples"] == 16
    assert s["speedup"] == pytest.approx(
        expected_speedup(s["mean_accept_len"], K, s["draft_cost_ratio"]), rel=1e-3
    )
    # The quality assertion: training must clearly raise acceptance.
    assert s["mean_accept_len"] > results["untrained"]["mean_accept_len"] + 0.4, results


def test_cost_model():
    config = {
        "hidden_size": 4096,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "intermediate_size": 14336,
        "vocab_size": 128256,
    }
    # Llama-3.1-8B: ~7.5e9 parameters touched per token (embeddings excluded) -> ~15 GFLOP.
    assert 14e9 < per_token_flops_verifier(config) < 16e9
    assert expected_speedup(3.0, 3, 0.0) == 3.0
    assert expected_speedup(2.5, 4, 0.05) == pytest.approx(2.5 / 1.2)


def test_eval_reads_raw_dataset_prompts(stack, drafts, tmp_path):
    cli(
        "eval",
        "--verifier",
        stack.verifier,
        "--draft",
        drafts["trained"],
        "--data",
        stack.heldout_data,
        "--max-samples",
        3,
        "--max-new-tokens",
        16,
        "--num-speculative-tokens",
        2,
        "--summary-path",
        tmp_path / "s.json",
    )
    s = read_json(tmp_path / "s.json")
    assert s["samples"] == 3 and s["k"] == 2


COMPAT_PYTHON = REPO / ".venv-compat" / "bin" / "python"

UPSTREAM_RESAVE = """
import sys, torch
from safetensors.torch import load_file
from speculators.models import Eagle3DraftModel, Eagle3SpeculatorConfig
src, dst = sys.argv[1], sys.argv[2]
config = Eagle3SpeculatorConfig.from_pretrained(src)
config.transformer_layer_config._attn_implementation = "sdpa"
model = Eagle3DraftModel(config)
state = load_file(src + "/model.safetensors")
missing, unexpected = model.load_state_dict(state, strict=False)
assert not unexpected, unexpected
model.save_pretrained(dst)
print("saved", sorted(missing))
"""


def _compat_python() -> Path:
    if not COMPAT_PYTHON.exists():
        pytest.fail(f"{COMPAT_PYTHON} is missing: build it with `make compat`", pytrace=False)
    return COMPAT_PYTHON


@pytest.mark.compat
def test_vllm_parses_the_trained_draft(drafts):
    """vLLM 0.33.0's own speculators parser accepts the training output (tests/compat's snippet)."""
    snippet = REPO / "tests" / "compat" / "snippets" / "vllm_parse.py"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "VLLM_LOGGING_LEVEL": "ERROR"}
    proc = subprocess.run(
        [str(_compat_python()), str(snippet)],
        input=json.dumps({"dirs": [str(drafts["trained"])]}),
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    parsed = json.loads([x for x in proc.stdout.splitlines() if x.startswith("{")][-1])["parsed"][
        str(drafts["trained"])
    ]
    assert "error" not in parsed, parsed
    assert parsed["speculative"] == {"method": "eagle3", "num_speculative_tokens": K}
    assert parsed["pretrained"]["eagle_aux_hidden_state_layer_ids"] == [2, 4, 5]
    assert parsed["pretrained"]["norm_before_residual"] is True


@pytest.mark.compat
def test_eval_reads_a_draft_saved_by_upstream_speculators(stack, prepared, drafts, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [str(COMPAT_PYTHON), "-c", UPSTREAM_RESAVE, str(drafts["trained"]), str(tmp_path / "up")],
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    config = json.loads((tmp_path / "up" / "config.json").read_text())
    assert config["speculators_model_type"] == "eagle3" and "auto_map" in config
    results = {}
    for name, path in (("ours", drafts["trained"]), ("upstream", tmp_path / "up")):
        cli(
            "eval",
            "--verifier",
            stack.verifier,
            "--draft",
            path,
            "--data",
            prepared,
            "--max-samples",
            6,
            "--max-new-tokens",
            32,
            "--summary-path",
            tmp_path / f"{name}.json",
        )
        results[name] = read_json(tmp_path / f"{name}.json")
    # Same weights saved by upstream's code: the same acceptance.
    assert results["upstream"]["mean_accept_len"] == pytest.approx(
        results["ours"]["mean_accept_len"], abs=0.05
    )
