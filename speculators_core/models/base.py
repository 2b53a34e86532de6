"""Shared machinery of the torch draft models: the train-time-test unroll, drafting, loading and saving.

Subclasses (EAGLE-3, EAGLE-1/HASS) provide three hooks:
    _fuse(hidden_states) -> [B, T, H]                  what step 0 starts from (e.g. fc over aux states)
    _step(input_ids, hidden, ctx, caches) -> (logits, next_hidden)
    to_target_ids(draft_ids) -> target ids             draft vocabulary -> verifier vocabulary

The unroll semantics are documented on `DraftModel.forward` and in docs/format.md.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from speculators_core.format import CONFIG_NAME, load_config, save_config
from speculators_core.format.envelope import SpeculatorModelConfig
from speculators_core.format.errors import CheckpointError, FormatError
from speculators_core.models.attention import ATTN_IMPLS, AttnImpl, document_ids_from, step0_mask
from speculators_core.models.hub import snapshot
from speculators_core.models.layers import LayerCache, StepContext, hf_layer_config, rotary_embedding
from speculators_core.models.weights import WEIGHTS_NAME, atomic_directory, load_state_dict, save_safetensors

Feed = Literal["teacher", "draft"]
CHECKPOINT_PATTERNS = ("config.json", "*.safetensors", "*.safetensors.index.json")


@dataclass
class DraftOutput:
    """Result of `forward`.

    logits: one [B, R, V_draft] tensor per TTT step (R = T rows, or the selected rows when drafting).
    hidden_states: one [B, R, H] tensor per step: the state fed to the next step (post-norm when
        norm_output, else the last layer's output); only with `output_hidden_states=True`.
    draft_ids: one [B, R] tensor per step: argmax of that step, mapped to verifier token ids.
    """

    logits: list[torch.Tensor]
    draft_ids: list[torch.Tensor]
    hidden_states: list[torch.Tensor] | None = None


@dataclass
class Proposal:
    """Drafted continuation: `token_ids` [B, k] in the verifier vocabulary, `logits` [B, k, V_draft]."""

    token_ids: torch.Tensor
    logits: torch.Tensor


def default_position_ids(
    document_ids: torch.Tensor | None, batch: int, length: int, device: torch.device
) -> torch.Tensor:
    """1 + index within the document (or within the real tokens), matching upstream's shifted positions."""
    idx = torch.arange(length, device=device).expand(batch, length)
    if document_ids is None:
        return idx + 1
    prev = torch.cat([torch.full_like(document_ids[:, :1], -2), document_ids[:, :-1]], dim=1)
    starts = torch.where(document_ids != prev, idx, torch.zeros_like(idx))
    starts = torch.cummax(starts, dim=1).values
    return (idx - starts + 1).clamp(min=1)


def aligned_shape(input_ids: torch.Tensor, hidden_states: torch.Tensor) -> tuple[int, int]:
    """(B, T) of input_ids [B, T] and hidden_states [B, T, ...] (ValueError when they disagree)."""
    batch, length = input_ids.shape
    if hidden_states.shape[:2] != (batch, length):
        raise ValueError(
            f"hidden_states {tuple(hidden_states.shape)} must be [B, T, ...] with B, T = {batch}, {length}"
        )
    return batch, length


def last_rows(
    attention_mask: torch.Tensor | None, batch: int, length: int, device: torch.device
) -> torch.Tensor:
    """Index of each sequence's last real position ([B]); works for left and right padding."""
    if attention_mask is None:
        return torch.full((batch,), length - 1, dtype=torch.long, device=device)
    idx = torch.arange(length, device=device).expand(batch, length)
    return torch.where(attention_mask.bool(), idx, torch.full_like(idx, -1)).max(dim=1).values.clamp(min=0)


def _gather_rows(x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """x[b, rows[b]] kept as a length-1 sequence: [B, T, ...] -> [B, 1, ...]."""
    index = rows.view(-1, 1, *([1] * (x.dim() - 2))).expand(-1, 1, *x.shape[2:])
    return x.gather(1, index)


class DraftModel(nn.Module):
    """Base of the draft models. Not a transformers PreTrainedModel: weights and config follow the
    speculators format directly (see `save_pretrained` / `from_pretrained`)."""

    config_class: ClassVar[type[SpeculatorModelConfig]]
    # Tensors the format never stores (borrowed from the verifier at load time).
    verifier_owned: ClassVar[tuple[str, ...]] = ()
    # Tensors that may be absent from a checkpoint (the model then needs `attach_verifier`).
    optional_tensors: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: SpeculatorModelConfig, *, attn_implementation: AttnImpl = "sdpa") -> None:
        super().__init__()
        if attn_implementation not in ATTN_IMPLS:
            raise ValueError(
                f"attn_implementation {attn_implementation!r} is not supported; allowed: "
                f"{', '.join(ATTN_IMPLS)}"
            )
        self.config = config
        self.attn_implementation: AttnImpl = attn_implementation
        self.layer_config = hf_layer_config(config.transformer_layer_config.to_hf_dict())  # type: ignore[attr-defined]
        # Not registered as a submodule: its inv_freq stays float32 whatever dtype the weights use
        # (as in upstream, whose HF loader computes it in float32), and it is never saved.
        object.__setattr__(self, "rotary_emb", rotary_embedding(self.layer_config))
        self.sliding_window: int | None = getattr(self.layer_config, "sliding_window", None)

    # ----------------------------------------------------------------- hooks
    @property
    def num_cache_layers(self) -> int:
        """Decoder layers that keep keys/values across steps."""
        return len(self.layers)  # type: ignore[arg-type]

    def needs_verifier(self) -> bool:
        """Whether verifier-borrowed tensors are still missing (see attach_verifier)."""
        return False

    def _fuse(self, hidden_states: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _step(
        self, input_ids: torch.Tensor, hidden: torch.Tensor, ctx: StepContext, caches: list[LayerCache]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def to_target_ids(self, draft_ids: torch.Tensor) -> torch.Tensor:
        """Map draft-vocabulary ids to verifier ids (identity for a full-vocabulary draft)."""
        return draft_ids

    # ----------------------------------------------------------------- forward
    def forward(
        self,
        input_ids: torch.Tensor,
        hidden_states: torch.Tensor,
        *,
        ttt_steps: int = 1,
        attention_mask: torch.Tensor | None = None,
        document_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        feed: Feed = "teacher",
        output_hidden_states: bool = False,
        _rows: torch.Tensor | None = None,
    ) -> DraftOutput:
        """Unroll the draft for `ttt_steps` steps over every position (train-time test / offline drafting).

        Inputs (aligned like upstream's `shift_batch`; see docs/format.md):
            input_ids      [B, T]  token at position t is the token that FOLLOWS the verifier state at t
                                   (x_{t+1}); for drafting, the last one is the verifier's sampled token.
            hidden_states  [B, T, n_aux*H_v] (EAGLE-3: aux states concatenated in layer-id order)
                           or [B, T, H] (EAGLE-1: last hidden state): the verifier's state after x_t.
            attention_mask [B, T]  1 = real token, 0 = padding (optional)
            document_ids   [B, T]  packed documents, -1 = padding (optional; attention stays in-document)
            position_ids   [B, T]  rotary position of input_ids[t]; default 1 + index within the document.
        Step s (0-based) at row t:
            feeds  token  input_ids[t + s] (feed="teacher"; zeros past the end, as upstream) or the previous
                          step's argmax at row t mapped to verifier ids (feed="draft"),
                   state  hidden_states fused (s == 0) or the previous step's output at row t (s > 0),
                   position position_ids[t] + s,
            attends to step-0 keys t' <= t of its document (sliding layers: t - t' < window) and to the
                   keys of steps 1..s at row t (the diagonal),
            predicts the token after input_ids[t + s], i.e. x_{t+s+2}: its target is the verifier's
                   distribution at position t + s + 1 (upstream drops the last s rows of step s).
        Returns DraftOutput with per-step logits over the draft vocabulary ([B, T, V_draft]); no tensor over
        the verifier vocabulary is built.
        """
        if ttt_steps < 1:
            raise ValueError(f"ttt_steps must be >= 1, got {ttt_steps}")
        if feed not in ("teacher", "draft"):
            raise ValueError(f"feed must be 'teacher' or 'draft', got {feed!r}")
        batch, length = aligned_shape(input_ids, hidden_states)
        device = input_ids.device
        docs = document_ids_from(attention_mask, document_ids, batch, length)
        if position_ids is None:
            position_ids = default_position_ids(docs, batch, length, device)
        full_mask = step0_mask(length, docs, None, device)
        sliding_mask = step0_mask(length, docs, self.sliding_window, device) if self.sliding_window else None

        caches = [LayerCache() for _ in range(self.num_cache_layers)]
        hidden = self._fuse(hidden_states)
        ids = input_ids
        positions = position_ids
        out = DraftOutput(logits=[], draft_ids=[], hidden_states=[] if output_hidden_states else None)
        for step in range(ttt_steps):
            cos, sin = self.rotary_emb(hidden, positions + step)
            ctx = StepContext(
                cos=cos,
                sin=sin,
                full_mask=full_mask,
                sliding_mask=sliding_mask,
                impl=self.attn_implementation,
            )
            logits, hidden = self._step(ids, hidden, ctx, caches)
            if step == 0 and _rows is not None:
                # Drafting: later steps only for the selected row of each sequence.
                logits, hidden = _gather_rows(logits, _rows), _gather_rows(hidden, _rows)
                positions = _gather_rows(positions, _rows)
                full_mask = step0_mask(length, docs, None, device, rows=_rows)
                sliding_mask = (
                    step0_mask(length, docs, self.sliding_window, device, rows=_rows)
                    if self.sliding_window
                    else None
                )
            draft = self.to_target_ids(logits.argmax(dim=-1))
            out.logits.append(logits)
            out.draft_ids.append(draft)
            if out.hidden_states is not None:
                out.hidden_states.append(hidden)
            if step + 1 == ttt_steps:
                break
            if feed == "draft":
                ids = draft
            else:
                shift = step + 1
                ids = torch.cat(
                    [input_ids[:, shift:], input_ids.new_zeros(batch, min(shift, length))], dim=1
                )[:, :length]
        return out

    @torch.no_grad()
    def propose(
        self,
        input_ids: torch.Tensor,
        hidden_states: torch.Tensor,
        num_tokens: int,
        *,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> Proposal:
        """Draft `num_tokens` tokens autoregressively after each sequence's last real position.

        input_ids/hidden_states are aligned as in `forward`: for a prefix x_0..x_n with verifier states
        g_0..g_n and the verifier's next token x_{n+1}, pass input_ids = x_1..x_{n+1} and
        hidden_states = g_0..g_n. Returns the drafted continuation d_1..d_k (verifier ids) of x_{n+1},
        the same tokens `forward(feed="draft")` produces at that row (greedy, as vLLM's drafter).
        Padding may be on either side (`attention_mask`).
        """
        batch, length = input_ids.shape
        rows = last_rows(attention_mask, batch, length, input_ids.device)
        out = self.forward(
            input_ids,
            hidden_states,
            ttt_steps=num_tokens,
            attention_mask=attention_mask,
            position_ids=position_ids,
            feed="draft",
            _rows=rows,
        )
        return Proposal(
            token_ids=torch.cat(out.draft_ids, dim=1),
            logits=torch.cat(out.logits, dim=1),
        )

    # ----------------------------------------------------------------- weights
    def persistent_state(self) -> dict[str, torch.Tensor]:
        """The tensors the format stores (verifier-owned ones excluded)."""
        return {k: v for k, v in self.state_dict().items() if k not in self.verifier_owned}

    def expected_tensors(self) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
        return {k: (tuple(v.shape), v.dtype) for k, v in self.persistent_state().items()}

    def validate_state_dict(self, state: dict[str, torch.Tensor], *, source: str) -> list[str]:
        """Check names and shapes against the config; returns the allowed-missing tensors.

        CheckpointError lists every unexpected, missing or mis-shaped tensor with the fix.
        """
        expected = self.expected_tensors()
        unexpected = sorted(set(state) - set(expected))
        missing = sorted(set(expected) - set(state))
        missing_required = [k for k in missing if k not in self.optional_tensors]
        problems: list[str] = []
        if unexpected:
            problems.append(
                f"unexpected tensors {unexpected} (not part of a {self.config.speculators_model_type} draft "
                "with "
                "this config.json; a config/weights mismatch, or weights of another model)"
            )
        if missing_required:
            problems.append(f"missing tensors {missing_required}")
        for name in sorted(set(state) & set(expected)):
            shape, dtype = expected[name]
            got = tuple(state[name].shape)
            if got != shape:
                problems.append(f"tensor {name!r} has shape {list(got)}, config.json implies {list(shape)}")
            elif (
                dtype in (torch.bool, torch.int64)
                and state[name].dtype != dtype
                and state[name].is_floating_point()
            ):
                problems.append(f"tensor {name!r} has dtype {state[name].dtype}, expected {dtype}")
        if problems:
            raise CheckpointError(
                f"{source}: " + "; ".join(problems) + "; fix config.json or re-export the weights"
            )
        return [k for k in missing if k in self.optional_tensors]

    def load_weights(self, state: dict[str, torch.Tensor], *, source: str = "state dict") -> list[str]:
        """Validate, then copy tensors in (cast to each parameter's dtype; d2t/t2d keep theirs).

        Returns the optional tensors the state lacked (e.g. embed_tokens: then `needs_verifier()`)."""
        allowed_missing = self.validate_state_dict(state, source=source)
        own = self.state_dict()
        with torch.no_grad():
            for name, tensor in state.items():
                target = own[name]
                target.copy_(tensor.to(dtype=target.dtype, device=target.device))
        self._after_load(state, source=source)
        return allowed_missing

    def _after_load(self, state: dict[str, torch.Tensor], *, source: str) -> None:
        """Cross-tensor checks (e.g. d2t/t2d consistency) after a load."""

    def attach_verifier(self, verifier: str | os.PathLike[str], *, revision: str | None = None) -> None:
        """Copy the tensors borrowed from the verifier (embeddings, lm_head) from its weights."""

    # ----------------------------------------------------------------- save / load
    def save_pretrained(self, directory: str | os.PathLike[str], *, overwrite: bool = True) -> Path:
        """Write config.json + model.safetensors into `directory` (temporary directory, then rename)."""
        state = self.persistent_state()
        self._check_before_save(state)
        with atomic_directory(directory, overwrite=overwrite) as tmp:
            save_config(self.config, tmp)
            save_safetensors(state, tmp / WEIGHTS_NAME)
            self._add_dtype_to_config(tmp, state)
        return Path(directory)

    def _check_before_save(self, state: dict[str, torch.Tensor]) -> None:
        for name, tensor in state.items():
            if tensor.is_floating_point() and not torch.isfinite(tensor).all():
                raise CheckpointError(
                    f"tensor {name!r} has NaN/inf values; it was never loaded (attach the verifier or "
                    "load weights) or training diverged"
                )

    @staticmethod
    def _add_dtype_to_config(directory: Path, state: dict[str, torch.Tensor]) -> None:
        """Record the weights' dtype (`dtype`, as transformers 5 writes it) in config.json."""
        floats = [t.dtype for t in state.values() if t.is_floating_point()]
        if not floats:
            return
        path = directory / CONFIG_NAME
        data: dict[str, Any] = json.loads(path.read_text())
        data["dtype"] = str(max(set(floats), key=floats.count)).removeprefix("torch.")
        data.setdefault("tie_word_embeddings", False)
        path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike[str],
        *,
        verifier: str | os.PathLike[str] | None = None,
        revision: str | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        attn_implementation: AttnImpl = "sdpa",
    ) -> DraftModel:
        """Load a speculators checkpoint from a local directory or a hub id.

        verifier: copy the verifier-borrowed tensors (EAGLE-1 embeddings/lm_head; EAGLE-3 embed_tokens
        when the checkpoint lacks it) from this verifier; default: the config's verifier when it is a local
        directory. dtype: default the checkpoint's floating dtype.
        """
        directory = snapshot(name_or_path, allow_patterns=CHECKPOINT_PATTERNS, revision=revision)
        config = load_config(directory)
        if not isinstance(config, cls.config_class):
            raise FormatError(
                f"{directory / CONFIG_NAME}: speculators_model_type {config.speculators_model_type!r} is not "
                f"loadable by {cls.__name__}; use speculators_core.models.load_draft_model"
            )
        state, files = load_state_dict(directory)
        floats = [t.dtype for t in state.values() if t.is_floating_point()]
        model_dtype = dtype or (max(set(floats), key=floats.count) if floats else torch.float32)
        model = cls(config, attn_implementation=attn_implementation)  # type: ignore[arg-type]
        model.to(dtype=model_dtype)
        model.load_weights(state, source=", ".join(str(f) for f in files))
        if model.needs_verifier():
            ref = verifier if verifier is not None else _local_verifier(config)
            if ref is not None:
                model.attach_verifier(ref, revision=None)
        if device is not None:
            model.to(device)
        return model


def _local_verifier(config: SpeculatorModelConfig) -> str | None:
    ref = config.verifier_name_or_path
    return ref if ref and Path(ref).is_dir() else None
