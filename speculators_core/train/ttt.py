"""One train-time-test (TTT) step on a packed row: unroll, align per step, loss and accuracy metrics.

The draft model unrolls `ttt_steps` steps (speculators_core.models: step s feeds the token s ahead with
the draft's own earlier output state fed back, and attends to its earlier steps' keys at the same row).
Step s's logits at row t are compared with the verifier's distribution at row t + s (upstream's
`align_for_step`). Unlike upstream, a row whose target lies in the next packed document is excluded
(upstream trains on those few cross-document pairs).

Metrics, as sums and counts so they add up across rows, ranks and log intervals:
    acc_s       share of draft starts whose first s+1 drafted tokens are all the verifier's argmax
                (full-vocabulary argmax when the draft vocabulary is smaller: what greedy verification
                accepts)
    cond_acc_s  share correct at step s among the starts correct up to step s-1
    est_accept_len = 1 + sum_s acc_s  (expected tokens per verification at k = ttt_steps)

Step weighting (`weighting`):
    uniform     every loss row of every step weighs the same (upstream 0.9.0)
    acceptance  a row's step-s loss is weighted by the draft's own probability, detached, that its steps
                0..s-1 from the same start are accepted: prod_{j<s} q_j(argmax p_j). Verification only
                ever reads step s after steps 0..s-1 were accepted, and there the teacher-fed tokens are
                exactly what the draft proposed; a start whose chain already failed feeds step s a context
                drafting never sees. GRIFFIN's token-alignable training (Hu et al., arXiv 2502.11018) drops
                such rows with a hard mask; this is its soft form, from the softmax the loss computes anyway.
    The reported `loss_per_step` is the weighted objective's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch

from speculators_core.train.losses import LossKind, distill_loss

StepWeighting = Literal["uniform", "acceptance"]
STEP_WEIGHTINGS: tuple[str, ...] = ("uniform", "acceptance")


@dataclass
class Batch:
    """Rows of documents already shifted (upstream's shift_batch): input_ids x_{t+1}, hidden g_t (aux
    states), last y_{t+1} (verifier last hidden), loss_mask l_{t+1}. Either one packed row [1, T] with
    document ids, or documents as right-padded rows [B, T]."""

    input_ids: torch.Tensor  # [B, T] long
    hidden: torch.Tensor  # [B, T, n_aux*H]
    last: torch.Tensor  # [B, T, H]
    loss_mask: torch.Tensor  # [B, T] bool
    document_ids: torch.Tensor  # [B, T] long, -1 = padding

    @property
    def num_tokens(self) -> int:
        return int((self.document_ids >= 0).sum())

    def to(self, device: torch.device) -> Batch:
        return Batch(
            *(
                t.to(device, non_blocking=True)
                for t in (self.input_ids, self.hidden, self.last, self.loss_mask, self.document_ids)
            )
        )


class MetricSums:
    """Sums and counts per TTT step; `reduce` adds them across ranks; `summary` turns them into ratios."""

    KEYS = ("loss_sum", "loss_rows", "acc_num", "acc_den", "cond_num", "cond_den")

    def __init__(self, steps: int, device: torch.device | str = "cpu") -> None:
        self.steps = steps
        self.t = torch.zeros(len(self.KEYS), steps, dtype=torch.float64, device=device)
        self.tokens = 0

    def add(self, other: MetricSums) -> None:
        self.t += other.t.to(self.t.device)
        self.tokens += other.tokens

    def reduce(self) -> None:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            packed = torch.cat(
                [
                    self.t.flatten(),
                    torch.tensor([float(self.tokens)], dtype=torch.float64, device=self.t.device),
                ]
            )
            dist.all_reduce(packed)
            self.t = packed[:-1].view_as(self.t)
            self.tokens = int(packed[-1].item())

    def summary(self) -> dict[str, Any]:
        t = self.t.cpu()
        loss_s = (t[0] / t[1].clamp(min=1)).tolist()
        acc = (t[2] / t[3].clamp(min=1)).tolist()
        cond = (t[4] / t[5].clamp(min=1)).tolist()
        return {
            "loss": float(sum(loss_s)),
            "loss_per_step": loss_s,
            "acc": acc,
            "cond_acc": cond,
            "est_accept_len": 1.0 + float(sum(acc)),
        }


def target_ids_full(last: torch.Tensor, full_head: Any, chunk: int = 4096) -> torch.Tensor:
    """argmax of the verifier's full-vocabulary logits, in row chunks (never all [T, V] at once)."""
    rows = last.reshape(-1, last.shape[-1])
    out = torch.empty(rows.shape[0], dtype=torch.long, device=last.device)
    with torch.no_grad():
        for a in range(0, rows.shape[0], chunk):
            out[a : a + chunk] = full_head(rows[a : a + chunk]).argmax(-1)
    return out.view(last.shape[:-1])


def _valid(mask: torch.Tensor, docs: torch.Tensor, s: int) -> torch.Tensor:
    """[B, T-s]: rows whose step-s target (row t+s) is an assistant token of the same document."""
    n = docs.shape[1] - s
    return mask[:, s:] & (docs[:, s:] == docs[:, :n]) & (docs[:, :n] >= 0)


def step_counts(batches: list[Batch], ttt_steps: int) -> list[int]:
    """Loss rows per TTT step over all the micro-batches of one packed row (the loss denominators)."""
    return [sum(int(_valid(b.loss_mask, b.document_ids, s).sum()) for b in batches) for s in range(ttt_steps)]


def ttt_step(
    model: Any,
    draft: Any,
    head: Any,
    batch: Batch,
    *,
    ttt_steps: int,
    loss: LossKind = "kl",
    step_decay: float = 1.0,
    full_head: Any = None,
    compute_dtype: torch.dtype | None = None,
    denominators: list[int] | None = None,
    weighting: StepWeighting = "uniform",
) -> tuple[torch.Tensor, MetricSums]:
    """Forward + loss for one micro-batch [B, T] (a packed row, or some of its documents as padded rows).

    `model` is what runs (maybe DDP/FSDP-wrapped), `draft` the bare model (vocab mapping). Step s's loss is
    the sum over its loss rows divided by `denominators[s]` (the packed row's count, so that the
    micro-batches of one row add up to the row's masked mean; default: this batch's own count).
    `weighting` (module docstring) scales each row's step-s loss.
    Returns (loss to backpropagate, metric sums)."""
    device = batch.input_ids.device
    autocast = compute_dtype is not None and compute_dtype != torch.float32 and device.type == "cuda"
    with torch.no_grad():
        last = batch.last if autocast else batch.last.float()
        targets = head(last)  # [B, T, V_draft]
        full_ids = target_ids_full(last, full_head) if full_head is not None else None
    with torch.autocast(device.type, dtype=compute_dtype or torch.float32, enabled=autocast):
        out = model(batch.input_ids, batch.hidden, ttt_steps=ttt_steps, document_ids=batch.document_ids)
    logits_steps = out.logits
    docs, mask = batch.document_ids, batch.loss_mask
    width, length, vocab = targets.shape
    metrics = MetricSums(ttt_steps, device)
    metrics.tokens = batch.num_tokens
    total = torch.zeros((), dtype=torch.float32, device=device)
    flat_targets = targets.reshape(-1, vocab)
    chain_ok = torch.ones(width, length, dtype=torch.bool, device=device)  # valid so far
    chain_correct = torch.ones(width, length, dtype=torch.bool, device=device)
    # acceptance weighting: prod_{j<s} q_j(argmax p_j) per draft start (rows t < n of step s)
    prefix = torch.ones(width, length, device=device) if weighting == "acceptance" else None
    for s in range(ttt_steps):
        n = length - s
        logits = logits_steps[s]  # [B, T, V]; rows t < n are compared with target rows t + s
        valid = _valid(mask, docs, s)  # [B, n]
        idx = valid.reshape(-1).nonzero().squeeze(1)
        denom = denominators[s] if denominators is not None else int(idx.numel())
        if idx.numel():
            b, t = idx // n, idx % n
            weights = torch.full((idx.numel(),), step_decay**s / denom, device=device)
            accept = None
            if prefix is not None:
                weights = weights * prefix.reshape(-1).index_select(0, idx)
                accept = torch.empty(idx.numel(), device=device)
            step_loss = distill_loss(
                logits.reshape(-1, vocab).index_select(0, b * length + t),
                flat_targets.index_select(0, b * length + t + s),
                weights,
                loss,
                accept_out=accept,
            )
            total = total + step_loss
            metrics.t[0, s] = step_loss.detach().double() / (step_decay**s if step_decay else 1.0)
            metrics.t[1, s] = idx.numel() / denom  # this batch's share of its packed row
        with torch.no_grad():
            arg = logits[:, :n].argmax(-1)
            pred = draft.to_target_ids(arg) if full_ids is not None else arg
            want = full_ids[:, s:] if full_ids is not None else targets[:, s:].argmax(-1)
            correct = pred == want
            before = chain_correct[:, :n] & chain_ok[:, :n] & valid
            chain_ok = chain_ok[:, :n] & valid
            chain_correct = chain_correct[:, :n] & correct
            now = chain_correct & chain_ok
            metrics.t[2, s] = now.sum()
            metrics.t[3, s] = chain_ok.sum()
            metrics.t[4, s] = now.sum()
            metrics.t[5, s] = before.sum()
            if prefix is not None:
                # A start whose step-s target is not a loss row has no chain past s (as chain_ok).
                alive = torch.zeros(width * n, device=device)
                if accept is not None:
                    alive[idx] = accept
                prefix = (prefix * alive.view(width, n))[:, : n - 1]
        logits_steps[s] = None  # free this step's logits once its loss and gradient are computed
    return total, metrics
