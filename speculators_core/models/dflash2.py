"""DFlash2 draft model (speculators format `dflash2`): DFlash, local convolutions and a candidate selector.

Weights: every DFlash tensor (models/dflash.py), plus, as upstream 0.9.0 saves them and vLLM 0.33 loads them
(vLLM prefixes `model.`; names and shapes are otherwise the same):
    layers.N.{attention_conv, mlp_conv}.base_kernel [2, K, H]               input side, output side
    layers.N.{attention_conv, mlp_conv}.kernel_projection.weight [2*K*G, H]  G = H / conv_group_size
    candidate_selector.{predecessor,successor}_codebook [V, R]
    candidate_selector.hidden_projection.weight [R, H]
with K = conv_kernel_size and R = selector_rank. dflash2 is full-vocabulary only (no lm_head, d2t, t2d).

A layer (upstream `Qwen3DFlash2DecoderLayer`, vLLM `DFlash2Qwen3DecoderLayer`):
    x, kernel = attention_conv.prepare(input_layernorm(block))     a causal conv over the block's slots
    block    += attention_conv.finish(attn(x, context), kernel)     the context itself is never convolved
    x, kernel = mlp_conv.prepare(post_attention_layernorm(block))
    block    += mlp_conv.finish(mlp(x), kernel)
Each conv is `sum_t (base[t] + delta[t]) * x[slot - t]` over taps t < K with slot - t inside the block;
delta is per channel group and comes from kernel_projection of the (input-side) states.

Drafting (vLLM's DFlash2Speculator; upstream 0.9.0 has no inference path, only its training loss): the
unary logits give each drafting slot its top-`selector_top_k` candidates, the selector adds a bilinear
score `<predecessor_codebook[prev] * hidden_projection(h), successor_codebook[c]>`, and a greedy walk picks
slot by slot with `prev` the token it picked for the slot before (the anchor for the first).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PretrainedConfig

from speculators_core.format import config_from_dict
from speculators_core.format.dflash import DFlash2Config
from speculators_core.format.errors import CheckpointError
from speculators_core.models.attention import AttnImpl
from speculators_core.models.base import Proposal
from speculators_core.models.dflash import DFlashDecoderLayer, DFlashDraftModel, build_dflash_config


def grouped_dynamic_conv(
    hidden_states: torch.Tensor,  # [B, Q, H], Q a multiple of block_size
    delta_kernel: torch.Tensor,  # [B, Q, K, G]: per-slot, per-group coefficients
    base_kernel: torch.Tensor,  # [K, H]
    *,
    block_size: int,
) -> torch.Tensor:
    """Causal grouped convolution within each block: slot j mixes slots j, j-1, .. j-K+1 of its own block
    (upstream's `grouped_dynamic_conv`, batched instead of flattened; the same sums in the same order)."""
    batch, rows, hidden = hidden_states.shape
    taps, groups = base_kernel.shape[0], delta_kernel.shape[-1]
    blocks = hidden_states.view(batch, rows, groups, hidden // groups)
    slot = torch.arange(rows, device=hidden_states.device) % block_size
    out = torch.zeros_like(blocks)
    for tap in range(taps):
        # Padding the slot axis by `tap` shifts the block back; slots < tap would read the previous block
        # (or the padding) and are masked, as both upstream and vLLM do.
        shifted = blocks if tap == 0 else F.pad(blocks[:, :-tap], (0, 0, 0, 0, tap, 0))
        base = base_kernel[tap].to(blocks.dtype).view(1, 1, groups, -1)
        coefficient = base + delta_kernel[:, :, tap, :, None]
        out = out + shifted * coefficient * (slot >= tap).view(1, -1, 1, 1)
    return out.view(batch, rows, hidden)


class GroupedDynamicConv(nn.Module):
    """The input-side and output-side convolutions of one sublayer, both driven by one projection of the
    sublayer's input (so the output side's kernel is computed before the sublayer runs)."""

    def __init__(self, hidden_size: int, *, block_size: int, kernel_size: int, group_size: int) -> None:
        super().__init__()
        self.block_size = block_size
        self.kernel_size = kernel_size
        self.num_groups = hidden_size // group_size
        self.base_kernel = nn.Parameter(torch.empty(2, kernel_size, hidden_size))
        self.kernel_projection = nn.Linear(hidden_size, 2 * kernel_size * self.num_groups, bias=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Identity on both sides (upstream's init): a fresh DFlash2 computes what DFlash computes."""
        with torch.no_grad():
            self.base_kernel.zero_()
            self.base_kernel[:, 0].fill_(1.0)
            self.kernel_projection.weight.zero_()

    def prepare(self, hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        kernels = self.kernel_projection(hidden_states).view(
            *hidden_states.shape[:-1], 2, self.kernel_size, self.num_groups
        )
        convolved = grouped_dynamic_conv(
            hidden_states, kernels[..., 0, :, :], self.base_kernel[0], block_size=self.block_size
        )
        return convolved, kernels[..., 1, :, :]

    def finish(self, hidden_states: torch.Tensor, delta_kernel: torch.Tensor) -> torch.Tensor:
        return grouped_dynamic_conv(
            hidden_states, delta_kernel, self.base_kernel[1], block_size=self.block_size
        )


class DFlash2DecoderLayer(DFlashDecoderLayer):
    """A DFlash layer with a local convolution around its attention and around its MLP."""

    def __init__(
        self, config: PretrainedConfig, layer_idx: int, *, block_size: int, kernel_size: int, group_size: int
    ) -> None:
        super().__init__(config, layer_idx)
        # vLLM sizes the conv's block as 1 + num_speculative_tokens (its query length per request); with
        # k = block_size - 1 (what a dflash2 config drafts by default) that is this block_size, and the
        # conv is causal, so a shorter vLLM block only drops trailing slots.
        kwargs = dict(block_size=block_size, kernel_size=kernel_size, group_size=group_size)
        self.attention_conv = GroupedDynamicConv(config.hidden_size, **kwargs)
        self.mlp_conv = GroupedDynamicConv(config.hidden_size, **kwargs)

    def reset_convolutions(self) -> None:
        self.attention_conv.reset_parameters()
        self.mlp_conv.reset_parameters()

    def _attend(
        self, x: torch.Tensor, context: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        x, kernel = self.attention_conv.prepare(x)
        return self.attention_conv.finish(self.self_attn(x, context, cos, sin, mask), kernel)

    def _feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        x, kernel = self.mlp_conv.prepare(x)
        return self.mlp_conv.finish(self.mlp(x), kernel)


class CandidateSelector(nn.Module):
    """Bilinear predecessor x state x candidate score added to the unary logits of the top-k candidates."""

    def __init__(self, *, vocab_size: int, hidden_size: int, rank: int, top_k: int) -> None:
        super().__init__()
        self.top_k = top_k
        self.predecessor_codebook = nn.Parameter(torch.empty(vocab_size, rank))
        self.successor_codebook = nn.Parameter(torch.empty(vocab_size, rank))
        self.hidden_projection = nn.Linear(hidden_size, rank, bias=False)

    def scores(
        self,
        unary: torch.Tensor,  # [N, K] the candidates' unary logits
        states: torch.Tensor,  # [N, H] the slot's final normed state
        predecessors: torch.Tensor,  # [N] the token before the slot
        candidates: torch.Tensor,  # [N, K]
    ) -> torch.Tensor:
        """Edge scores [N, K] in float32 (vLLM's: its unary top-k values are float32, and its walk and
        rejection read float32 scores; upstream's training adds in the logits' dtype)."""
        context = self.predecessor_codebook[predecessors] * self.hidden_projection(states).to(
            self.predecessor_codebook.dtype
        )
        transition = (context[:, None, :] * self.successor_codebook[candidates]).sum(dim=-1)
        return unary.float() + transition.float()

    def walk(
        self, anchors: torch.Tensor, states: torch.Tensor, logits: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Greedy path through the drafting slots, as vLLM's `_selector_walk_kernel` at temperature 0.

        anchors [B] (the bonus token), states [B, k, H], logits [B, k, V] -> (tokens [B, k], candidates
        [B, k, K], realized scores [B, k, K]). Each slot's predecessor is the token walked at the slot
        before, the anchor for the first. Upstream's training scores the same edges with teacher-forced
        predecessors (the true previous token), which is the same path only while every pick is right;
        at inference there are no true tokens, so vLLM's walk is what drafting is.
        """
        unary, candidates = logits.topk(self.top_k, dim=-1)  # sorted, as vLLM's get_top_k_tokens
        previous = anchors
        tokens, realized = [], []
        for step in range(logits.shape[1]):
            scores = self.scores(unary[:, step], states[:, step], previous, candidates[:, step])
            # First maximum on ties, as torch.argmax and Triton's tl.max(return_indices=True) both pick.
            previous = candidates[:, step].gather(1, scores.argmax(dim=-1, keepdim=True))[:, 0]
            tokens.append(previous)
            realized.append(scores)
        return torch.stack(tokens, dim=1), candidates, torch.stack(realized, dim=1)


class DFlash2DraftModel(DFlashDraftModel):
    """DFlash2 draft. `forward` gives the unary block logits (upstream's `_backbone_forward` logits);
    `propose` drafts one block and reranks it with the candidate selector as vLLM does."""

    config_class: ClassVar[type[DFlash2Config]] = DFlash2Config  # type: ignore[assignment]
    config: DFlash2Config

    def __init__(self, config: DFlash2Config, *, attn_implementation: AttnImpl = "sdpa") -> None:
        super().__init__(config, attn_implementation=attn_implementation)
        for layer in self.layers:
            layer.reset_convolutions()  # after the parent's normal init of every Linear, as upstream
        self.candidate_selector = CandidateSelector(
            vocab_size=self.vocab_size,
            hidden_size=config.hidden_size,
            rank=config.selector_rank,
            top_k=config.selector_top_k,
        )
        std = getattr(self.layer_config, "initializer_range", 0.02)
        for weight in self.candidate_selector.parameters():
            nn.init.normal_(weight, std=std)

    def _make_layer(self, layer_config: PretrainedConfig, layer_idx: int) -> DFlashDecoderLayer:
        return DFlash2DecoderLayer(
            layer_config,
            layer_idx,
            block_size=self.config.block_size,
            kernel_size=self.config.conv_kernel_size,
            group_size=self.config.conv_group_size,
        )

    def _choose(self, anchors: torch.Tensor, states: torch.Tensor, logits: torch.Tensor) -> Proposal:
        """The selector's walk. `logits` of the proposal are vLLM's draft logits: the realized scores on
        the top-k candidates, -inf elsewhere (what its probabilistic rejection reads)."""
        tokens, candidates, scores = self.candidate_selector.walk(anchors, states, logits)
        draft_logits = torch.full_like(logits, float("-inf"), dtype=torch.float32)
        draft_logits.scatter_(-1, candidates, scores)
        return Proposal(token_ids=tokens, logits=draft_logits)

    # ----------------------------------------------------------------- loading
    def validate_state_dict(self, state: dict[str, torch.Tensor], *, source: str) -> list[str]:
        _check_dflash2_tensors(self.expected_tensors(), state, self.config, source)
        return super().validate_state_dict(state, source=source)


_CONV = ("attention_conv.", "mlp_conv.")
_SELECTOR = "candidate_selector."


def _is_dflash2_tensor(name: str) -> bool:
    return name.startswith(_SELECTOR) or any(part in name for part in _CONV)


def _shape_fix(name: str, got: Sequence[int], want: Sequence[int], config: DFlash2Config) -> str:
    """Which config.json value the stored shape implies, when it is one of the dflash2 keys."""
    hidden = config.hidden_size
    if len(got) != len(want):
        return "re-export the weights"
    if name.endswith("base_kernel") and got[0] == 2 and got[2] == hidden:
        return f"set conv_kernel_size to {got[1]}"
    if name.endswith("kernel_projection.weight") and got[1] == hidden:
        groups, rest = divmod(got[0], 2 * config.conv_kernel_size)
        if not rest and groups and hidden % groups == 0:
            return f"set conv_group_size to {hidden // groups}"
    if name.endswith("_codebook") and got[0] == want[0]:
        return f"set selector_rank to {got[1]}"
    if name.endswith("_codebook"):
        return f"the codebook covers {got[0]} tokens, the verifier vocabulary is {want[0]}: wrong verifier?"
    if name.endswith("hidden_projection.weight") and got[1] == hidden:
        return f"set selector_rank to {got[0]}"
    return "re-export the weights"


def _check_dflash2_tensors(
    expected: Mapping[str, tuple[tuple[int, ...], torch.dtype]],
    state: Mapping[str, torch.Tensor],
    config: DFlash2Config,
    source: str,
) -> None:
    """CheckpointError naming each missing or mis-shaped convolution/selector tensor and its fix."""
    problems: list[str] = []
    missing = sorted(k for k in expected if _is_dflash2_tensor(k) and k not in state)
    conv_missing = [k for k in missing if not k.startswith(_SELECTOR)]
    if conv_missing and not any(_is_dflash2_tensor(k) for k in state):
        problems.append(
            f"missing tensors {missing}: the weights have no local convolutions or candidate selector, "
            "a plain DFlash checkpoint; set speculators_model_type to dflash (architectures "
            "DFlashDraftModel) or export the dflash2 weights"
        )
    elif missing:
        problems.append(
            f"missing tensors {missing}: a dflash2 checkpoint stores every layer's attention_conv and "
            "mlp_conv and the candidate_selector; re-export the weights (num_hidden_layers in config.json "
            "must match the layers stored)"
        )
    for name in sorted(k for k in expected if _is_dflash2_tensor(k) and k in state):
        want, got = expected[name][0], tuple(state[name].shape)
        if got != want:
            problems.append(
                f"tensor {name!r} has shape {list(got)}, config.json implies {list(want)} "
                f"(conv_kernel_size {config.conv_kernel_size}, conv_group_size {config.conv_group_size}, "
                f"selector_rank {config.selector_rank}); {_shape_fix(name, got, want, config)}"
            )
    if problems:
        raise CheckpointError(f"{source}: " + "; ".join(problems))


def build_dflash2_config(
    verifier_config: Mapping[str, Any],
    *,
    verifier_name_or_path: str,
    mask_token_id: int,
    conv_kernel_size: int = 2,
    conv_group_size: int = 16,
    selector_rank: int = 256,
    selector_top_k: int = 16,
    sliding_window_non_causal: bool = True,
    **dflash_kwargs: Any,
) -> DFlash2Config:
    """A DFlash2Config: build_dflash_config's recipe (full vocabulary) plus upstream's dflash2 defaults
    (`from_training_args`: conv 2 x 16, selector rank 256 / top-16, non-causal sliding windows)."""
    if dflash_kwargs.get("draft_vocab_size") not in (None, int(verifier_config["vocab_size"])):
        raise ValueError("dflash2 drafts over the full verifier vocabulary; leave draft_vocab_size unset")
    base = build_dflash_config(
        verifier_config,
        verifier_name_or_path=verifier_name_or_path,
        mask_token_id=mask_token_id,
        **dflash_kwargs,
    )
    data = base.to_dict()
    data.pop("architectures")
    data["speculators_config"]["algorithm"] = "dflash2"
    data.update(
        speculators_model_type="dflash2",
        sliding_window_non_causal=sliding_window_non_causal,
        conv_kernel_size=conv_kernel_size,
        conv_group_size=conv_group_size,
        selector_rank=selector_rank,
        selector_top_k=selector_top_k,
    )
    config = config_from_dict(data, source="build_dflash2_config")
    assert isinstance(config, DFlash2Config)
    return config
