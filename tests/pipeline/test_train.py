"""Training: losses, vocab mapping, packing, resume determinism, DDP/FSDP equivalence, online == offline."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from speculators_core.cli.common import ExitCode
from speculators_core.train.batches import epoch_plan, pack_rows
from speculators_core.train.losses import distill_loss, reference_loss
from speculators_core.train.vocab import build_vocab_mapping

from .conftest import REPO, cli, cli_subprocess, read_json

# Small and quick: few optimizer steps over rows of 512 tokens, fp32 output for exact comparisons.
FAST = (
    "--epochs",
    1,
    "--max-steps",
    6,
    "--lr",
    1e-3,
    "--draft-vocab-size",
    256,
    "--total-seq-len",
    512,
    "--save-dtype",
    "float32",
    "--no-validate",
    "--checkpoint-every-steps",
    0,
)


def weights(directory: Path) -> dict[str, torch.Tensor]:
    return load_file(str(directory / "model.safetensors"))


def max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


def train_args(stack, prepared, hidden_states, out: Path, *extra) -> list:
    return [
        "train",
        "--verifier",
        stack.verifier,
        "--data",
        prepared,
        "--hidden-states",
        hidden_states,
        "--output",
        out / "model",
        "--checkpoint-dir",
        out / "ckpt",
        *FAST,
        *extra,
    ]


@pytest.mark.parametrize("kind", ["kl", "ce", "lk"])
def test_fused_loss_matches_autograd(kind):
    torch.manual_seed(0)
    logits = torch.randn(300, 97, requires_grad=True)
    targets = torch.randn(300, 97) * 3
    w = torch.rand(300)
    fused = distill_loss(logits, targets, w, kind, chunk_rows=64)
    fused.backward()
    g = logits.grad.clone()
    logits.grad = None
    ref = reference_loss(logits, targets, w, kind)
    ref.backward()
    assert torch.allclose(fused, ref, rtol=1e-5) and torch.allclose(g, logits.grad, atol=1e-6)


@pytest.mark.parametrize("kind", ["kl", "ce", "lk"])
def test_fused_loss_reports_the_drafts_probability_of_the_verifiers_top_token(kind):
    torch.manual_seed(1)
    logits = torch.randn(130, 50, requires_grad=True)
    targets = torch.randn(130, 50) * 2
    w = torch.rand(130)
    accept = torch.full((130,), -1.0)
    with_accept = distill_loss(logits, targets, w, kind, chunk_rows=32, accept_out=accept)
    with_accept.backward()
    g = logits.grad.clone()
    logits.grad = None
    plain = distill_loss(logits, targets, w, kind, chunk_rows=32)
    plain.backward()
    want = torch.softmax(logits.detach(), -1).gather(-1, targets.argmax(-1, keepdim=True)).squeeze(-1)
    torch.testing.assert_close(accept, want)
    assert torch.equal(with_accept, plain) and torch.equal(g, logits.grad)  # a side output only
    with pytest.raises(ValueError, match="accept_out"):
        distill_loss(logits, targets, w, kind, accept_out=torch.empty(3))


class _FixedLogits(torch.nn.Module):
    """Stand-in for a draft's TTT unroll: returns given per-step logits (the weighting is what is tested)."""

    def __init__(self, steps: list[torch.Tensor]) -> None:
        super().__init__()
        self.steps = [s.clone().requires_grad_(True) for s in steps]

    def forward(self, input_ids, hidden, *, ttt_steps, document_ids):
        from speculators_core.models.base import DraftOutput

        return DraftOutput(logits=list(self.steps[:ttt_steps]), draft_ids=[])

    def to_target_ids(self, ids):
        return ids


def test_acceptance_weighting_weighs_each_step_by_its_accepted_prefix():
    """Step s of the draft started at row t weighs prod_{j<s} q_j(argmax p_{t+j}); a start whose chain
    crosses a non-loss row (a user turn) or the next document stops counting there."""
    from speculators_core.train.ttt import Batch, ttt_step

    torch.manual_seed(2)
    length, vocab, steps = 12, 7, 3
    target_logits = torch.randn(1, length, vocab) * 2
    draft_logits = [torch.randn(1, length, vocab) for _ in range(steps)]
    mask = torch.ones(1, length, dtype=torch.bool)
    mask[0, 5] = False  # a non-assistant token inside the first document
    docs = torch.tensor([[0] * 9 + [1] * 3])
    batch = Batch(
        input_ids=torch.zeros(1, length, dtype=torch.long),
        hidden=torch.zeros(1, length, 4),
        last=torch.zeros(1, length, 4),
        loss_mask=mask,
        document_ids=docs,
    )

    def head(_last):
        return target_logits

    def run(weighting):
        model = _FixedLogits(draft_logits)
        loss, _ = ttt_step(model, model, head, batch, ttt_steps=steps, weighting=weighting)
        loss.backward()
        return loss, [s.grad[0] for s in model.steps]

    loss, grads = run("acceptance")
    top = target_logits[0].argmax(-1)
    p = torch.softmax(target_logits[0], -1)
    expected = torch.zeros(())
    prefix = torch.ones(length)
    for s in range(steps):
        n = length - s
        valid = mask[0, s:] & (docs[0, s:] == docs[0, :n])
        q = torch.softmax(draft_logits[s][0, :n], -1)
        kl = (p[s:] * (p[s:].log() - q.log())).sum(-1)
        expected = expected + (prefix[:n] * kl * valid).sum() / valid.sum()
        if s > 0:
            # loss rows of step s whose chain ended at an earlier step get no gradient there
            dead = ((prefix == 0) & valid).nonzero().squeeze(1)
            assert dead.numel() and grads[s][dead].abs().sum() == 0
            assert grads[s][:n][(prefix > 0) & valid].abs().sum() > 0
        alpha = q.gather(-1, top[s:, None]).squeeze(-1)
        prefix = (prefix[:n] * alpha * valid)[: n - 1]
    torch.testing.assert_close(loss, expected)
    uniform, _ = run("uniform")
    assert uniform > loss  # every later-step row at full weight


def test_vocab_mapping_follows_upstreams_rule():
    freq = np.array([5, 0, 9, 9, 1, 0, 0, 3])
    d2t, t2d = build_vocab_mapping(freq, 4)
    # top 4 by (-freq, id): 2, 3, 0, 7 -> sorted 0, 2, 3, 7
    assert (torch.arange(4) + d2t).tolist() == [0, 2, 3, 7]
    assert t2d.nonzero().squeeze(1).tolist() == [0, 2, 3, 7] and d2t.dtype == torch.int64
    # Fewer seen tokens than the draft vocabulary: padded with the lowest unused ids.
    d2t, _ = build_vocab_mapping(np.array([0, 0, 4, 0, 0, 1]), 4)
    assert (torch.arange(4) + d2t).tolist() == [0, 1, 2, 5]


def test_packing_plan_is_deterministic_and_world_size_free():
    lengths = np.array([30, 70, 10, 55, 90, 20, 40, 60, 5, 80])
    plan = epoch_plan(lengths, range(10), seed=3, epoch=1, total_seq_len=100, rows_per_step=2)
    assert plan == epoch_plan(lengths, range(10), seed=3, epoch=1, total_seq_len=100, rows_per_step=2)
    assert plan != epoch_plan(lengths, range(10), seed=3, epoch=2, total_seq_len=100, rows_per_step=2)
    for step in plan:
        assert len(step) == 2
        for row in step:
            assert sum(min(lengths[i], 100) for i in row) <= 100 or len(row) == 1
    rows = pack_rows(lengths, range(10), 100)
    assert [i for r in rows for i in r] == list(range(10))


def test_training_learns_and_writes_a_speculators_checkpoint(stack, prepared, hidden_states, tmp_path):
    from speculators_core.format import load_config
    from speculators_core.models import load_draft_model

    args = [
        "train",
        "--verifier",
        stack.verifier,
        "--data",
        prepared,
        "--hidden-states",
        hidden_states,
        "--output",
        tmp_path / "model",
        "--checkpoint-dir",
        tmp_path / "ckpt",
        "--epochs",
        2,
        "--lr",
        2e-3,
        "--draft-vocab-size",
        200,
        "--total-seq-len",
        320,
        "--num-speculative-tokens",
        4,
        "--verifier-name",
        "example-org/tiny-verifier",
        "--summary-path",
        tmp_path / "s.json",
    ]
    cli(*args)
    s = read_json(tmp_path / "s.json")
    assert s["step"] == "train" and s["epochs"] == 2 and s["metrics_from"] == "heldout"
    for key in ("steps", "loss", "acc", "cond_acc", "est_accept_len", "tokens_per_s", "output"):
        assert key in s
    assert len(s["acc"]) == len(s["cond_acc"]) == 3 and s["acc"][0] > 0.3 and s["est_accept_len"] > 1.4
    assert all(
        a >= b for a, b in zip(s["acc"], s["acc"][1:], strict=False)
    )  # joint acceptance shrinks with depth
    assert len(json.dumps(s)) < 4096
    config = load_config(tmp_path / "model")
    assert config.speculators_model_type == "eagle3" and config.speculative_tokens == 4
    assert config.draft_vocab_size == 200 and config.eagle_aux_hidden_state_layer_ids == [2, 4, 5]
    assert config.verifier_name_or_path == "example-org/tiny-verifier"
    raw = json.loads((tmp_path / "model" / "config.json").read_text())
    assert "model_type" not in raw and raw["norm_before_residual"] is True
    draft = load_draft_model(tmp_path / "model", verifier=stack.verifier)
    assert draft.d2t is not None and int(draft.t2d.sum()) == 200
    tensors = weights(tmp_path / "model")
    assert tensors["fc.weight"].dtype == torch.bfloat16 and tensors["d2t"].dtype == torch.int64
    # A finished run is not redone.
    cli(*args[:-1], tmp_path / "s2.json")
    assert read_json(tmp_path / "s2.json")["reused"] is True


def _run_until_checkpoint(argv: list, step: int) -> None:
    """Start training in a subprocess and kill it (SIGKILL) once the checkpoint of `step` is reported."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "speculators_core.cli", *map(str, argv)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            if (
                line.startswith("{")
                and json.loads(line).get("event") == "checkpoint"
                and json.loads(line)["step"] == step
            ):
                proc.send_signal(signal.SIGKILL)
                break
        else:
            pytest.fail("training ended without reporting the checkpoint")
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL


def test_resumed_run_ends_bit_identical(stack, prepared, hidden_states, tmp_path):
    common = ["--max-steps", 9, "--checkpoint-every-steps", 3, "--batch-rows", 2]
    full = tmp_path / "full"
    proc = cli_subprocess(*train_args(stack, prepared, hidden_states, full, *common))
    assert proc.returncode == 0, proc.stderr
    resumed = tmp_path / "resumed"
    argv = train_args(stack, prepared, hidden_states, resumed, *common)
    _run_until_checkpoint(argv, 3)
    assert (resumed / "ckpt" / "step-00000003" / "state.json").exists() and not (resumed / "model").exists()
    proc = cli_subprocess(*argv)
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
    assert any(e["event"] == "resume" and e["step"] == 3 for e in events)
    a, b = weights(full / "model"), weights(resumed / "model")
    assert all(torch.equal(a[k], b[k]) for k in a), f"max diff {max_diff(a, b)}"


def test_resume_refuses_another_runs_checkpoints(stack, prepared, hidden_states, tmp_path):
    cli(
        *train_args(stack, prepared, hidden_states, tmp_path, "--max-steps", 2, "--checkpoint-every-steps", 1)
    )
    (tmp_path / "ckpt" / "done.json").unlink()
    cli(
        *train_args(stack, prepared, hidden_states, tmp_path, "--max-steps", 2, "--lr", 5e-4),
        expect=ExitCode.INCOMPATIBLE,
    )


@pytest.mark.parametrize("fsdp", [False, True], ids=["ddp", "fsdp2"])
def test_two_processes_train_like_one_with_the_same_global_batch(
    stack, prepared, hidden_states, tmp_path, fsdp
):
    extra = ["--batch-rows", 2, "--num-layers", 2] + (["--fsdp"] if fsdp else [])
    one = tmp_path / "one"
    cli(*train_args(stack, prepared, hidden_states, one, *extra))
    two = tmp_path / "two"
    # NNODES/NPROC_PER_NODE as the operator sets them: the CLI launches torchrun (gloo on CPU) itself.
    proc = cli_subprocess(
        *train_args(stack, prepared, hidden_states, two, *extra, "--summary-path", two / "s.json"),
        env={"NNODES": "1", "NPROC_PER_NODE": "2"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert read_json(two / "s.json")["world_size"] == 2
    assert max_diff(weights(one / "model"), weights(two / "model")) < 1e-5


def test_online_mode_trains_like_offline(stack, prepared, hidden_states, tmp_path):
    cli(
        *train_args(stack, prepared, hidden_states, tmp_path / "off", "--summary-path", tmp_path / "off.json")
    )
    online = [
        a if a != hidden_states else None for a in train_args(stack, prepared, hidden_states, tmp_path / "on")
    ]
    i = online.index("--hidden-states")
    online[i : i + 2] = ["--online"]
    cli(*online, "--summary-path", tmp_path / "on.json")
    off, on = read_json(tmp_path / "off.json"), read_json(tmp_path / "on.json")
    assert on["mode"] == "online" and off["mode"] == "offline"
    assert abs(on["loss"] - off["loss"]) < 1e-3 * abs(off["loss"])
    assert max_diff(weights(tmp_path / "off" / "model"), weights(tmp_path / "on" / "model")) < 1e-4


def test_hidden_states_of_another_verifier_are_refused(stack, prepared, hidden_states, tmp_path):
    other = tmp_path / "wide"
    other.mkdir()
    for f in Path(stack.verifier).iterdir():
        (other / f.name).symlink_to(f)
    cfg = json.loads((Path(stack.verifier) / "config.json").read_text())
    cfg["hidden_size"] = 96
    (other / "config.json").unlink()
    (other / "config.json").write_text(json.dumps(cfg))
    args = train_args(stack, prepared, hidden_states, tmp_path)
    args[args.index("--verifier") + 1] = other
    cli(*args, expect=ExitCode.INCOMPATIBLE)


def test_eagle3_trains_its_lm_head_unless_told_to_keep_the_verifiers(
    stack, prepared, hidden_states, tmp_path
):
    from speculators_core.models import load_verifier_tensors

    verifier_head = load_verifier_tensors(stack.verifier, ["lm_head"])["lm_head"]
    rows = {}
    for name, extra in (("default", ()), ("frozen", ("--no-train-lm-head",))):
        cli(*train_args(stack, prepared, hidden_states, tmp_path / name, *extra))
        draft = weights(tmp_path / name / "model")
        rows[name] = (draft["lm_head.weight"], verifier_head[draft["t2d"].bool()])
    trained, start = rows["default"]
    assert (trained - start).abs().max() > 1e-4  # EAGLE-3's recipe: the draft's own head learns
    frozen, start = rows["frozen"]
    assert torch.equal(frozen, start.to(frozen.dtype))  # upstream's: the verifier's rows, untouched
    # EAGLE-1/HASS stores no lm_head: asking to train one is refused, naming the flag.
    proc = cli_subprocess(
        *train_args(stack, prepared, hidden_states, tmp_path / "eagle", "--algorithm", "eagle"),
        "--train-lm-head",
    )
    assert proc.returncode == ExitCode.USAGE and "--train-lm-head" in proc.stderr


def test_bad_flags_are_usage_errors(stack, prepared, hidden_states, tmp_path):
    with pytest.raises(SystemExit) as exc:  # argparse: both modes at once
        cli(*train_args(stack, prepared, hidden_states, tmp_path, "--online"))
    assert exc.value.code == ExitCode.USAGE
    cli(
        *train_args(stack, prepared, hidden_states, tmp_path, "--draft-vocab-size", 10**6),
        expect=ExitCode.USAGE,
    )


def test_torchrun_command_from_the_operators_env(monkeypatch):
    from speculators_core.train.distributed import needs_launch, torchrun_command

    for name in ("LOCAL_RANK", "TORCHELASTIC_RUN_ID", "NODE_RANK"):
        monkeypatch.delenv(name, raising=False)
    env = {
        "NNODES": "2",
        "NPROC_PER_NODE": "4",
        "JOB_COMPLETION_INDEX": "1",
        "MASTER_ADDR": "t-train-0.t-train",
        "MASTER_PORT": "29400",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert needs_launch()
    cmd = torchrun_command(["train", "--online"])
    for flag in (
        "--nnodes=2",
        "--nproc-per-node=4",
        "--node-rank=1",
        "--master-addr=t-train-0.t-train",
        "--master-port=29400",
    ):
        assert flag in cmd
    assert cmd[-4:] == ["-m", "speculators_core.cli", "train", "--online"]
    monkeypatch.setenv("LOCAL_RANK", "0")  # already under torchrun
    assert not needs_launch()
    monkeypatch.delenv("LOCAL_RANK")
    monkeypatch.delenv("MASTER_ADDR")
    with pytest.raises(ValueError, match="MASTER_ADDR"):
        torchrun_command(["train"])


def test_permanent_errors_keep_their_exit_code_under_torchrun(stack, prepared, hidden_states, tmp_path):
    args = train_args(stack, prepared, hidden_states, tmp_path, "--draft-vocab-size", 10**6)
    proc = cli_subprocess(*args, env={"NNODES": "1", "NPROC_PER_NODE": "2"})
    assert proc.returncode == ExitCode.USAGE, proc.stderr[-2000:]
    assert "--draft-vocab-size" in proc.stderr


def test_grouped_rows_compute_the_packed_rows_loss_and_gradients(stack, prepared, hidden_states, tmp_path):
    """Running a packed row's documents as length-grouped padded rows is an optimisation only."""
    from speculators_core.train.config import TrainConfig
    from speculators_core.train.distributed import init_distributed
    from speculators_core.train.loop import Trainer
    from speculators_core.train.ttt import step_counts, ttt_step

    grads, losses = {}, {}
    for mode in ("packed", "grouped"):
        cfg = TrainConfig(
            verifier=str(stack.verifier),
            data=prepared,
            hidden_states=hidden_states,
            output=tmp_path / "o",
            checkpoint_dir=tmp_path / "c",
            total_seq_len=512,
            draft_vocab_size=256,
            row_layout=mode,
        )
        tr = Trainer(cfg, init_distributed())
        tr._data()
        tr.draft_vocab_size = 256
        tr._plan()
        tr._model()
        micro = tr.source.batches(tr.plans[0][0][0])
        assert len(micro) == (1 if mode == "packed" else len(micro)) and (mode == "packed" or len(micro) > 1)
        counts = step_counts(micro, 3)
        total = 0.0
        for b in micro:
            loss, _ = ttt_step(tr.model, tr.draft, tr.head, b, ttt_steps=3, denominators=counts)
            loss.backward()
            total += float(loss.detach())
        losses[mode] = total
        grads[mode] = torch.cat([p.grad.flatten() for p in tr.draft.parameters() if p.grad is not None])
    assert losses["grouped"] == pytest.approx(losses["packed"], rel=1e-5)
    assert torch.allclose(grads["grouped"], grads["packed"], atol=1e-5, rtol=1e-4)
