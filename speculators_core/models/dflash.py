"""DFlash draft model (speculators format `dflash`): a whole block of draft tokens in one non-causal pass.

Weights (names as vLLM 0.33's DFlashDraftModel and upstream speculators 0.9.0 load them):
    fc.weight [H, n_aux*H_v]          fusion of the verifier's aux hidden states (no bias)
    hidden_norm.weight [H]            norm of the fused context
    layers.N.{input_layernorm, post_attention_layernorm}.weight, layers.N.self_attn.{q,k,v,o}_proj.weight,
    layers.N.self_attn.{q,k}_norm.weight, layers.N.mlp.{gate,up,down}_proj.weight   (Qwen3 layers)
    norm.weight [H]
    lm_head.weight [V_draft, H], d2t, t2d   only for a reduced draft vocabulary
The verifier's embed_tokens (and, for a full-vocabulary draft, its lm_head) are borrowed, never stored.

One pass (upstream 0.9.0 `_backbone_forward`, vLLM's DFlash proposer):
    ctx    = hidden_norm(fc(aux))                            [B, T, H]  the verifier's fused states
    block  = embed_tokens([x_a, MASK, ..., MASK])            [B, bs, H] per anchor a
    each layer: queries from the block; keys/values from cat(ctx, block); rotary positions pos(p) for
                the context and pos(a) + j for slot j
    a block sees context positions p < a of its document (and within the sliding window on sliding
    layers) and every slot of itself (non-causal; sliding layers causal unless sliding_window_non_causal)
    logits = lm_head(norm(block))                            slot j predicts x_{a+j}
Slot 0 holds the anchor, the token the verifier just produced (the bonus token), so with
sample_from_anchor false a block drafts x_{a+1} .. x_{a+bs-1}.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PretrainedConfig

from speculators_core.format.dflash import RECIPE_BLOCK_SIZE, RECIPE_NUM_LAYERS, DFlashConfig
from speculators_core.format.envelope import SpeculatorsConfig
from speculators_core.format.errors import CheckpointError, IncompatibleError
from speculators_core.models.attention import AttnImpl, document_ids_from
from speculators_core.models.base import DraftModel, Proposal, aligned_shape, default_position_ids, last_rows
from speculators_core.models.eagle3 import VocabMapping, default_aux_layer_ids, draft_layer_config
from speculators_core.models.layers import MLP, RMSNorm, apply_rotary, head_dim_of, is_sliding_layer
from speculators_core.models.verifier import load_verifier_tensors


class DFlashAttention(nn.Module):
    """Queries from the block; keys and values from the fused context followed by the block."""

    def __init__(self, config: PretrainedConfig, layer_idx: int) -> None:
        super().__init__()
        self.head_dim = head_dim_of(config)
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = getattr(config, "num_key_value_heads", None) or self.num_heads
        self.scaling = self.head_dim**-0.5
        self.sliding = is_sliding_layer(config, layer_idx)
        bias = bool(getattr(config, "attention_bias", False))
        hidden = config.hidden_size
        self.q_proj = nn.Linear(hidden, self.num_heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(hidden, self.num_kv_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(hidden, self.num_kv_heads * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, hidden, bias=bias)
        self.q_norm = RMSNorm(self.head_dim, eps=config.rms_norm_eps)
        self.k_norm = RMSNorm(self.head_dim, eps=config.rms_norm_eps)

    def forward(
        self,
        block: torch.Tensor,  # [B, Q, H]
        context: torch.Tensor,  # [B, C, H]
        cos: torch.Tensor,  # [B, C+Q, D]: context positions, then block positions
        sin: torch.Tensor,
        mask: torch.Tensor,  # [B|1, 1, Q, C+Q] bool
    ) -> torch.Tensor:
        batch, rows, _ = block.shape
        length = context.shape[1] + rows
        q = self.q_norm(self.q_proj(block).view(batch, rows, self.num_heads, self.head_dim)).transpose(1, 2)
        kv_in = torch.cat([context, block], dim=1)
        k = self.k_norm(self.k_proj(kv_in).view(batch, length, self.num_kv_heads, self.head_dim))
        v = self.v_proj(kv_in).view(batch, length, self.num_kv_heads, self.head_dim)
        k, v = k.transpose(1, 2), v.transpose(1, 2)
        q, _ = apply_rotary(q, q, cos[:, -rows:], sin[:, -rows:])
        k, _ = apply_rotary(k, k, cos, sin)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, scale=self.scaling, enable_gqa=self.num_heads != self.num_kv_heads
        )
        return self.o_proj(out.transpose(1, 2).reshape(batch, rows, self.num_heads * self.head_dim))


class DFlashDecoderLayer(nn.Module):
    """A Qwen3 pre-norm layer whose attention also reads the context (which it does not change)."""

    def __init__(self, config: PretrainedConfig, layer_idx: int) -> None:
        super().__init__()
        self.self_attn = DFlashAttention(config, layer_idx)
        self.mlp = MLP(config)
        self.input_layernorm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    def forward(
        self,
        block: torch.Tensor,
        context: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        masks: tuple[torch.Tensor, torch.Tensor],
    ) -> torch.Tensor:
        mask = masks[1] if self.self_attn.sliding else masks[0]
        block = block + self._attend(self.input_layernorm(block), context, cos, sin, mask)
        return block + self._feed_forward(self.post_attention_layernorm(block))

    # The sublayers, as hooks: DFlash2 wraps each in its local convolutions.
    def _attend(
        self, x: torch.Tensor, context: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        return self.self_attn(x, context, cos, sin, mask)

    def _feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x)


def block_mask(
    limits: torch.Tensor,  # [B, A]: block j sees context positions p < limits[j]
    document_ids: torch.Tensor | None,  # [B, T], -1 = padding
    block_docs: torch.Tensor | None,  # [B, A]: the document of each block
    length: int,
    block_size: int,
    *,
    sliding_window: int | None = None,
    causal_block: bool = False,
) -> torch.Tensor:
    """[B, 1, A*bs, T + A*bs] bool: block j sees context p < limits[j] of its document (and within the
    window below the anchor), and its own slots (all of them, or those up to itself when causal_block)."""
    batch, count = limits.shape
    device = limits.device
    rows = count * block_size
    q_limit = limits.repeat_interleave(block_size, dim=1)  # [B, Q]
    p = torch.arange(length, device=device)
    ctx = p[None, None, :] < q_limit[:, :, None]  # [B, Q, T]
    if sliding_window is not None:
        ctx = ctx & (p[None, None, :] >= q_limit[:, :, None] - sliding_window)
    if document_ids is not None and block_docs is not None:
        q_doc = block_docs.repeat_interleave(block_size, dim=1)
        ctx = ctx & (document_ids[:, None, :] == q_doc[:, :, None]) & (q_doc[:, :, None] != -1)
    q = torch.arange(rows, device=device)
    own = (q[:, None] // block_size) == (q[None, :] // block_size)  # [Q, Q]
    if causal_block:
        own = own & (q[None, :] <= q[:, None])
    return torch.cat([ctx, own[None].expand(batch, rows, rows)], dim=-1)[:, None]


class DFlashDraftModel(VocabMapping, DraftModel):
    """DFlash draft. `forward` drafts blocks at given anchors (training and offline evaluation);
    `propose` drafts one block after each sequence's last position (what vLLM's proposer does)."""

    config_class: ClassVar[type[DFlashConfig]] = DFlashConfig
    config: DFlashConfig

    def __init__(self, config: DFlashConfig, *, attn_implementation: AttnImpl = "sdpa") -> None:
        super().__init__(config, attn_implementation=attn_implementation)
        lc = self.layer_config
        hidden = config.hidden_size
        self.vocab_size = config.transformer_layer_config.vocab_size
        self.draft_vocab_size = config.draft_vocab_size
        self.block_size = config.block_size
        self.embed_tokens = nn.Embedding(self.vocab_size, hidden)
        self.embed_tokens.weight.requires_grad_(False)
        self.fc = nn.Linear(
            len(config.aux_hidden_state_layer_ids) * config.verifier_hidden_size, hidden, bias=False
        )
        self.hidden_norm = RMSNorm(hidden, eps=lc.rms_norm_eps)
        self.layers = nn.ModuleList([self._make_layer(lc, i) for i in range(lc.num_hidden_layers)])
        self.norm = RMSNorm(hidden, eps=lc.rms_norm_eps)
        self.lm_head = nn.Linear(hidden, self.draft_vocab_size, bias=False)
        self._init_vocab_mapping(config.uses_vocab_mapping)
        if self.d2t is None:  # a full-vocabulary draft drafts with the verifier's own (frozen) lm_head
            self.lm_head.weight.requires_grad_(False)
        self.verifier_loaded = False
        self.head_trained = (
            False  # a reduced head loaded from a checkpoint: the verifier's must not replace it
        )
        std = getattr(lc, "initializer_range", 0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear | nn.Embedding):
                nn.init.normal_(module.weight, std=std)

    def _make_layer(self, layer_config: PretrainedConfig, layer_idx: int) -> DFlashDecoderLayer:
        """One draft layer (DFlash2 wraps the same attention and MLP in convolutions)."""
        return DFlashDecoderLayer(layer_config, layer_idx)

    # ----------------------------------------------------------------- what is stored
    @property
    def borrowed(self) -> tuple[str, ...]:
        """Tensors taken from the verifier, never saved."""
        return ("embed_tokens.weight",) if self.d2t is not None else ("embed_tokens.weight", "lm_head.weight")

    def persistent_state(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.state_dict().items() if k not in self.borrowed}

    def needs_verifier(self) -> bool:
        return not self.verifier_loaded

    def set_verifier_tensors(self, embed: torch.Tensor, lm_head: torch.Tensor) -> None:
        """The verifier's embeddings, and its lm_head: the head itself for a full-vocabulary draft, the
        draft vocabulary's rows as the initial head of a reduced one (upstream's init)."""
        if tuple(embed.shape) != tuple(self.embed_tokens.weight.shape):
            raise IncompatibleError(
                f"verifier embeddings have shape {list(embed.shape)}, the draft expects "
                f"{list(self.embed_tokens.weight.shape)} (vocab_size x hidden_size); the draft does not fit "
                "this verifier"
            )
        head = lm_head[self.t2d.cpu()] if self.t2d is not None else lm_head
        if tuple(head.shape) != tuple(self.lm_head.weight.shape):
            raise IncompatibleError(
                f"verifier lm_head rows have shape {list(head.shape)}, the draft lm_head is "
                f"{list(self.lm_head.weight.shape)}"
            )
        with torch.no_grad():
            self.embed_tokens.weight.copy_(embed.to(self.embed_tokens.weight.dtype))
            if not self.head_trained:
                self.lm_head.weight.copy_(head.to(self.lm_head.weight.dtype))
        self.verifier_loaded = True

    def attach_verifier(self, verifier: str | os.PathLike[str], *, revision: str | None = None) -> None:
        tensors = load_verifier_tensors(verifier, ["embed", "lm_head"], revision=revision)
        self.set_verifier_tensors(tensors["embed"], tensors["lm_head"])

    def validate_state_dict(self, state: dict[str, torch.Tensor], *, source: str) -> list[str]:
        self._check_mapping_tensors(state, source)
        return super().validate_state_dict(state, source=source)

    def _after_load(self, state: dict[str, torch.Tensor], *, source: str) -> None:
        self.head_trained = "lm_head.weight" in state
        self._check_mapping(source)

    def _check_before_save(self, state: dict[str, torch.Tensor]) -> None:
        if self.d2t is not None and not (self.verifier_loaded or self.head_trained):
            # A reduced head is stored: it must be the verifier's rows or a trained one, not the init.
            raise CheckpointError(
                "the draft-vocabulary lm_head was never set; call attach_verifier(verifier) or load weights"
            )
        super()._check_before_save(state)

    # ----------------------------------------------------------------- forward
    def fuse(self, hidden_states: torch.Tensor) -> torch.Tensor:
        expected = self.fc.in_features
        if hidden_states.shape[-1] != expected:
            n_aux = len(self.config.aux_hidden_state_layer_ids)
            raise ValueError(
                f"hidden_states last dim is {hidden_states.shape[-1]}, expected {expected} "
                f"({n_aux} aux layers x verifier hidden size {self.config.verifier_hidden_size})"
            )
        return self.hidden_norm(self.fc(hidden_states.to(self.fc.weight.dtype)))

    def _blocks(self, *args: torch.Tensor | None) -> torch.Tensor:
        """Logits [B, A*bs, V_draft] of the blocks (arguments as _block_states)."""
        return self.lm_head(self._block_states(*args))  # type: ignore[arg-type]

    def _block_states(
        self,
        hidden_states: torch.Tensor,  # [B, T, n_aux*H_v] context states
        context_positions: torch.Tensor,  # [B, T] rotary positions of the context
        documents: torch.Tensor | None,  # [B, T]
        anchor_tokens: torch.Tensor,  # [B, A]
        anchor_positions: torch.Tensor,  # [B, A] rotary position of each anchor token
        limits: torch.Tensor,  # [B, A] block j sees context p < limits[j]
        block_docs: torch.Tensor | None,  # [B, A]
    ) -> torch.Tensor:
        """The blocks' final normed states [B, A*bs, H] (what lm_head reads, and DFlash2's selector)."""
        if not self.verifier_loaded:
            raise CheckpointError(
                "the verifier's embeddings are not loaded; load with verifier=... or call attach_verifier"
            )
        batch, length = hidden_states.shape[:2]
        bs = self.block_size
        device = hidden_states.device
        block_ids = torch.full(
            (batch, anchor_tokens.shape[1], bs), self.config.mask_token_id, dtype=torch.long, device=device
        )
        block_ids[:, :, 0] = anchor_tokens
        block = self.embed_tokens(block_ids.view(batch, -1))
        context = self.fuse(hidden_states)
        block_pos = (anchor_positions[:, :, None] + torch.arange(bs, device=device)).view(batch, -1)
        cos, sin = self.rotary_emb(block, torch.cat([context_positions, block_pos], dim=1))
        full = block_mask(limits, documents, block_docs, length, bs)
        sliding = full
        if self.sliding_window:
            sliding = block_mask(
                limits,
                documents,
                block_docs,
                length,
                bs,
                sliding_window=self.sliding_window,
                causal_block=not self.config.sliding_window_non_causal,
            )
        for layer in self.layers:
            block = layer(block, context, cos, sin, (full, sliding))
        return self.norm(block)

    def forward(  # type: ignore[override]
        self,
        input_ids: torch.Tensor,
        hidden_states: torch.Tensor,
        anchors: torch.Tensor | None = None,
        *,
        rows: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        document_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Draft logits [B, A*bs, V_draft] of the blocks at `anchors` [B, A] (positions into the sequence),
        or at `rows` in the trainer's shifted layout (see forward_rows; through forward so that DDP/FSDP
        wrappers run it).

        Unshifted inputs (upstream's layout): input_ids[t] = x_t and hidden_states[t] = the verifier's aux
        states after x_t ([B, T, n_aux*H_v], in aux_hidden_state_layer_ids order). Slot j of the block at a
        predicts x_{a+j}; its target is the verifier's distribution at position a + j - 1.
        """
        if (anchors is None) == (rows is None):
            raise ValueError("pass exactly one of anchors (unshifted layout) or rows (shifted layout)")
        if rows is not None:
            return self.forward_rows(
                input_ids,
                hidden_states,
                rows,
                attention_mask=attention_mask,
                document_ids=document_ids,
                position_ids=position_ids,
            )
        assert anchors is not None
        batch, length = aligned_shape(input_ids, hidden_states)
        docs = document_ids_from(attention_mask, document_ids, batch, length)
        if position_ids is None:
            position_ids = default_position_ids(docs, batch, length, input_ids.device) - 1  # 0-based
        anchors = anchors.to(device=input_ids.device, dtype=torch.long)
        return self._blocks(
            hidden_states,
            position_ids,
            docs,
            input_ids.gather(1, anchors),
            position_ids.gather(1, anchors),
            anchors,
            docs.gather(1, anchors) if docs is not None else None,
        )

    def forward_rows(
        self,
        input_ids: torch.Tensor,
        hidden_states: torch.Tensor,
        rows: torch.Tensor,
        *,
        attention_mask: torch.Tensor | None = None,
        document_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """`forward` in the trainer's shifted layout (row t: input_ids = x_{t+1}, hidden_states = g_t): the
        block at row r is anchored at x_{r+1} and sees the states of rows <= r of its document; slot j
        predicts x_{r+1+j}, whose target is the verifier's distribution after x_{r+j} (row r+j-1 of the
        shifted `last`). position_ids: rotary positions of the states (default 0 at each document start)."""
        return self._blocks(
            *self._row_inputs(
                input_ids,
                hidden_states,
                rows,
                attention_mask=attention_mask,
                document_ids=document_ids,
                position_ids=position_ids,
            )
        )

    def _row_inputs(
        self,
        input_ids: torch.Tensor,
        hidden_states: torch.Tensor,
        rows: torch.Tensor,
        *,
        attention_mask: torch.Tensor | None = None,
        document_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor | None, ...]:
        """_block_states' arguments for blocks anchored after `rows` in the shifted layout."""
        batch, length = aligned_shape(input_ids, hidden_states)
        docs = document_ids_from(attention_mask, document_ids, batch, length)
        if position_ids is None:
            position_ids = default_position_ids(docs, batch, length, input_ids.device) - 1
        rows = rows.to(device=input_ids.device, dtype=torch.long)
        return (
            hidden_states,
            position_ids,
            docs,
            input_ids.gather(1, rows),
            position_ids.gather(1, rows) + 1,
            rows + 1,
            docs.gather(1, rows) if docs is not None else None,
        )

    @torch.no_grad()
    def propose(  # type: ignore[override]
        self,
        input_ids: torch.Tensor,
        hidden_states: torch.Tensor,
        num_tokens: int | None = None,
        *,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> Proposal:
        """Draft up to max_speculative_tokens tokens after each sequence's last real position, in one pass.

        Aligned as every draft's `propose` (see DraftModel.propose): for a prefix x_0..x_n with verifier
        states g_0..g_n and the verifier's next token x_{n+1}, input_ids = x_1..x_{n+1} and
        hidden_states = g_0..g_n. x_{n+1} is the anchor; its block sees g_0..g_n. Greedy, as vLLM drafts.
        """
        k = num_tokens or self.config.max_speculative_tokens
        if not 1 <= k <= self.config.max_speculative_tokens:
            raise ValueError(
                f"num_tokens {k}: a block of {self.block_size} drafts at most "
                f"{self.config.max_speculative_tokens}"
            )
        batch, length = input_ids.shape
        rows = last_rows(attention_mask, batch, length, input_ids.device)[:, None]
        inputs = self._row_inputs(
            input_ids, hidden_states, rows, attention_mask=attention_mask, position_ids=position_ids
        )
        first = 0 if self.config.sample_from_anchor else 1
        states = self._block_states(*inputs)[:, first : first + k]  # type: ignore[arg-type]
        return self._choose(input_ids.gather(1, rows)[:, 0], states, self.lm_head(states))

    def _choose(self, anchors: torch.Tensor, states: torch.Tensor, logits: torch.Tensor) -> Proposal:
        """The drafted tokens of one block per sequence from its drafting slots' states [B, k, H] and
        logits [B, k, V_draft]: each slot's argmax (DFlash2 reranks with its candidate selector)."""
        return Proposal(token_ids=self.to_target_ids(logits.argmax(dim=-1)), logits=logits)


def build_dflash_config(
    verifier_config: Mapping[str, Any],
    *,
    verifier_name_or_path: str,
    mask_token_id: int,
    num_layers: int = RECIPE_NUM_LAYERS,
    block_size: int = RECIPE_BLOCK_SIZE,
    draft_vocab_size: int | None = None,
    aux_layer_ids: Sequence[int] | None = None,
    speculative_tokens: int | None = None,
    sliding_window: int | None = 2048,
    sample_from_anchor: bool = False,
    layer_overrides: Mapping[str, Any] | None = None,
) -> DFlashConfig:
    """A DFlashConfig shaped after a verifier's (text) config, with upstream's recipe as defaults: 5 Qwen3
    layers, block 16, every layer a causal sliding window of 2048, aux layers [2, n//2, n-3], and k the
    whole block (block_size - 1)."""
    vc = dict(verifier_config)
    layer = draft_layer_config(
        vc,
        num_layers=num_layers,
        draft_arch="qwen3",
        sliding_window=sliding_window,
        layer_overrides=layer_overrides,
    )
    ids = (
        list(aux_layer_ids)
        if aux_layer_ids is not None
        else default_aux_layer_ids(int(vc["num_hidden_layers"]))
    )
    max_k = block_size if sample_from_anchor else block_size - 1
    return DFlashConfig(
        transformer_layer_config=layer,  # type: ignore[arg-type]
        draft_vocab_size=draft_vocab_size or int(vc["vocab_size"]),
        block_size=block_size,
        target_hidden_size=None if layer["hidden_size"] == vc["hidden_size"] else int(vc["hidden_size"]),
        aux_hidden_state_layer_ids=ids,
        mask_token_id=mask_token_id,
        sliding_window_non_causal=False,
        sample_from_anchor=sample_from_anchor,
        speculators_config=SpeculatorsConfig.greedy(
            "dflash", speculative_tokens or max_k, verifier_name_or_path, vc.get("architectures")
        ),
    )
