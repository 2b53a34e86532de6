"""vLLM 0.33.0's own DFlash2 inference pieces on a dflash2 checkpoint, on CPU: its CandidateSelector and
DFlashGroupedConv modules (weights loaded strictly by the checkpoint's names), its `_score_edges`, its
selector walk kernel and its grouped-conv kernel (both run by Triton's interpreter).

stdin: {"dir": checkpoint dir, "verifier": verifier dir (its lm_head.weight is the draft's head),
        "inputs": safetensors with "states" [R, k, H] (the draft's final normed states at its drafting
        slots), "anchors" [R] (the bonus tokens), "conv_in" and "conv_mid" [N, H] (N a multiple of k + 1),
        "outputs": safetensors file to write, "num_speculative_tokens": k}
stdout: {"ok": true, "top_k": K}
outputs: "tokens" [R, k] and "scores" [R, k, K] (the walk at temperature 0 and the realized scores it
caches as draft logits), "candidates" [R, k, K]; per layer L and conv C (attention_conv, mlp_conv):
"L.C.prepared" / "L.C.finished" (module, CPU path) and "L.C.prepared_kernel" / "L.C.finished_kernel"
(the Triton kernel vLLM runs on GPU).

vLLM's model module cannot be imported here (its multimodal stack needs packages this parser-only
environment lacks), so the definitions are taken from its source files with `ast` and executed with
torch, real Triton (in interpreter mode) and a plain nn.Linear for ReplicatedLinear (unquantized, one
rank: the same weight and matmul). The top-k is `get_top_k_tokens` at one rank with scale 1 and no soft
cap: `torch.topk` of the head's logits, values as float32.
"""

import os

os.environ["TRITON_INTERPRET"] = "1"  # before Triton is imported: kernels run on CPU tensors

import ast
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
import triton
import triton.language as tl
import vllm
import vllm.triton_utils
from safetensors.torch import load_file, save_file
from torch import nn

# Without a GPU driver vLLM swaps Triton for a placeholder; give its modules the real one (interpreted).
vllm.triton_utils.triton, vllm.triton_utils.tl = triton, tl
from vllm.v1.worker.gpu.sample.gumbel import gumbel_noised_argmax, spec_step_seed  # noqa: E402

ROOT = Path(vllm.__file__).parent


def vllm_definitions(relative: str, names: set[str], namespace: dict) -> None:
    """Execute the named top-level definitions of a vLLM source file (line numbers kept, for Triton)."""
    path = ROOT / relative
    tree = ast.parse(path.read_text())
    nodes = [n for n in tree.body if isinstance(n, ast.FunctionDef | ast.ClassDef) and n.name in names]
    missing = names - {n.name for n in nodes}
    if missing:
        raise SystemExit(f"{path}: no definition of {sorted(missing)}")
    exec(compile(ast.Module(body=nodes, type_ignores=[]), str(path), "exec"), namespace)


def replicated_linear(input_size, output_size, *, bias, params_dtype, quant_config, prefix, return_bias):
    assert quant_config is None and not return_bias
    return nn.Linear(input_size, output_size, bias=bias, dtype=params_dtype)


ns: dict = {
    "torch": torch,
    "nn": nn,
    "F": F,
    "tl": tl,
    "triton": triton,
    "gumbel_noised_argmax": gumbel_noised_argmax,
    "spec_step_seed": spec_step_seed,
    "ReplicatedLinear": replicated_linear,
    "QuantizationConfig": object,
    "support_torch_compile": lambda cls: cls,
    "maybe_prefix": lambda prefix, name: f"{prefix}.{name}" if prefix else name,
}
vllm_definitions(
    "model_executor/models/qwen3_dflash2.py",
    {
        "_dflash2_grouped_conv_kernel",
        "dflash2_grouped_conv_impl",
        "_grouped_conv",
        "DFlashGroupedConv",
        "_score_edges",
        "CandidateSelector",
    },
    ns,
)
vllm_definitions("v1/worker/gpu/spec_decode/dflash2/speculator.py", {"_selector_walk_kernel"}, ns)

payload = json.load(sys.stdin)
directory = Path(payload["dir"])
config = json.loads((directory / "config.json").read_text())
weights = load_file(directory / "model.safetensors")
lm_head = load_file(Path(payload["verifier"]) / "model.safetensors")["lm_head.weight"].float()
inputs = load_file(payload["inputs"])
layer = config["transformer_layer_config"]
hidden_size, vocab = layer["hidden_size"], layer["vocab_size"]
k = int(payload["num_speculative_tokens"])
top_k = int(config["selector_top_k"])
out: dict[str, torch.Tensor] = {}


def strict(module: nn.Module, prefix: str) -> nn.Module:
    # The names vLLM's loader resolves under model.<prefix>; strict: a missing, extra or mis-shaped one fails.
    module.load_state_dict({n[len(prefix) :]: t for n, t in weights.items() if n.startswith(prefix)})
    return module


with torch.no_grad():
    selector = strict(
        ns["CandidateSelector"](
            hidden_size=hidden_size,
            vocab_size=vocab,
            rank=int(config["selector_rank"]),
            top_k=top_k,
            params_dtype=torch.float32,
            prefix="candidate_selector",
        ),
        "candidate_selector.",
    )
    states, anchors = inputs["states"].float(), inputs["anchors"].long()
    requests = states.shape[0]
    assert states.shape[1] == k, (states.shape, k)
    values, candidate_ids = torch.topk(states.flatten(0, 1) @ lm_head.T, top_k, dim=-1)
    candidate_ids = candidate_ids.view(requests, k, top_k)
    unary = values.float().view_as(candidate_ids)
    scores = selector(candidate_ids, unary, states, anchors)  # [R, k, K predecessors, K candidates]
    tokens = torch.zeros(requests * k, dtype=torch.int64)
    realized = torch.zeros(requests, k, top_k, dtype=torch.float32)
    ns["_selector_walk_kernel"][(requests,)](
        scores.contiguous(),
        candidate_ids.contiguous(),
        torch.arange(requests * k, dtype=torch.int64) + 1,  # sample positions: unused at temperature 0
        torch.arange(requests, dtype=torch.int64).repeat_interleave(k),
        torch.zeros(requests, dtype=torch.float32),  # temperature 0: greedy
        torch.zeros(requests, dtype=torch.int64),
        tokens,
        realized,
        num_steps=k,
        top_k=top_k,
        BLOCK_K=triton.next_power_of_2(top_k),
        SAMPLE_PROBABILISTIC=False,
        USE_FP64=False,
        num_warps=1,
    )
    out.update(tokens=tokens.view(requests, k), scores=realized, candidates=candidate_ids)

    taps, group_size = int(config["conv_kernel_size"]), int(config["conv_group_size"])
    block = 1 + k  # vLLM's conv block: the query tokens of one request
    for index in range(layer["num_hidden_layers"]):
        for side in ("attention_conv", "mlp_conv"):
            name = f"layers.{index}.{side}"
            conv = strict(
                ns["DFlashGroupedConv"](
                    hidden_size=hidden_size,
                    taps=taps,
                    group_size=group_size,
                    block_size=block,
                    params_dtype=torch.float32,
                    prefix=name,
                ),
                f"{name}.",
            )
            prepared, coefficients = conv.prepare(inputs["conv_in"].float())
            out[f"{name}.prepared"] = prepared
            out[f"{name}.finished"] = conv.finish(inputs["conv_mid"].float(), coefficients)
            first = conv.kernel_projection(inputs["conv_in"].float()).reshape(-1, 2, taps, conv.num_groups)
            impl = ns["dflash2_grouped_conv_impl"]
            out[f"{name}.prepared_kernel"] = impl(
                inputs["conv_in"].float().contiguous(), first[:, 0], conv.base_kernel[0], block, group_size
            )
            out[f"{name}.finished_kernel"] = impl(
                inputs["conv_mid"].float().contiguous(), first[:, 1], conv.base_kernel[1], block, group_size
            )

save_file({n: t.contiguous() for n, t in out.items()}, payload["outputs"])
print(json.dumps({"ok": True, "top_k": top_k}))
