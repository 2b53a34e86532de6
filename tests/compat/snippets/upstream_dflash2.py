"""Upstream speculators 0.9.0's DFlash2DraftModel: save a checkpoint, or load one; run its block forward and
rerank every block with its own CandidateSelector.

stdin: {"mode": "save" | "load", "dir": checkpoint dir, "inputs": safetensors file with input_ids,
        hidden_states, document_ids ([1, T, ...]) and anchors ([A]), "outputs": safetensors file to write,
        "verifier": verifier dir, save only: "layer" (Qwen3Config kwargs), "aux_ids", "block_size",
        "mask_token_id", "sliding_window" (or null), "conv_kernel_size", "conv_group_size",
        "selector_rank", "selector_top_k", "sample_from_anchor"}
stdout: {"ok": true, "files": [...], "speculative_tokens": k, "config": {...}}
outputs: "logits" (the unary block logits [1, A*bs, V], upstream's `_backbone_forward`), and per block the
greedy selector walk over its drafting slots: "tokens" [A, k], "candidates" [A, k, top_k], "scores"
[A, k, top_k], plus "unary_argmax" [A, k]. Upstream 0.9.0 has no inference loop; the walk calls its
`CandidateSelector.select` slot by slot with the token picked for the slot before as predecessor (the
anchor for the first), which is what its training scores with the true tokens and vLLM serves.
"""

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from speculators.models.dflash import core as dflash_core
from speculators.models.dflash2 import DFlash2DraftModel, DFlash2SpeculatorConfig
from transformers import Qwen3Config

payload = json.load(sys.stdin)
torch.manual_seed(payload.get("seed", 0))
directory = Path(payload["dir"])

if payload["mode"] == "save":
    kwargs = dict(payload["layer"])
    window = payload.get("sliding_window")
    if window:
        n = kwargs["num_hidden_layers"]
        kwargs.update(sliding_window=window, use_sliding_window=True, layer_types=["sliding_attention"] * n)
    layer = Qwen3Config(**kwargs)
    model = DFlash2DraftModel.from_training_args(
        layer,
        draft_vocab_size=layer.vocab_size,
        block_size=payload["block_size"],
        verifier_name_or_path=payload["verifier"],
        target_layer_ids=payload["aux_ids"],
        mask_token_id=payload["mask_token_id"],
        draft_attn_impl="sdpa",
        sample_from_anchor=payload.get("sample_from_anchor", False),
        conv_kernel_size=payload["conv_kernel_size"],
        conv_group_size=payload["conv_group_size"],
        selector_rank=payload["selector_rank"],
        selector_top_k=payload["selector_top_k"],
    )
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "verifier" in name or name.startswith(("embed_tokens", "lm_head")):
                continue
            if name.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)
            elif "_codebook" in name:
                p.normal_(0.0, 1.0)  # selector scores of the unary logits' scale: reranks do happen
            elif "_conv." in name:
                p.normal_(0.0, 0.3)  # away from the identity init, so the convolutions show
            else:
                p.normal_(0.0, 0.05)
    model.save_pretrained(directory)
else:
    config = DFlash2SpeculatorConfig.from_pretrained(directory)
    config.transformer_layer_config._attn_implementation = "sdpa"
    model = DFlash2DraftModel.from_pretrained(directory, config=config)
    model.load_verifier_weights()

model.eval()
inputs = load_file(payload["inputs"])
anchors = inputs["anchors"].long()
dflash_core.select_anchors = lambda loss_mask, n, block_size: (
    anchors,
    torch.ones_like(anchors, dtype=torch.bool),
)
input_ids = inputs["input_ids"]
length = input_ids.shape[1]
with torch.no_grad():
    hidden, logits, *_ = model._backbone_forward(
        hidden_states=inputs["hidden_states"],
        input_ids=input_ids,
        loss_mask=torch.ones(1, length),
        verifier_last_hidden_states=torch.zeros(1, length, model.config.transformer_layer_config.hidden_size),
        document_ids=inputs["document_ids"],
        max_anchors=anchors.numel(),
    )
    bs = model.block_size
    first = 0 if model.config.sample_from_anchor else 1
    k = model.config.speculators_config.proposal_methods[0].speculative_tokens
    hidden = hidden[0].view(anchors.numel(), bs, -1)[:, first : first + k]
    unary = logits[0].view(anchors.numel(), bs, -1)[:, first : first + k]
    tokens, candidates, scores = [], [], []
    previous = input_ids[0, anchors]
    for slot in range(k):
        ids, edge = model.candidate_selector.select(unary[:, slot], hidden[:, slot], previous)
        previous = ids.gather(1, edge.argmax(dim=-1, keepdim=True))[:, 0]
        tokens.append(previous)
        candidates.append(ids)
        scores.append(edge)
save_file(
    {
        "logits": logits.contiguous(),
        "tokens": torch.stack(tokens, dim=1).contiguous(),
        "candidates": torch.stack(candidates, dim=1).contiguous(),
        "scores": torch.stack(scores, dim=1).float().contiguous(),
        "unary_argmax": unary.argmax(dim=-1).contiguous(),
    },
    payload["outputs"],
)
print(
    json.dumps(
        {
            "ok": True,
            "files": sorted(p.name for p in directory.iterdir()),
            "speculative_tokens": k,
            "config": json.loads((directory / "config.json").read_text()),
        }
    )
)
