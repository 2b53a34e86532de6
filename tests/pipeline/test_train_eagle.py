"""EAGLE-1/HASS training (`--algorithm eagle`): the legacy speculators format, the verifier's normed last
state as feature, HASS's context alignment through the TTT unroll; evaluated like EAGLE-3 drafts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from speculators_core.cli.common import ExitCode

from .conftest import cli, read_json
from .test_train import max_diff, train_args, weights

K = 3


@pytest.fixture(scope="module")
def eagle_drafts(stack, prepared, hidden_states, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("eagle")
    common = [
        *("--verifier", stack.verifier, "--data", prepared, "--hidden-states", hidden_states),
        *("--algorithm", "eagle", "--lr", 2e-3, "--total-seq-len", 320, "--num-speculative-tokens", K),
        "--no-validate",
    ]
    cli("train", *common, "--max-steps", 0, "--output", root / "untrained", "--checkpoint-dir", root / "c0")
    cli(
        "train",
        *common,
        *("--epochs", 3, "--output", root / "trained", "--checkpoint-dir", root / "c1"),
        *("--summary-path", root / "train.json"),
    )
    return {"untrained": root / "untrained", "trained": root / "trained", "summary": root / "train.json"}


def test_eagle_draft_is_saved_in_the_legacy_format(stack, eagle_drafts):
    config = json.loads((eagle_drafts["trained"] / "config.json").read_text())
    assert config["speculators_model_type"] == "eagle"
    assert config["speculators_config"]["algorithm"] == "eagle"
    assert config["fusion_bias"] is True and config["layernorms"] is False  # HASS layout
    tensors = weights(eagle_drafts["trained"])
    # The format stores only the draft's own weights; embeddings and lm_head are the verifier's.
    assert "fusion_fc.bias" in tensors and "fusion_fc.weight" in tensors
    assert not any(k.startswith(("embed_tokens", "lm_head", "layers.")) for k in tensors)
    hidden = json.loads((Path(stack.verifier) / "config.json").read_text())["hidden_size"]
    assert tuple(tensors["fusion_fc.weight"].shape) == (hidden, 2 * hidden)
    summary = read_json(eagle_drafts["summary"])
    assert (
        summary["algorithm"] == "eagle"
        and summary["draft_vocab_size"] == config["transformer_layer_config"]["vocab_size"]
    )


def test_trained_eagle_draft_beats_the_untrained_one(stack, prepared, eagle_drafts, tmp_path):
    results = {}
    for name in ("untrained", "trained"):
        cli(
            *("eval", "--verifier", stack.verifier, "--draft", eagle_drafts[name], "--data", prepared),
            *("--max-samples", 16, "--max-new-tokens", 48, "--summary-path", tmp_path / f"{name}.json"),
        )
        results[name] = read_json(tmp_path / f"{name}.json")
    assert results["trained"]["k"] == K
    assert results["trained"]["mean_accept_len"] > results["untrained"]["mean_accept_len"] + 0.4, results


def test_eagle_online_trains_like_offline(stack, prepared, hidden_states, tmp_path):
    # FAST sets a draft vocabulary; EAGLE-1/HASS always uses the verifier's: drop the flag.
    args = _without_flag(
        train_args(stack, prepared, hidden_states, tmp_path / "off", "--algorithm", "eagle"),
        "--draft-vocab-size",
    )
    cli(*args, "--summary-path", tmp_path / "off.json")
    online = _without_flag(
        train_args(stack, prepared, hidden_states, tmp_path / "on", "--algorithm", "eagle"),
        "--draft-vocab-size",
    )
    i = online.index("--hidden-states")
    online[i : i + 2] = ["--online"]
    cli(*online, "--summary-path", tmp_path / "on.json")
    off, on = read_json(tmp_path / "off.json"), read_json(tmp_path / "on.json")
    assert on["mode"] == "online" and off["mode"] == "offline" and on["algorithm"] == "eagle"
    assert abs(on["loss"] - off["loss"]) < 1e-3 * abs(off["loss"])
    assert max_diff(weights(tmp_path / "off" / "model"), weights(tmp_path / "on" / "model")) < 1e-4


def test_eagle_refuses_what_its_format_cannot_hold(stack, prepared, hidden_states, tmp_path):
    base = ("--algorithm", "eagle")
    cli(
        *train_args(stack, prepared, hidden_states, tmp_path / "a", *base), expect=ExitCode.USAGE
    )  # vocab 256
    args = _without_flag(
        train_args(stack, prepared, hidden_states, tmp_path / "b", *base), "--draft-vocab-size"
    )
    cli(*args, "--num-layers", 2, expect=ExitCode.USAGE)


def test_plain_eagle1_layout_has_no_fusion_bias(stack, prepared, hidden_states, tmp_path):
    args = _without_flag(
        train_args(stack, prepared, hidden_states, tmp_path, "--algorithm", "eagle", "--no-fusion-bias"),
        "--draft-vocab-size",
    )
    cli(*args, "--max-steps", 1)
    assert json.loads((tmp_path / "model" / "config.json").read_text())["fusion_bias"] is False
    assert "fusion_fc.bias" not in weights(tmp_path / "model")
    assert torch.isfinite(weights(tmp_path / "model")["fusion_fc.weight"]).all()


def _without_flag(argv: list, flag: str) -> list:
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a == flag:
            skip = True
            continue
        out.append(a)
    return out
