"""Distillation losses over the draft vocabulary, computed in row chunks with the gradient fused in.

    kl  forward KL(p_verifier || q_draft), p restricted to the draft vocabulary (upstream's default)
    ce  cross-entropy against the argmax of the restricted verifier distribution
    lk  the hybrid LK loss (Samarin et al., "LK Losses: Direct Acceptance Rate Optimization for
        Speculative Decoding", arXiv 2602.23881; upstream 0.9.0's `lk_hybrid`): lambda * KL + (1 - lambda)
        * TV with lambda = exp(-eta * sg(alpha)), alpha = sum_v min(p_v, q_v) the acceptance rate; KL's
        strong gradient while the draft is far off, the acceptance rate itself once it is close

`distill_loss(logits, targets, weights)` returns sum_i weights[i] * loss_i; with `accept_out` it also
fills, per row, the draft's probability of the verifier's top token (what greedy verification accepts),
read off the same softmax. The forward pass computes
each chunk's loss and its gradient (softmax(z) - p, or softmax(z) - onehot) at once and keeps only the
gradient, so no [N, V] float32 log-probabilities live until backward: less memory and one pass fewer
than autograd through log_softmax (upstream needs Triton kernels for this; this runs anywhere).
"""

from __future__ import annotations

from typing import Literal

import torch

LossKind = Literal["kl", "ce", "lk"]
LOSSES: tuple[str, ...] = ("kl", "ce", "lk")
LK_ETA = 3.0  # the paper's best hybrid setting (upstream's default)


class _DistillLoss(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx,
        logits: torch.Tensor,
        targets: torch.Tensor,
        weights: torch.Tensor,
        kind: str,
        chunk_rows: int,
        accept_out: torch.Tensor | None,
    ) -> torch.Tensor:
        need_grad = logits.requires_grad
        grad = torch.empty_like(logits) if need_grad else None
        total = torch.zeros((), dtype=torch.float32, device=logits.device)
        for a in range(0, logits.shape[0], chunk_rows):
            b = min(a + chunk_rows, logits.shape[0])
            w = weights[a:b].float()
            log_q = torch.log_softmax(logits[a:b].float(), dim=-1)
            if kind == "kl":
                log_p = torch.log_softmax(targets[a:b].float(), dim=-1)
                p = log_p.exp()
                per_row = (p * (log_p - log_q)).sum(-1)
                g = log_q.exp().sub_(p) if need_grad else None
            elif kind == "lk":
                log_p = torch.log_softmax(targets[a:b].float(), dim=-1)
                p, q = log_p.exp(), log_q.exp()
                below = q < p  # where min(p, q) is q: d alpha / dz = q * (below - sum(below * q))
                alpha = torch.minimum(p, q).sum(-1)
                lam = torch.exp(-LK_ETA * alpha)[:, None]
                kl = (p * (log_p - log_q)).sum(-1)
                per_row = lam[:, 0] * kl + (1 - lam[:, 0]) * (1 - alpha)
                if need_grad:
                    spill = (q * below).sum(-1, keepdim=True)
                    g = lam * (q - p) + (1 - lam) * q * (spill - below.float())
                else:
                    g = None
            else:
                tid = targets[a:b].argmax(dim=-1, keepdim=True)
                per_row = -log_q.gather(-1, tid).squeeze(-1)
                g = (
                    log_q.exp().scatter_add_(-1, tid, -torch.ones_like(tid, dtype=log_q.dtype))
                    if need_grad
                    else None
                )
            total += (per_row * w).sum()
            if accept_out is not None:
                top = targets[a:b].argmax(dim=-1, keepdim=True)
                accept_out[a:b] = log_q.gather(-1, top).squeeze(-1).exp()
            if grad is not None and g is not None:
                grad[a:b] = (g * w[:, None]).to(grad.dtype)
        ctx.save_for_backward(grad if grad is not None else torch.empty(0))
        return total

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad_out: torch.Tensor):  # type: ignore[override]
        (grad,) = ctx.saved_tensors  # type: ignore[attr-defined]
        return grad * grad_out.to(grad.dtype), None, None, None, None, None


def distill_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    weights: torch.Tensor,
    kind: LossKind = "kl",
    chunk_rows: int = 2048,
    accept_out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Weighted sum of per-row losses; logits [N, V] (draft), targets [N, V] (verifier), weights [N].
    `accept_out` [N] float32, if given, receives q(argmax p) per row (no gradient)."""
    if kind not in LOSSES:
        raise ValueError(f"loss {kind!r} is not supported; allowed: {', '.join(LOSSES)}")
    if logits.shape != targets.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)} differ")
    if accept_out is not None and accept_out.shape != logits.shape[:1]:
        raise ValueError(f"accept_out has shape {tuple(accept_out.shape)}, expected ({logits.shape[0]},)")
    return _DistillLoss.apply(logits, targets, weights, kind, chunk_rows, accept_out)


def reference_loss(
    logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor, kind: LossKind
) -> torch.Tensor:
    """The same loss through plain autograd (tests check the fused version against it)."""
    log_q = torch.log_softmax(logits.float(), dim=-1)
    if kind == "kl":
        log_p = torch.log_softmax(targets.float(), dim=-1)
        per_row = (log_p.exp() * (log_p - log_q)).sum(-1)
    elif kind == "lk":
        log_p = torch.log_softmax(targets.float(), dim=-1)
        p = log_p.exp()
        alpha = torch.minimum(p, log_q.exp()).sum(-1)
        lam = torch.exp(-LK_ETA * alpha.detach())
        per_row = lam * (p * (log_p - log_q)).sum(-1) + (1 - lam) * (1 - alpha)
    else:
        per_row = -log_q.gather(-1, targets.argmax(-1, keepdim=True)).squeeze(-1)
    return (per_row * weights.float()).sum()
