"""datagen: captured layers, sharding across workers, restart safety, fp8 storage, bad input, full disks."""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from speculators_core.cli.common import ExitCode
from speculators_core.data.errors import CorruptShardError, IncompatibleDataError
from speculators_core.data.hidden_states import HiddenStatesReader, plan_chunks, shard_dir
from speculators_core.data.store import TokenStore

from .conftest import cli, cli_subprocess, read_json, run_datagen


def test_captured_states_are_the_verifiers_layers(stack, prepared, hidden_states):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(stack.verifier)).eval()
    reader = HiddenStatesReader(hidden_states, "train")
    assert list(reader.identity.layer_ids) == [2, 4, 5]  # default [2, L//2, L-3] for L = 8
    store = TokenStore(prepared / "train")
    for sid in (0, len(store) // 2, len(store) - 1):
        ids, mask = store[sid]
        sample = reader.get(sid, torch.float32)
        assert (
            sample["input_ids"].tolist() == ids.tolist()
            and sample["loss_mask"].tolist() == mask.astype(bool).tolist()
        )
        with torch.no_grad():
            hs = model(torch.from_numpy(ids)[None], output_hidden_states=True).hidden_states
        want_aux = torch.cat([hs[i][0] for i in (2, 4, 5)], dim=-1)
        assert torch.allclose(sample["aux"], want_aux, rtol=2e-2, atol=2e-2)  # bf16 storage
        # `last` is before the final norm: norm(last) is the model's final hidden state.
        normed = model.model.norm(sample["last"][None])[0]
        assert torch.allclose(normed, hs[-1][0], rtol=3e-2, atol=3e-2)


def test_workers_split_the_data_without_overlap(prepared, hidden_states):
    n_train, n_held = len(TokenStore(prepared / "train")), len(TokenStore(prepared / "heldout"))
    ranges = []
    for i in range(2):
        manifest = read_json(shard_dir(hidden_states, i, 2) / "manifest.json")
        assert manifest["shard_index"] == i
        ranges += [(c["start"], c["end"]) for c in manifest["chunks"]["train"]]
    covered = sorted(s for a, b in ranges for s in range(a, b))
    assert covered == list(range(n_train))
    assert len(HiddenStatesReader(hidden_states, "heldout")) == n_held


def test_restarted_worker_keeps_finished_chunks_and_never_trusts_partial_ones(
    stack, prepared, hidden_states, tmp_path
):
    hs = tmp_path / "hs"
    shutil.copytree(hidden_states, hs)
    d = shard_dir(hs, 0, 2)
    chunks = sorted(d.glob("train-*.safetensors"))
    assert len(chunks) >= 3
    kept = chunks[0]
    kept_inode = kept.stat().st_ino
    # A crash mid-write leaves a temporary file and no manifest; another chunk was never written.
    (d / "manifest.json").unlink()
    (d / f".{chunks[1].name}.tmp-999").write_bytes(b"half a chunk")
    chunks[1].unlink()
    # A chunk truncated by a crash of the filesystem (renamed, then cut): must not be trusted either.
    data = chunks[2].read_bytes()
    chunks[2].write_bytes(data[: len(data) // 3])
    run_datagen(stack, prepared, hs, 0, "--summary-path", tmp_path / "s.json")
    summary = read_json(tmp_path / "s.json")
    assert summary["reused"] is False and summary["chunks_reused"] >= 1
    assert kept.stat().st_ino == kept_inode, "a finished chunk was rewritten"
    assert not list(d.glob(".*tmp*"))
    reader = HiddenStatesReader(hs, "train")
    original = HiddenStatesReader(hidden_states, "train")
    for sid in reader.sample_ids:
        assert torch.equal(reader.get(sid)["aux"], original.get(sid)["aux"])
    # Finished shard: a re-run is a no-op.
    run_datagen(stack, prepared, hs, 0, "--summary-path", tmp_path / "s2.json")
    assert read_json(tmp_path / "s2.json")["reused"] is True


def test_corrupt_shard_is_reported_with_its_file(hidden_states, tmp_path):
    hs = tmp_path / "hs"
    shutil.copytree(hidden_states, hs)
    victim = sorted(shard_dir(hs, 1, 2).glob("train-*.safetensors"))[0]
    raw = bytearray(victim.read_bytes())
    raw[8:16] = b"\xff" * 8  # corrupt the header, keep the size
    victim.write_bytes(bytes(raw))
    reader = HiddenStatesReader(hs, "train")
    sid = read_json(shard_dir(hs, 1, 2) / "manifest.json")["chunks"]["train"][0]["start"]
    with pytest.raises(CorruptShardError, match=victim.name):
        reader.get(sid)


def test_missing_shard_is_named(hidden_states, tmp_path):
    hs = tmp_path / "hs"
    shutil.copytree(hidden_states, hs)
    (shard_dir(hs, 1, 2) / "manifest.json").unlink()
    with pytest.raises(IncompatibleDataError, match=r"shards \[1\] of 2"):
        HiddenStatesReader(hs, "train")


def test_fp8_storage_halves_the_bytes_and_stays_close(stack, prepared, hidden_states, tmp_path):
    cli(
        "datagen",
        "--verifier",
        stack.verifier,
        "--data",
        prepared,
        "--output",
        tmp_path / "fp8",
        "--dtype",
        "float8",
        "--summary-path",
        tmp_path / "s.json",
    )
    fp8 = HiddenStatesReader(tmp_path / "fp8", "train")
    bf16 = HiddenStatesReader(hidden_states, "train")
    assert fp8.identity.dtype == "float8"
    bytes_fp8 = read_json(tmp_path / "s.json")["bytes"]
    bytes_bf16 = sum(
        read_json(shard_dir(hidden_states, i, 2) / "manifest.json")["totals"]["bytes"] for i in range(2)
    )
    assert bytes_fp8 < 0.6 * bytes_bf16
    for sid in (0, 7, 42):
        a, b = fp8.get(sid, torch.float32)["aux"], bf16.get(sid, torch.float32)["aux"]
        rel = (a - b).norm() / b.norm()
        assert rel < 0.05, rel


def test_explicit_and_invalid_layer_ids(stack, prepared, tmp_path):
    cli(
        "datagen",
        "--verifier",
        stack.verifier,
        "--data",
        prepared,
        "--output",
        tmp_path / "hs",
        "--layer-ids",
        "1,3,8",
    )
    assert list(HiddenStatesReader(tmp_path / "hs").identity.layer_ids) == [1, 3, 8]
    for bad in ("2,2,5", "1,3,9"):
        cli(
            "datagen",
            "--verifier",
            stack.verifier,
            "--data",
            prepared,
            "--output",
            tmp_path / "bad",
            "--layer-ids",
            bad,
            expect=ExitCode.USAGE,
        )


def test_shard_index_from_indexed_job_env(stack, prepared, tmp_path, monkeypatch):
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "1")
    cli(
        "datagen",
        "--verifier",
        stack.verifier,
        "--data",
        prepared,
        "--output",
        tmp_path / "hs",
        "--num-shards",
        3,
        "--summary-path",
        tmp_path / "s.json",
    )
    assert read_json(tmp_path / "s.json")["shard"] == 1
    assert (shard_dir(tmp_path / "hs", 1, 3) / "manifest.json").exists()


def test_full_disk_fails_clearly_and_keeps_finished_chunks(stack, prepared, tmp_path):
    """A file-size limit (RLIMIT_FSIZE) makes writes fail with EFBIG like a full volume does with ENOSPC."""
    # Learn the chunk sizes from an unrestricted run, then allow exactly the first chunk's size per file.
    lengths = TokenStore(prepared / "train").lengths()

    def margin(ct: int) -> float:
        tokens = [int(lengths[a:b].sum()) for a, b in plan_chunks(lengths, 0, len(lengths), ct)]
        return max(tokens[1:]) / tokens[0] if len(tokens) > 1 else 0.0

    chunk_tokens = max(range(1000, 3000, 50), key=margin)
    probe = tmp_path / "probe"
    base = ("datagen", "--verifier", stack.verifier, "--data", prepared, "--chunk-tokens", chunk_tokens)
    cli(*base, "--output", probe)
    sizes = [p.stat().st_size for p in sorted(shard_dir(probe, 0, 1).glob("train-*.safetensors"))]
    assert max(sizes[1:]) > sizes[0], "the test needs a later chunk larger than the first"
    out = tmp_path / "hs"

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (sizes[0], sizes[0]))

    args = (*base, "--output", out)
    proc = cli_subprocess(*args, preexec_fn=limit)
    assert proc.returncode == ExitCode.USAGE, proc.stderr
    assert "no space left" in proc.stderr and "re-run" in proc.stderr
    d = shard_dir(out, 0, 1)
    finished = {p.name: p.stat().st_ino for p in d.glob("*.safetensors")}
    assert finished and not (d / "manifest.json").exists() and not list(d.glob(".*tmp*"))
    proc = cli_subprocess(*args, "--summary-path", tmp_path / "s.json")
    assert proc.returncode == 0, proc.stderr
    assert read_json(tmp_path / "s.json")["chunks_reused"] == len(finished)
    assert all(os.stat(d / name).st_ino == ino for name, ino in finished.items())


def test_datagen_refuses_a_verifier_of_another_vocabulary(stack, prepared, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(stack.verifier, other)
    cfg = json.loads((other / "config.json").read_text())
    cfg["vocab_size"] += 8
    (other / "config.json").write_text(json.dumps(cfg))
    cli(
        "datagen",
        "--verifier",
        other,
        "--data",
        prepared,
        "--output",
        tmp_path / "hs",
        expect=ExitCode.INCOMPATIBLE,
    )


def test_chunk_files_record_the_run_identity(hidden_states):
    f = sorted(shard_dir(hidden_states, 0, 2).glob("*.safetensors"))[0]
    with safe_open(str(f), "pt") as h:
        ident = json.loads(h.metadata()["identity"])
    assert (
        ident["layer_ids"] == [2, 4, 5] and ident["num_shards"] == 2 and len(ident["data_fingerprint"]) == 64
    )


def test_prepared_path_is_required(stack, tmp_path):
    cli(
        "datagen",
        "--verifier",
        stack.verifier,
        "--data",
        tmp_path / "nothing",
        "--output",
        tmp_path / "hs",
        expect=ExitCode.USAGE,
    )
    assert not Path(tmp_path / "hs").exists()


def test_changed_heldout_split_invalidates_the_shards(stack, prepared, hidden_states, tmp_path):
    """Same training samples, other held-out samples (e.g. regenerated): the shards must not be reused."""
    data, hs = tmp_path / "data", tmp_path / "hs"
    shutil.copytree(prepared, data)
    shutil.copytree(hidden_states, hs)
    tokens = data / "heldout" / "tokens.bin"
    raw = bytearray(tokens.read_bytes())
    raw[:4] = (int.from_bytes(raw[:4], "little") ^ 1).to_bytes(4, "little")
    tokens.write_bytes(bytes(raw))
    meta = read_json(data / "meta.json")
    meta["heldout"]["fingerprint"] = "0" * 64
    (data / "meta.json").write_text(json.dumps(meta))
    run_datagen(stack, data, hs, 0, "--summary-path", tmp_path / "s.json")
    assert read_json(tmp_path / "s.json")["reused"] is False
    with pytest.raises(IncompatibleDataError, match=r"shards \[1\]"):
        HiddenStatesReader(hs, "heldout")  # shard 1 still holds the old data
    run_datagen(stack, data, hs, 1)
    reader, store = HiddenStatesReader(hs, "heldout"), TokenStore(data / "heldout")
    assert reader.get(0)["input_ids"].tolist() == store[0][0].tolist()
