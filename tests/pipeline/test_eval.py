"""Offline evaluation: lossless greedy speculative decoding, acceptance statistics, cost model, quality."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import torch

from speculators_core.cli.common import TERMINATION_MESSAGE_LIMIT, write_summary
from speculators_core.eval.cost import expected_speedup, per_token_flops_verifier
from speculators_core.eval.prompts import (
    PROMPT_SET_FORMAT,
    prompts_digest,
    prompts_from_prepared,
    read_prompt_set,
    write_prompt_set,
)
from speculators_core.eval.run import summarize
from speculators_core.eval.simulate import AcceptanceStats, SpecDecoder, verify_sampled

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


def test_rejection_sampling_of_greedy_drafts_keeps_the_verifiers_distribution():
    """vLLM's rule for drafts without probabilities: the first emitted token is distributed as p_T whatever
    the draft proposes, and draft i is accepted with probability p_T(d_i) once its predecessors were."""
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05], [0.1, 0.6, 0.2, 0.1], [0.25, 0.25, 0.25, 0.25]])
    drafts = [1, 1]  # the first draft is not the verifier's top token
    generator = torch.Generator().manual_seed(0)
    trials = 40000
    first = torch.zeros(4)
    accepted = [0, 0]
    for _ in range(trials):
        a, token = verify_sampled(probs, drafts, generator)
        first[drafts[0] if a > 0 else token] += 1
        for i in range(a):
            accepted[i] += 1
        if a < len(drafts):
            assert token != drafts[a]  # the rejected draft is never the recovered token
    assert (first / trials - probs[0]).abs().max() < 0.01
    assert accepted[0] / trials == pytest.approx(0.3, abs=0.01)
    assert accepted[1] / accepted[0] == pytest.approx(0.6, abs=0.015)


def test_sampled_eval_at_a_vanishing_temperature_is_the_greedy_eval(stack, prepared, drafts, tmp_path):
    def run(name, *extra):
        cli(
            *("eval", "--verifier", stack.verifier, "--draft", drafts["trained"], "--data", prepared),
            *(
                "--max-samples",
                8,
                "--max-new-tokens",
                32,
                "--summary-path",
                tmp_path / f"{name}.json",
                *extra,
            ),
        )
        return read_json(tmp_path / f"{name}.json")

    greedy, cold = run("greedy"), run("cold", "--temperature", "1e-4")
    assert cold["temperature"] == 1e-4 and greedy["temperature"] == 0.0
    assert cold["per_pos"] == greedy["per_pos"] and cold["drafts"] == greedy["drafts"]
    hot, again, other = (
        run("hot", "--temperature", 1),
        run("again", "--temperature", 1),
        run("other", "--temperature", 1, "--seed", 1),
    )
    assert hot["per_pos"] == again["per_pos"]  # seeded
    assert hot["per_pos"] != other["per_pos"]
    assert hot["mean_accept_len"] < greedy["mean_accept_len"]  # a sampled verifier agrees less often


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


def _vocab(stack: Any) -> int:
    return int(read_json(stack.verifier / "config.json")["vocab_size"])


def _eval(stack: Any, draft: Path, data: Path, summary: Path, *extra: Any, expect: int = 0) -> dict[str, Any]:
    """A short eval (few prompts, short continuations): the tests below compare runs, not quality."""
    cli(
        *("eval", "--verifier", stack.verifier, "--draft", draft, "--data", data),
        *("--max-samples", 4, "--max-new-tokens", 24, "--summary-path", summary, *extra),
        expect=expect,
    )
    return read_json(summary) if expect == 0 else {}


def test_eval_max_speculative_tokens_gives_every_k(stack, prepared, drafts, tmp_path):
    k, m = 2, 5
    s = _eval(
        stack,
        drafts["trained"],
        prepared,
        tmp_path / "m.json",
        "--num-speculative-tokens",
        k,
        "--max-speculative-tokens",
        m,
    )
    assert s["k"] == k and s["max_k"] == m and s["drafts"] > 0
    lengths, rates, ratio = s["accept_len_by_k"], s["per_pos_all"], s["draft_cost_ratio"]
    assert len(lengths) == len(rates) == len(s["cond_per_pos"]) == len(s["speedup_by_k"]) == m
    # The historical keys are read at k off the M-draft run.
    assert lengths[k - 1] == s["mean_accept_len"]
    assert rates[:k] == s["per_pos"]
    assert s["acceptance_rate"] == pytest.approx(sum(rates[:k]) / k, abs=2e-4)
    assert s["speedup"] == pytest.approx(expected_speedup(lengths[k - 1], k, ratio), abs=2e-4)
    assert all(a <= b for a, b in itertools.pairwise(lengths))
    assert all(a >= b for a, b in itertools.pairwise(rates))
    assert all(0.0 <= q <= 1.0 for q in s["cond_per_pos"])
    for j, (length, speedup) in enumerate(zip(lengths, s["speedup_by_k"], strict=True), 1):
        assert speedup == pytest.approx(length / (1 + j * ratio), abs=2e-4)
    # Decoding at k=M directly follows the same trajectory: the same acceptance at M.
    at_m = _eval(stack, drafts["trained"], prepared, tmp_path / "k.json", "--num-speculative-tokens", m)
    assert at_m["max_k"] == m and at_m["per_pos_all"] == at_m["per_pos"]
    assert at_m["mean_accept_len"] == pytest.approx(lengths[m - 1], abs=1e-3)
    assert at_m["drafts"] == s["drafts"] and at_m["prompt_set"] == s["prompt_set"]


def test_eval_max_speculative_tokens_below_k_is_a_usage_error(stack, prepared, drafts, tmp_path, capsys):
    _eval(
        stack, drafts["trained"], prepared, tmp_path / "s.json", "--max-speculative-tokens", K - 1, expect=2
    )
    assert "--max-speculative-tokens" in capsys.readouterr().err
    assert not (tmp_path / "s.json").exists()


def test_eval_prompt_set_fixes_the_prompts(stack, prepared, drafts, tmp_path):
    shared = tmp_path / "workspace" / "eval" / "prompts.jsonl"  # parent directories do not exist yet
    args = ("--num-speculative-tokens", 2, "--prompt-set", shared)
    first = _eval(stack, drafts["trained"], prepared, tmp_path / "1.json", *args)
    assert first["prompt_set"]["created"] is True and first["prompt_set"]["prompts"] == 4
    header = json.loads(shared.read_text().splitlines()[0])
    assert header == {"format": PROMPT_SET_FORMAT, "vocab_size": _vocab(stack), "count": 4}
    expected = prompts_from_prepared(prepared, "heldout", 4)
    assert read_prompt_set(shared, _vocab(stack)) == expected
    assert first["prompt_set"]["sha256"] == prompts_digest(expected)
    assert sorted(p.name for p in shared.parent.iterdir()) == ["prompts.jsonl"]  # no temporary left
    written = shared.read_bytes()
    # Other data (the train split) with the same set: the set's prompts, unchanged file.
    second = _eval(stack, drafts["trained"], prepared, tmp_path / "2.json", *args, "--split", "train")
    assert second["prompt_set"] == {**first["prompt_set"], "created": False}
    assert second["mean_accept_len"] == first["mean_accept_len"]
    assert shared.read_bytes() == written
    # Without the set, that data gives other prompts: the set is what made the two runs comparable.
    other = _eval(
        stack,
        drafts["trained"],
        prepared,
        tmp_path / "3.json",
        "--num-speculative-tokens",
        2,
        "--split",
        "train",
    )
    assert other["prompt_set"]["created"] is False and other["prompt_set"]["prompts"] == 4
    assert other["prompt_set"]["sha256"] != first["prompt_set"]["sha256"]


def test_eval_rejects_a_bad_prompt_set(stack, prepared, drafts, tmp_path, capsys):
    good = [json.dumps({"format": PROMPT_SET_FORMAT, "vocab_size": _vocab(stack), "count": 1})]
    cases = {
        "vocab": [
            json.dumps({"format": PROMPT_SET_FORMAT, "vocab_size": _vocab(stack) + 1, "count": 1}),
            '{"input_ids": [1, 2]}',
        ],
        "garbage": ["\x00 not json at all"],
        "out_of_range": [*good, json.dumps({"input_ids": [1, _vocab(stack)]})],
        "not_ints": [*good, '{"input_ids": [1, 2.5]}'],
        "truncated": [
            json.dumps({"format": PROMPT_SET_FORMAT, "vocab_size": _vocab(stack), "count": 3}),
            '{"input_ids": [1, 2]}',
        ],
    }
    for name, lines in cases.items():
        path = tmp_path / f"{name}.jsonl"
        path.write_text("\n".join(lines) + "\n")
        before = path.read_bytes()
        _eval(stack, drafts["trained"], prepared, tmp_path / "s.json", "--prompt-set", path, expect=2)
        err = capsys.readouterr().err
        assert "--prompt-set" in err and str(path) in err and "delete it" in err, (name, err)
        assert path.read_bytes() == before, name
    assert not (tmp_path / "s.json").exists()


def test_prompt_set_creation_never_overwrites_a_winner(tmp_path):
    path = tmp_path / "set.jsonl"
    winner, loser = [[1, 2, 3], [4, 5]], [[7, 8]]
    assert write_prompt_set(path, winner, 16) == (winner, True)
    before = path.read_bytes()
    # A second creator (it saw no file, then lost the race) gets the winner's prompts.
    assert write_prompt_set(path, loser, 16) == (winner, False)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set.jsonl"]


def test_prompt_set_on_a_volume_without_hard_links(tmp_path, monkeypatch):
    """Some CSI/FUSE volumes refuse link(2) (stand-in: os.link raising EPERM, as they do): the set is still
    written whole (renamed into place) and a second writer still gets the first one's prompts."""
    import errno

    def no_links(src, dst):
        raise PermissionError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    path = tmp_path / "set.jsonl"
    assert write_prompt_set(path, [[1, 2]], 16) == ([[1, 2]], True)
    assert write_prompt_set(path, [[3]], 16) == ([[1, 2]], False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set.jsonl"]


def test_eval_summary_fits_the_termination_message_at_16(tmp_path):
    stats = AcceptanceStats(16)
    for i in range(997):  # every acceptance length 0..16, rates with long decimal expansions
        stats.record(i % 17)
    stats.samples, stats.generated = 64, 128 * 64
    prompts = [[1, 2, 3]] * 64
    draft = "/workspace/" + "d" * 180 + "/model"  # a long draft path
    summary = summarize(stats, 4, 0.0312345, draft=draft, prompts=prompts, created=True)
    assert summary["max_k"] == 16 and len(summary["speedup_by_k"]) == 16
    text = json.dumps(summary)
    assert len(text.encode()) < TERMINATION_MESSAGE_LIMIT, len(text)
    write_summary(tmp_path / "s.json", summary)
    assert read_json(tmp_path / "s.json") == summary  # nothing trimmed


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


@pytest.fixture(scope="module")
def dflash_draft(stack, tmp_path_factory) -> Path:
    """An untrained DFlash draft of the tiny verifier (block 8: 7 drafts per step)."""
    from speculators_core.models import DFlashDraftModel, build_dflash_config

    vc = read_json(Path(stack.verifier) / "config.json")
    config = build_dflash_config(
        vc, verifier_name_or_path=str(stack.verifier), mask_token_id=0, num_layers=1, block_size=8
    )
    torch.manual_seed(0)
    model = DFlashDraftModel(config)
    model.attach_verifier(stack.verifier)
    out = tmp_path_factory.mktemp("dflash") / "draft"
    model.save_pretrained(out)
    return out


def test_block_drafting_is_lossless(stack, prepared, dflash_draft):
    """The simulator drafts a whole block per verifier step; the output is still the verifier's own."""
    from speculators_core.data.features import VerifierFeatures, load_verifier
    from speculators_core.models import load_draft_model

    model = load_verifier(stack.verifier, device="cpu")
    draft = load_draft_model(dflash_draft, dtype=torch.float32)
    features = VerifierFeatures(model, draft.config.aux_hidden_state_layer_ids)
    eos = model.generation_config.eos_token_id
    decoder = SpecDecoder(model, draft, features, k=7, eos_ids=[eos])
    stats = AcceptanceStats(7)
    for prompt in prompts_from_prepared(prepared, "heldout", 4):
        out = decoder.generate(prompt, 32, stats)
        ref = model.generate(
            torch.tensor([prompt]), max_new_tokens=32, do_sample=False, eos_token_id=eos, pad_token_id=0
        )
        assert out == ref[0, len(prompt) :].tolist()
    assert stats.drafts > 0 and len(stats.per_pos_rates) == 7


def test_eval_of_a_dflash_draft_counts_one_draft_pass_per_step(stack, prepared, dflash_draft, tmp_path):
    cli(
        "eval", "--verifier", stack.verifier, "--draft", dflash_draft, "--data", prepared,
        "--max-samples", 4, "--max-new-tokens", 24, "--summary-path", tmp_path / "s.json",
    )  # fmt: skip
    s = read_json(tmp_path / "s.json")
    assert (s["k"], len(s["per_pos"]), s["parallel_drafting"]) == (7, 7, True)
    assert s["speedup"] == pytest.approx(s["mean_accept_len"] / (1 + s["draft_cost_ratio"]), rel=1e-3)
    # More than a block drafts is refused with the limit.
    cli(
        "eval", "--verifier", stack.verifier, "--draft", dflash_draft, "--data", prepared,
        "--num-speculative-tokens", 8, "--summary-path", tmp_path / "x.json", expect=2,
    )  # fmt: skip
