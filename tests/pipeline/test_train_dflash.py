"""DFlash training (`--algorithm dflash`) on the tiny stack: upstream's recipe (block 16, CE with D-PACE
weights, anchors in the loss region), offline and online, resumed from a checkpoint, saved in the format
upstream and vLLM read, and evaluated with a block per verifier step: training must raise acceptance."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from speculators_core.train.dflash import position_weights, select_rows, slot_layout

from .conftest import cli, cli_subprocess, read_json
from .test_train import _run_until_checkpoint, max_diff, weights

BLOCK = 8


def _common(stack, prepared, *extra) -> list:
    return [
        *("--verifier", stack.verifier, "--data", prepared),
        *("--algorithm", "dflash", "--block-size", BLOCK, "--num-layers", 1, "--lr", 3e-3),
        *("--total-seq-len", 320, "--max-anchors", 64, "--no-validate"),
        *extra,
    ]


@pytest.fixture(scope="module")
def dflash_drafts(stack, prepared, hidden_states, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("dflash")
    offline = _common(stack, prepared, "--hidden-states", hidden_states)
    cli("train", *offline, "--max-steps", 0, "--output", root / "untrained", "--checkpoint-dir", root / "c0")
    cli(
        "train",
        *offline,
        *("--epochs", 4, "--output", root / "trained", "--checkpoint-dir", root / "c1"),
        *("--summary-path", root / "train.json"),
    )
    return {"untrained": root / "untrained", "trained": root / "trained", "summary": root / "train.json"}


def test_the_trained_draft_is_a_dflash_checkpoint(stack, dflash_drafts):
    config = json.loads((dflash_drafts["trained"] / "config.json").read_text())
    vocab = json.loads((Path(stack.verifier) / "config.json").read_text())["vocab_size"]
    assert config["speculators_model_type"] == "dflash" and config["architectures"] == ["DFlashDraftModel"]
    assert (config["block_size"], config["mask_token_id"], config["sliding_window_non_causal"]) == (
        BLOCK,
        vocab - 1,
        False,
    )
    assert config["speculators_config"]["proposal_methods"][0]["speculative_tokens"] == BLOCK - 1
    tensors = weights(dflash_drafts["trained"])
    assert "fc.weight" in tensors and "hidden_norm.weight" in tensors and "embed_tokens.weight" not in tensors
    summary = read_json(dflash_drafts["summary"])
    assert summary["algorithm"] == "dflash" and len(summary["acc"]) == BLOCK - 1
    assert summary["est_accept_len"] == pytest.approx(1 + sum(summary["acc"]), abs=1e-3)


def test_training_raises_block_acceptance(stack, prepared, dflash_drafts, tmp_path):
    results = {}
    for name in ("untrained", "trained"):
        cli(
            *("eval", "--verifier", stack.verifier, "--draft", dflash_drafts[name], "--data", prepared),
            *("--max-samples", 16, "--max-new-tokens", 48, "--summary-path", tmp_path / f"{name}.json"),
        )
        results[name] = read_json(tmp_path / f"{name}.json")
    trained = results["trained"]
    assert trained["k"] == BLOCK - 1 and trained["parallel_drafting"] is True
    print({n: r["mean_accept_len"] for n, r in results.items()})
    assert trained["mean_accept_len"] > results["untrained"]["mean_accept_len"] + 0.4, results


def test_online_and_resume(stack, prepared, hidden_states, tmp_path):
    """Online mode trains the same draft type; a run killed after a checkpoint resumes to the same end."""
    online = _common(stack, prepared, "--online")
    cli("train", *online, "--max-steps", 3, "--output", tmp_path / "on", "--checkpoint-dir", tmp_path / "con")
    assert json.loads((tmp_path / "on" / "config.json").read_text())["speculators_model_type"] == "dflash"
    offline = _common(stack, prepared, "--hidden-states", hidden_states, "--max-steps", 6)
    offline += ["--checkpoint-every-steps", 3, "--save-dtype", "float32"]
    full = ["train", *offline, "--output", tmp_path / "a", "--checkpoint-dir", tmp_path / "ca"]
    assert cli_subprocess(*full).returncode == 0
    resumed = ["train", *offline, "--output", tmp_path / "b", "--checkpoint-dir", tmp_path / "cb"]
    _run_until_checkpoint(resumed, 3)  # SIGKILL once step 3 is saved
    proc = cli_subprocess(*resumed)
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
    assert any(e["event"] == "resume" and e["step"] == 3 for e in events)
    a, b = weights(tmp_path / "a"), weights(tmp_path / "b")
    assert all(torch.equal(a[k], b[k]) for k in a)  # the same anchors and order after the resume


@pytest.mark.parametrize("fsdp", [False, True], ids=["ddp", "fsdp2"])
def test_two_processes_train_like_one(stack, prepared, hidden_states, tmp_path, fsdp):
    """DDP or FSDP2 over two CPU processes (torchrun, gloo) ends where one process with the same global
    batch does: each packed row draws the same anchors whichever rank trains it."""
    extra = ["--hidden-states", hidden_states, "--max-steps", 3, "--batch-rows", 2, "--save-dtype", "float32"]
    extra += ["--fsdp"] if fsdp else []
    one = [
        "train",
        *_common(stack, prepared, *extra),
        "--output",
        tmp_path / "one",
        "--checkpoint-dir",
        tmp_path / "c1",
    ]
    cli(*one)
    two = [
        "train",
        *_common(stack, prepared, *extra),
        "--output",
        tmp_path / "two",
        "--checkpoint-dir",
        tmp_path / "c2",
    ]
    proc = cli_subprocess(
        *two, "--summary-path", tmp_path / "s.json", env={"NNODES": "1", "NPROC_PER_NODE": "2"}
    )
    assert proc.returncode == 0, f"{proc.stderr[:4000]}\n...\n{proc.stderr[-3000:]}"
    assert read_json(tmp_path / "s.json")["world_size"] == 2
    assert max_diff(weights(tmp_path / "one"), weights(tmp_path / "two")) < 1e-5


def test_anchor_and_slot_layout():
    loss_mask = torch.tensor([[0, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1]], dtype=torch.bool)
    docs = torch.tensor([[0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1]])
    rows, valid = select_rows(loss_mask, docs, 50, torch.Generator().manual_seed(0))
    assert rows[valid].tolist() == [1, 2, 3, 4, 5, 6, 7, 9, 10]  # assistant rows, not the last row
    target_rows, slots = slot_layout(torch.tensor([[6]]), torch.tensor([[True]]), loss_mask, docs, 4)
    # Block at row 6 predicts x_8, x_9, x_10 in slots 1..3: x_8 (row 7) counts; rows 8, 9 lie in doc 1.
    assert slots[0, 0].tolist() == [False, True, False, False]
    assert target_rows[0, 0].tolist() == [5, 6, 7, 8]
    ce = torch.tensor([[0.0, 0.1, 0.2, 0.3]])
    mask = torch.tensor([[False, True, True, True]])
    fixed = position_weights(ce, mask, "fixed-exp-decay", gamma=4.0, alpha=0.5)
    assert fixed.tolist()[0] == pytest.approx([0.0, 1.0, 0.7788, 0.6065], abs=1e-4)
    dpace = position_weights(ce, mask, "dpace", gamma=4.0, alpha=0.5)[0]
    assert dpace[0] == 0 and dpace[1] > dpace[2] > dpace[3] > 0  # a slot weighs the run it can extend
