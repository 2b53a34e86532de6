"""prepare-data: row shapes, loss masks from the real chat template, reasoning, packing limits, bad rows."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from speculators_core.cli.common import ExitCode
from speculators_core.data.chat import ChatEncoder, TemplateError
from speculators_core.data.loading import normalize_row
from speculators_core.data.store import TokenStore
from speculators_core.testing import corpus
from speculators_core.testing.tokenizer import with_template

from .conftest import cli, read_json


def masked_text(tok, sample) -> str:
    return tok.decode([t for t, m in zip(sample.input_ids, sample.loss_mask, strict=True) if m])


@pytest.fixture(scope="module")
def tokenizers(stack, tmp_path_factory):
    root = tmp_path_factory.mktemp("tok")
    toks = {
        name: with_template(stack.verifier, root / name, name)
        for name in ("chatml", "qwen3", "generation", "broken")
    }
    toks["_root"] = root
    return toks


CONV = [
    {"role": "system", "content": "you are a helpful assistant ."},
    {"role": "user", "content": "count from 3 to 5 ."},
    {"role": "assistant", "content": "<think> start at 3 . </think> 3 , 4 , 5 ."},
    {"role": "user", "content": "spell cat ."},
    {"role": "assistant", "content": "cat is spelled c - a - t ."},
]


def test_mask_covers_exactly_the_assistant_turns(tokenizers):
    tok = tokenizers["chatml"]
    [sample] = ChatEncoder(tok, "keep").encode(CONV)
    text = masked_text(tok, sample)
    assert (
        text == "<think> start at 3 . </think> 3 , 4 , 5 .<|im_end|>\ncat is spelled c - a - t .<|im_end|>\n"
    )
    # Everything outside the mask is the prompt side: system, user turns and the template's headers.
    prompt = tok.decode([t for t, m in zip(sample.input_ids, sample.loss_mask, strict=True) if not m])
    assert "count from 3 to 5" in prompt and "spell cat" in prompt and "c - a - t" not in prompt
    assert sample.input_ids == list(
        tok.apply_chat_template(CONV, tokenize=True, return_dict=True)["input_ids"]
    )


def test_reasoning_strip_removes_think_blocks(tokenizers):
    tok = tokenizers["chatml"]
    [sample] = ChatEncoder(tok, "strip").encode(CONV)
    text = tok.decode(sample.input_ids)
    assert "<think>" not in text and "start at 3" not in text
    assert masked_text(tok, sample).startswith("3 , 4 , 5 .")


def test_history_rewriting_template_splits_into_on_policy_samples(tokenizers):
    tok = tokenizers["qwen3"]
    samples = ChatEncoder(tok, "keep").encode(CONV)
    # Turn 1 keeps its <think> only while it is the latest turn: one sample per rendering of the history.
    assert len(samples) == 2
    assert masked_text(tok, samples[0]).startswith("<think> start at 3 .")
    assert masked_text(tok, samples[1]) == "cat is spelled c - a - t .<|im_end|>\n"
    second = tok.decode(samples[1].input_ids)
    assert "<think>" not in second, "the second sample must carry the history as the verifier saw it then"
    assert second == tok.apply_chat_template(CONV, tokenize=False)


def test_generation_tag_template_uses_the_template_mask(tokenizers):
    tok = tokenizers["generation"]
    enc = ChatEncoder(tok, "keep")
    assert enc.uses_generation_tags
    [sample] = enc.encode(CONV)
    assert "cat is spelled" in masked_text(tok, sample) and "spell cat" not in masked_text(tok, sample)


def test_template_that_cannot_mark_assistant_turns_is_refused(tokenizers):
    with pytest.raises(TemplateError, match="cannot mark assistant turns"):
        ChatEncoder(tokenizers["broken"], "keep")


def test_tokenizer_without_template_is_refused(tokenizers):
    import copy

    tok = copy.deepcopy(tokenizers["chatml"])
    tok.chat_template = None
    with pytest.raises(TemplateError, match="no chat_template"):
        ChatEncoder(tok, "keep")


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ([1, 2], "malformed_row"),
        ({"text": "hello"}, "no_messages"),
        ({"conversations": []}, "empty_conversation"),
        ({"conversations": [{"from": "alien", "value": "x"}]}, "unknown_role"),
        ({"messages": [{"role": "user", "content": "hi"}]}, "no_assistant_turn"),
        (
            {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "  "}]},
            "empty_assistant_turn",
        ),
        ({"messages": [{"role": "user", "content": 3}]}, "malformed_message"),
        ({"messages": [{"role": "assistant", "content": "hi"}]}, "no_prompt"),
    ],
)
def test_bad_rows_get_a_reason(row, reason):
    messages, problem = normalize_row(row)
    assert messages is None and problem is not None and problem[0] == reason


def test_row_shapes_normalise_to_messages():
    share = {"conversations": [{"from": "human", "value": "a"}, {"from": "gpt", "value": "b"}]}
    single = {"prompt": "a", "response": "b"}
    alpaca = {"instruction": "a", "output": "b"}
    want = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
    for row in (share, single, alpaca, {"messages": want}):
        assert normalize_row(row) == (want, None)


def test_prepare_counts_every_skipped_row_and_keeps_the_rest(stack, tmp_path):
    src = tmp_path / "dirty.jsonl"
    good = [corpus.to_sharegpt(m) for m in corpus.conversations(20, seed=5)]
    lines = [json.dumps(r) for r in good]
    lines += ["{not json", "", json.dumps({"text": "x"}), json.dumps({"messages": []})]
    lines += [
        json.dumps({"messages": [{"role": "robot", "content": "x"}, {"role": "assistant", "content": "y"}]})
    ]
    random.Random(0).shuffle(lines)
    src.write_text("\n".join(lines) + "\n")
    out = tmp_path / "prep"
    cli(
        "prepare-data",
        "--verifier",
        stack.verifier,
        "--data",
        src,
        "--output",
        out,
        "--summary-path",
        tmp_path / "s.json",
        "--holdout-fraction",
        0,
    )
    summary = read_json(tmp_path / "s.json")
    assert summary["step"] == "prepare"
    assert summary["skipped"] == {
        "empty_conversation": 1,
        "empty_row": 1,
        "malformed_json": 1,
        "no_messages": 1,
        "unknown_role": 1,
    }
    assert summary["rows"] == 25 and summary["samples"] == 20 and summary["heldout"] == 0
    store = TokenStore(out / "train")
    assert len(store) == 20 and store.num_tokens == summary["tokens"]


def test_long_samples_are_truncated_or_skipped_and_counted(stack, tmp_path):
    lengths = {}
    for mode in ("truncate", "skip"):
        out = tmp_path / mode
        cli(
            "prepare-data",
            "--verifier",
            stack.verifier,
            "--data",
            stack.train_data,
            "--output",
            out,
            "--max-length",
            48,
            "--max-samples",
            60,
            "--long-samples",
            mode,
            "--summary-path",
            tmp_path / f"{mode}.json",
        )
        summary = read_json(tmp_path / f"{mode}.json")
        store = TokenStore(out / "train")
        assert store.lengths().max() <= 48
        lengths[mode] = summary
    assert lengths["truncate"]["truncated"] > 0
    assert lengths["skip"]["skipped"].get("too_long", 0) == lengths["truncate"]["truncated"] - lengths[
        "truncate"
    ]["skipped"].get("no_assistant_tokens", 0)


def test_token_frequencies_count_masked_train_tokens(prepared):
    store = TokenStore(prepared / "train")
    freq = np.load(prepared / "token_freq.npy")
    recount = np.zeros_like(freq)
    for ids, mask in store:
        np.add.at(recount, ids[mask.astype(bool)], 1)
    assert (
        np.array_equal(freq, recount)
        and freq.sum() == read_json(prepared / "meta.json")["train"]["assistant_tokens"]
    )


def test_heldout_split_is_disjoint_and_deterministic(stack, prepared, tmp_path):
    meta = read_json(prepared / "meta.json")
    assert meta["heldout"]["samples"] > 0
    train = {tuple(x[0].tolist()) for x in TokenStore(prepared / "train")}
    held = {tuple(x[0].tolist()) for x in TokenStore(prepared / "heldout")}
    assert not train & held
    # A re-run with the same inputs is a no-op: nothing is rewritten.
    before = (prepared / "train" / "tokens.bin").stat().st_mtime_ns
    cli(
        "prepare-data",
        "--verifier",
        stack.verifier,
        "--data",
        stack.train_data,
        "--output",
        prepared,
        "--max-length",
        160,
        "--max-samples",
        300,
        "--holdout-fraction",
        0.1,
        "--summary-path",
        tmp_path / "s.json",
    )
    assert read_json(tmp_path / "s.json")["reused"] is True
    assert (prepared / "train" / "tokens.bin").stat().st_mtime_ns == before


def test_datasets_save_to_disk_input(stack, tmp_path):
    from datasets import Dataset

    rows = [corpus.to_sharegpt(m) for m in corpus.conversations(12, seed=9)]
    Dataset.from_list(rows).save_to_disk(str(tmp_path / "ds"))
    cli(
        "prepare-data",
        "--verifier",
        stack.verifier,
        "--data",
        tmp_path / "ds",
        "--output",
        tmp_path / "out",
        "--holdout-fraction",
        0,
        "--summary-path",
        tmp_path / "s.json",
    )
    assert read_json(tmp_path / "s.json")["samples"] == 12


def test_broken_template_exits_incompatible(stack, tokenizers, tmp_path):
    broken = tokenizers["_root"] / "broken"
    assert broken.resolve() != Path(stack.verifier).resolve()
    for f in Path(stack.verifier).glob("*.safetensors"):
        (broken / f.name).symlink_to(f)
    (broken / "config.json").write_text((Path(stack.verifier) / "config.json").read_text())
    rc = cli(
        "prepare-data",
        "--verifier",
        broken,
        "--data",
        stack.train_data,
        "--output",
        tmp_path / "o",
        expect=ExitCode.INCOMPATIBLE,
    )
    assert rc == ExitCode.INCOMPATIBLE and not (tmp_path / "o").exists()


def test_missing_data_file_exits_usage(stack, tmp_path):
    cli(
        "prepare-data",
        "--verifier",
        stack.verifier,
        "--data",
        tmp_path / "nope.jsonl",
        "--output",
        tmp_path / "o",
        expect=ExitCode.USAGE,
    )
