"""One DFlash training step on a (shifted) batch: anchors in the loss region, one block per anchor, the loss
upstream 0.9.0 trains DFlash with, and metrics per block position.

Layout (the trainer's shifted rows, speculators_core.train.ttt.Batch): row t holds x_{t+1}, g_t, y_{t+1},
l_{t+1}. A block at row r is anchored at x_{r+1} and sees the states of rows <= r; slot j (1..bs-1)
predicts x_{r+1+j}. Its target is the verifier's distribution after x_{r+j}, head(last[r+j-1]); it counts
when x_{r+1+j} is an assistant token of the same document (loss_mask[r+j], document r+j == r). Anchors
are rows whose own token x_{r+1} is an assistant token (upstream: anchors in the loss region), up to
`max_anchors` per row, drawn without replacement and kept in order.

Loss (upstream's DFlash defaults): cross-entropy to the verifier's argmax, per position weighted by
D-PACE (alpha 0.5: a slot weighs the expected accepted run it can still extend) or by the fixed
exponential decay exp(-(j-1)/gamma); the weighted sum is divided by the number of counted slots.

Metrics reuse MetricSums with one "step" per block position j = 1..bs-1: acc_j is the share of blocks
whose first j drafted tokens all equal the verifier's argmax (what greedy verification accepts), so
est_accept_len = 1 + sum_j acc_j is the expected tokens per verifier step at k = bs - 1.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F

from speculators_core.train.ttt import Batch, MetricSums, target_ids_full

Weighting = Literal["dpace", "fixed-exp-decay"]
WEIGHTINGS: tuple[str, ...] = ("dpace", "fixed-exp-decay")


def select_rows(
    loss_mask: torch.Tensor, document_ids: torch.Tensor, max_anchors: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """([B, A] anchor rows in order, [B, A] which are real): up to max_anchors per batch row."""
    batch = loss_mask.shape[0]
    candidates = loss_mask.bool() & (document_ids >= 0)
    candidates[:, -1] = False  # the last row has no slot to predict
    count = min(max_anchors, int(candidates.sum(dim=1).max().item()) if batch else 0)
    rows = torch.zeros(batch, max(count, 1), dtype=torch.long)
    valid = torch.zeros(batch, max(count, 1), dtype=torch.bool)
    for b in range(batch):
        idx = candidates[b].nonzero().squeeze(1).cpu()
        take = min(count, idx.numel())
        if take:
            chosen = idx[torch.randperm(idx.numel(), generator=generator)[:take]].sort().values
            rows[b, :take] = chosen
            valid[b, :take] = True
    return rows.to(loss_mask.device), valid.to(loss_mask.device)


def slot_layout(
    rows: torch.Tensor,
    valid: torch.Tensor,
    loss_mask: torch.Tensor,
    document_ids: torch.Tensor,
    block_size: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """([B, A, bs] target rows of head(last), [B, A, bs] which slots count)."""
    length = loss_mask.shape[1]
    j = torch.arange(block_size, device=rows.device)
    token_rows = rows[:, :, None] + j  # the row holding x_{r+1+j}
    inside = token_rows < length
    token_rows = token_rows.clamp(max=length - 1)
    same_doc = (
        document_ids.gather(1, token_rows.flatten(1)).view_as(token_rows)
        == document_ids.gather(1, rows)[:, :, None]
    )
    counted = loss_mask.bool().gather(1, token_rows.flatten(1)).view_as(token_rows)
    slots = valid[:, :, None] & inside & same_doc & counted & (j > 0)
    return (token_rows - 1).clamp(min=0), slots


def position_weights(
    ce: torch.Tensor, slots: torch.Tensor, weighting: Weighting, *, gamma: float, alpha: float
) -> torch.Tensor:
    """[N, bs] per-slot loss weights (no gradient) from the per-slot cross-entropy [N, bs]."""
    mask = slots.to(ce.dtype)
    if weighting == "fixed-exp-decay":
        j = torch.arange(ce.shape[1], device=ce.device, dtype=ce.dtype)
        return torch.exp(-(j - 1).clamp(min=0) / gamma) * (j > 0) * mask
    with torch.no_grad():
        q = torch.exp(-ce.detach()).float()  # the draft's probability of the verifier's token
        smooth = torch.where(mask > 0, (1.0 - alpha) * q + alpha, torch.ones_like(q))
        prefix = torch.cumprod(smooth, dim=-1)
        weight = torch.flip(torch.cumsum(torch.flip(prefix * mask, dims=[-1]), dim=-1), dims=[-1]) * mask
    return weight.to(ce.dtype)


def dflash_step(
    model: Any,
    draft: Any,
    head: Any,
    batch: Batch,
    *,
    max_anchors: int = 512,
    weighting: Weighting = "dpace",
    gamma: float = 4.0,
    alpha: float = 0.5,
    full_head: Any = None,
    compute_dtype: torch.dtype | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, MetricSums]:
    """Forward + loss for one micro-batch. `model` runs (maybe DDP/FSDP-wrapped), `draft` is the bare
    DFlashDraftModel (block size, vocab mapping). Returns (loss to backpropagate, metric sums)."""
    device = batch.input_ids.device
    bs = draft.block_size
    generator = generator or torch.Generator().manual_seed(0)
    rows, valid = select_rows(batch.loss_mask, batch.document_ids, max_anchors, generator)
    target_rows, slots = slot_layout(rows, valid, batch.loss_mask, batch.document_ids, bs)
    autocast = compute_dtype is not None and compute_dtype != torch.float32 and device.type == "cuda"
    width = batch.input_ids.shape[0]
    with torch.no_grad():
        last = batch.last if autocast else batch.last.float()
        picked = last.gather(1, target_rows.flatten(1)[:, :, None].expand(-1, -1, last.shape[-1]))
        want = head(picked).argmax(-1).view(width, -1, bs)  # [B, A, bs] over the draft vocabulary
        full_want = target_ids_full(picked, full_head).view(width, -1, bs) if full_head is not None else None
    with torch.autocast(device.type, dtype=compute_dtype or torch.float32, enabled=autocast):
        logits = model(batch.input_ids, batch.hidden, rows=rows, document_ids=batch.document_ids)
    vocab = logits.shape[-1]
    logits = logits.view(width, -1, bs, vocab).float()
    ce = F.cross_entropy(logits.reshape(-1, vocab), want.reshape(-1), reduction="none").view(width, -1, bs)
    weights = position_weights(ce, slots, weighting, gamma=gamma, alpha=alpha)
    counted = int(slots.sum())
    total = (ce * weights).sum() / max(counted, 1)
    metrics = MetricSums(bs - 1, device)
    metrics.tokens = batch.num_tokens
    with torch.no_grad():
        arg = logits.argmax(-1)
        correct = draft.to_target_ids(arg) == full_want if full_want is not None else arg == want
        chain_ok = valid.clone()
        chain_correct = valid.clone()
        for j in range(1, bs):
            s = j - 1
            here = slots[:, :, j]
            metrics.t[0, s] = (ce[:, :, j] * weights[:, :, j]).sum().double() / max(counted, 1)
            metrics.t[1, s] = 1.0  # one batch: summary() averages the loss over batches
            before = chain_ok & chain_correct & here
            chain_ok = chain_ok & here
            chain_correct = chain_correct & correct[:, :, j]
            now = chain_ok & chain_correct
            metrics.t[2, s] = now.sum()
            metrics.t[3, s] = chain_ok.sum()
            metrics.t[4, s] = now.sum()
            metrics.t[5, s] = before.sum()
    return total, metrics
