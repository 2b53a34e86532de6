"""The verifier's auxiliary hidden states and last hidden state, captured during a plain forward pass.

Layer id i means the residual stream entering decoder layer i (= the output of layer i-1; id 0 is the
embeddings), the convention of vLLM's EAGLE-3 aux layers; id L (the number of layers) is the last
layer's output. The "last hidden state" is the last layer's output *before* the final norm, so
targets are `lm_head(norm(last))` as in upstream speculators and vLLM's `extract_hidden_states`.

Hooks capture only the requested tensors; the lm_head is never run (the base decoder is called), so
datagen costs one decoder forward pass.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

from speculators_core.data.errors import IncompatibleDataError, InputError


def default_layer_ids(num_layers: int) -> list[int]:
    """Upstream's default [2, L//2, L-3]; a usage error (pass --layer-ids) when they are not distinct."""
    from speculators_core.models.eagle3 import default_aux_layer_ids

    try:
        return default_aux_layer_ids(num_layers)
    except ValueError as exc:
        raise InputError(str(exc).replace("aux_layer_ids explicitly", "--layer-ids")) from None


def check_layer_ids(layer_ids: Sequence[int], num_layers: int) -> list[int]:
    ids = [int(i) for i in layer_ids]
    if not ids:
        raise InputError("--layer-ids is empty; give e.g. 2,16,29")
    if len(set(ids)) != len(ids):
        raise InputError(f"--layer-ids {ids} has duplicates; aux layer ids must be distinct")
    bad = [i for i in ids if not 0 <= i <= num_layers]
    if bad:
        raise InputError(
            f"--layer-ids {bad} out of range: the verifier has {num_layers} layers (ids 0..{num_layers})"
        )
    return ids


def load_verifier(
    ref: str | os.PathLike[str],
    *,
    revision: str | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> Any:
    """The verifier as a transformers causal LM in eval mode (bf16 on GPU, fp32 on CPU by default)."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # Job logs take JSON lines, not carriage-return bars
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if dtype is None:
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(
        str(ref), revision=revision, dtype=dtype, attn_implementation="sdpa"
    )
    return model.to(device).eval().requires_grad_(False)


def decoder_of(model: Any) -> Any:
    dec = model.get_decoder() if hasattr(model, "get_decoder") else getattr(model, "model", None)
    if dec is not None and not hasattr(dec, "layers") and hasattr(dec, "language_model"):
        dec = dec.language_model  # multimodal wrappers
    if dec is None or not hasattr(dec, "layers") or not hasattr(dec, "norm"):
        raise IncompatibleDataError(
            f"{type(model).__name__}: cannot find the decoder layers and final norm; only decoder-only "
            "causal LMs (Llama, Qwen, Mistral, ...) are supported"
        )
    return dec


class VerifierFeatures:
    """Run the verifier and return, per sequence, aux [T, n_aux*H] and last [T, H] hidden states."""

    NORMED = -1  # key of the final norm's output: the feature an EAGLE-1/HASS draft reads

    def __init__(
        self, model: Any, layer_ids: Sequence[int] | None = None, *, normed_last: bool = False
    ) -> None:
        """`normed_last`: the first returned tensor is the verifier's final-norm output [T, H] (what vLLM
        feeds EAGLE-1/HASS drafts) instead of the concatenated aux layers."""
        self.model = model
        self.normed_last = normed_last
        self.decoder = decoder_of(model)
        self.num_layers = len(self.decoder.layers)
        self.hidden_size = int(model.config.get_text_config().hidden_size)
        if layer_ids:
            self.layer_ids = check_layer_ids(layer_ids, self.num_layers)
        elif layer_ids is not None or normed_last:  # [] or an EAGLE-1/HASS draft: no aux layers
            self.layer_ids = []
        else:
            self.layer_ids = default_layer_ids(self.num_layers)
        self.device = next(model.parameters()).device
        self._captured: dict[int, torch.Tensor] = {}

    def _hooks(self) -> list[Any]:
        def pre(idx: int):
            def hook(_module: Any, args: tuple, kwargs: dict) -> None:
                self._captured[idx] = args[0] if args else kwargs["hidden_states"]

            return hook

        handles = []
        for i in self.layer_ids:
            target = self.decoder.layers[i] if i < self.num_layers else self.decoder.norm
            handles.append(target.register_forward_pre_hook(pre(i), with_kwargs=True))
        if self.num_layers not in self.layer_ids:
            handles.append(
                self.decoder.norm.register_forward_pre_hook(pre(self.num_layers), with_kwargs=True)
            )
        if self.normed_last:

            def post(_module: Any, _args: tuple, output: Any) -> None:
                self._captured[self.NORMED] = output[0] if isinstance(output, tuple) else output

            handles.append(self.decoder.norm.register_forward_hook(post))
        return handles

    def _features(self) -> torch.Tensor:
        if self.normed_last:
            return self._captured[self.NORMED]
        if not self.layer_ids:
            return self._captured[self.num_layers]
        return torch.cat([self._captured[i] for i in self.layer_ids], dim=-1)

    @contextlib.contextmanager
    def capturing(self) -> Iterator[Callable[[], tuple[torch.Tensor, torch.Tensor]]]:
        """Capture during any forward of the model run inside the block (e.g. with a KV cache);
        the yielded function returns (aux, last) of the latest forward."""
        handles = self._hooks()

        def collect() -> tuple[torch.Tensor, torch.Tensor]:
            return self._features(), self._captured[self.num_layers]

        try:
            yield collect
        finally:
            for h in handles:
                h.remove()
            self._captured.clear()

    @torch.no_grad()
    def forward_padded(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-padded batch [B, T] -> aux [B, T, n_aux*H], last [B, T, H] (model dtype, model device)."""
        handles = self._hooks()
        try:
            self.decoder(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
            aux = self._features()
            last = self._captured[self.num_layers]
        finally:
            for h in handles:
                h.remove()
            self._captured.clear()
        return aux, last

    def __call__(
        self, seqs: Sequence[torch.Tensor], pad_id: int = 0
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per-sequence features for a list of 1-D token tensors (one right-padded batch)."""
        width = max(int(s.shape[0]) for s in seqs)
        inp = torch.full((len(seqs), width), pad_id, dtype=torch.long)
        att = torch.zeros((len(seqs), width), dtype=torch.long)
        for r, s in enumerate(seqs):
            inp[r, : s.shape[0]] = s
            att[r, : s.shape[0]] = 1
        aux, last = self.forward_padded(inp.to(self.device), att.to(self.device))
        return [(aux[r, : s.shape[0]], last[r, : s.shape[0]]) for r, s in enumerate(seqs)]


def length_batches(lengths: Sequence[int], batch_tokens: int) -> list[list[int]]:
    """Indices grouped into right-padded batches of at most `batch_tokens` padded tokens, by length
    (little padding); each batch keeps at least one sample."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        width = max([lengths[j] for j in current] + [lengths[i]])
        if current and width * (len(current) + 1) > batch_tokens:
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches
