"""Upstream speculators 0.9.0's Eagle3DraftModel: save a checkpoint, or load one, and run its forward.

stdin: {"mode": "save" | "load", "dir": checkpoint dir, "inputs": safetensors file with input_ids,
        hidden_states, document_ids, position_ids ([1, T, ...]), "outputs": safetensors file to write,
        "ttt_steps": k, "verifier": verifier dir (save), "layer": LlamaConfig kwargs (save),
        "draft_vocab_size", "aux_ids", "norm_before_residual", "norm_before_fc", "norm_output" (save)}
stdout: {"ok": true, "files": [...], "config_keys": [...]}
Logits are captured from upstream's lm_head (one call per TTT step), on CPU with sdpa attention.
"""

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from speculators.config import SpeculatorsConfig, VerifierConfig
from speculators.models.eagle3 import Eagle3DraftModel, Eagle3SpeculatorConfig
from speculators.proposals.greedy import GreedyTokenProposalConfig
from transformers import LlamaConfig

payload = json.load(sys.stdin)
torch.manual_seed(payload.get("seed", 0))
directory = Path(payload["dir"])

if payload["mode"] == "save":
    layer = LlamaConfig(**payload["layer"])
    layer._attn_implementation = "sdpa"
    config = Eagle3SpeculatorConfig(
        transformer_layer_config=layer,
        draft_vocab_size=payload["draft_vocab_size"],
        norm_before_residual=payload["norm_before_residual"],
        norm_before_fc=payload["norm_before_fc"],
        norm_output=payload["norm_output"],
        eagle_aux_hidden_state_layer_ids=payload["aux_ids"],
        speculators_config=SpeculatorsConfig(
            algorithm="eagle3",
            proposal_methods=[GreedyTokenProposalConfig(speculative_tokens=payload["ttt_steps"])],
            default_proposal_method="greedy",
            verifier=VerifierConfig.from_pretrained(payload["verifier"]),
        ),
    )
    model = Eagle3DraftModel(config)
    vocab, draft = layer.vocab_size, payload["draft_vocab_size"]
    selected = torch.randperm(vocab)[:draft].sort().values
    t2d = torch.zeros(vocab, dtype=torch.bool)
    t2d[selected] = True
    model.load_vocab_mappings(t2d, selected - torch.arange(draft))
    model.load_verifier_weights()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "verifier" in name or name.startswith(("embed_tokens", "lm_head")):
                continue
            if name.endswith("norm.weight") or ".norm" in name or name.startswith("norm"):
                p.uniform_(0.5, 1.5)
            else:
                p.normal_(0.0, 0.05)
    model.save_pretrained(directory)
else:
    config = Eagle3SpeculatorConfig.from_pretrained(directory)
    config.transformer_layer_config._attn_implementation = "sdpa"
    model = Eagle3DraftModel.from_pretrained(directory, config=config)

model.eval()
inputs = load_file(payload["inputs"])
captured = []
model.lm_head.register_forward_hook(lambda _m, _a, out: captured.append(out.detach().clone()))
with torch.no_grad():
    model(
        hidden_states=inputs["hidden_states"],
        input_ids=inputs["input_ids"],
        document_ids=inputs["document_ids"],
        position_ids=inputs["position_ids"],
        ttt_steps=payload["ttt_steps"],
    )
save_file({f"logits_{i}": t.contiguous() for i, t in enumerate(captured)}, payload["outputs"])
print(
    json.dumps(
        {
            "ok": True,
            "files": sorted(p.name for p in directory.iterdir()),
            "config_keys": sorted(json.loads((directory / "config.json").read_text())),
            "steps": len(captured),
        }
    )
)
