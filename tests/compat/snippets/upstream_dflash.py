"""Upstream speculators 0.9.0's DFlashDraftModel: save a checkpoint, or load one, and run its block forward.

stdin: {"mode": "save" | "load", "dir": checkpoint dir, "inputs": safetensors file with input_ids,
        hidden_states, document_ids ([1, T, ...]) and anchors ([A]), "outputs": safetensors file to write,
        "verifier": verifier dir, save only: "layer" (Qwen3Config kwargs), "draft_vocab_size", "aux_ids",
        "block_size", "mask_token_id", "sliding_window" (or null)}
stdout: {"ok": true, "files": [...], "speculative_tokens": k}
Logits are captured from upstream's lm_head over the anchors' blocks, on CPU with sdpa attention; the
anchors are the given ones (upstream's random select_anchors is replaced by them).
"""

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from speculators.models.dflash import DFlashDraftModel, DFlashSpeculatorConfig
from speculators.models.dflash import core as dflash_core
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
    vocab, draft = layer.vocab_size, payload["draft_vocab_size"]
    t2d = d2t = None
    if draft != vocab:
        selected = torch.randperm(vocab)[:draft].sort().values
        t2d = torch.zeros(vocab, dtype=torch.bool)
        t2d[selected] = True
        d2t = selected - torch.arange(draft)
    model = DFlashDraftModel.from_training_args(
        layer,
        t2d=t2d,
        d2t=d2t,
        draft_vocab_size=draft,
        block_size=payload["block_size"],
        verifier_name_or_path=payload["verifier"],
        target_layer_ids=payload["aux_ids"],
        mask_token_id=payload["mask_token_id"],
        draft_attn_impl="sdpa",
    )
    with torch.no_grad():
        for name, p in model.named_parameters():
            if (
                "verifier" in name
                or name.startswith("embed_tokens")
                or (name == "lm_head.weight" and t2d is None)
            ):
                continue
            if name.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)
            else:
                p.normal_(0.0, 0.05)
    model.save_pretrained(directory)
else:
    config = DFlashSpeculatorConfig.from_pretrained(directory)
    config.transformer_layer_config._attn_implementation = "sdpa"
    model = DFlashDraftModel.from_pretrained(directory, config=config)
    model.load_verifier_weights()

model.eval()
inputs = load_file(payload["inputs"])
anchors = inputs["anchors"].long()
dflash_core.select_anchors = lambda loss_mask, n, block_size: (
    anchors,
    torch.ones_like(anchors, dtype=torch.bool),
)
captured = []
model.lm_head.register_forward_hook(lambda _m, _a, out: captured.append(out.detach().clone()))
length = inputs["input_ids"].shape[1]
with torch.no_grad():
    model._backbone_forward(
        hidden_states=inputs["hidden_states"],
        input_ids=inputs["input_ids"],
        loss_mask=torch.ones(1, length),
        verifier_last_hidden_states=torch.zeros(1, length, model.config.transformer_layer_config.hidden_size),
        document_ids=inputs["document_ids"],
        max_anchors=anchors.numel(),
    )
save_file({"logits": captured[0].contiguous()}, payload["outputs"])
print(
    json.dumps(
        {
            "ok": True,
            "files": sorted(p.name for p in directory.iterdir()),
            "speculative_tokens": model.config.speculators_config.proposal_methods[0].speculative_tokens,
        }
    )
)
