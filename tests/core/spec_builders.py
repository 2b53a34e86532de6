"""Tiny real models and research checkpoints for the format/model/conversion tests (built locally)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM, Qwen3Config, Qwen3ForCausalLM

from speculators_core.format import EagleConfig, GreedyProposal, SpeculatorsConfig, VerifierInfo
from speculators_core.models import Eagle3DraftModel, EagleDraftModel, build_eagle3_config

VOCAB = 512
HIDDEN = 64
LAYERS = 8
HEADS = 4
KV_HEADS = 2
AUX_IDS = [1, 4, 6]


def verifier_config(arch: str = "llama", **overrides: Any) -> LlamaConfig | Qwen3Config:
    kw: dict[str, Any] = dict(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        intermediate_size=128,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        num_key_value_heads=KV_HEADS,
        max_position_embeddings=256,
        rms_norm_eps=1e-6,
        tie_word_embeddings=False,
    )
    kw.update(overrides)
    if arch == "qwen3":
        return Qwen3Config(head_dim=HIDDEN // HEADS, **kw)
    return LlamaConfig(**kw)


def make_verifier(directory: Path, arch: str = "llama", seed: int = 0, **overrides: Any) -> Path:
    """A real (random) tiny causal LM saved with transformers: config.json + model.safetensors."""
    torch.manual_seed(seed)
    config = verifier_config(arch, **overrides)
    model = (Qwen3ForCausalLM if arch == "qwen3" else LlamaForCausalLM)(config)
    model.save_pretrained(directory)
    return directory


def verifier_dict(directory: Path) -> dict[str, Any]:
    return json.loads((directory / "config.json").read_text())


def tiny_eagle3(
    verifier_dir: Path | None = None,
    *,
    draft_vocab_size: int | None = 128,
    num_layers: int = 1,
    seed: int = 0,
    verifier_ref: str | None = None,
    **config_kwargs: Any,
) -> Eagle3DraftModel:
    """A random EAGLE-3 draft for the tiny verifier: valid vocab mapping, the verifier's embeddings."""
    torch.manual_seed(seed)
    vc = verifier_dict(verifier_dir) if verifier_dir else verifier_config().to_dict()
    config_kwargs.setdefault("aux_layer_ids", AUX_IDS)
    cfg = build_eagle3_config(
        vc,
        verifier_name_or_path=verifier_ref or (str(verifier_dir) if verifier_dir else "org/tiny-verifier"),
        draft_vocab_size=draft_vocab_size,
        num_layers=num_layers,
        **config_kwargs,
    )
    model = Eagle3DraftModel(cfg)
    if model.d2t is not None:
        selected = torch.randperm(VOCAB)[: cfg.draft_vocab_size].sort().values
        model.set_vocab_mapping(selected - torch.arange(cfg.draft_vocab_size))
    if verifier_dir and cfg.target_hidden_size is None:
        model.attach_verifier(verifier_dir)
    # Norm weights away from 1 so tests notice a norm applied in the wrong place.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or ".norm.weight" in name or name.startswith("fc_norm"):
                p.uniform_(0.5, 1.5)
    return model


def tiny_eagle(
    verifier_dir: Path, *, fusion_bias: bool = False, layernorms: bool = False, seed: int = 0
) -> EagleDraftModel:
    torch.manual_seed(seed)
    vc = verifier_config()
    layer = LlamaConfig(
        **{
            k: v
            for k, v in vc.to_dict().items()
            if k
            in (
                "vocab_size",
                "hidden_size",
                "intermediate_size",
                "num_attention_heads",
                "num_key_value_heads",
                "max_position_embeddings",
                "rms_norm_eps",
            )
        },
        num_hidden_layers=1,
    ).to_diff_dict()
    layer.pop("transformers_version", None)
    cfg = EagleConfig(
        transformer_layer_config=layer,  # type: ignore[arg-type]
        fusion_bias=fusion_bias,
        layernorms=layernorms,
        speculators_config=SpeculatorsConfig(
            algorithm="eagle",
            proposal_methods=[GreedyProposal(speculative_tokens=3)],
            verifier=VerifierInfo(name_or_path=str(verifier_dir), architectures=["LlamaForCausalLM"]),
        ),
    )
    model = EagleDraftModel(cfg)
    model.attach_verifier(verifier_dir)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
            if name == "fusion_fc.bias":
                p.uniform_(-0.1, 0.1)
    return model


def inputs(
    model: torch.nn.Module, batch: int = 2, length: int = 12, seed: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    width = model.fc.in_features if hasattr(model, "fc") else model.hidden_size
    ids = torch.randint(0, model.vocab_size, (batch, length), generator=g)
    hs = torch.randn(batch, length, width, generator=g)
    return ids, hs


# ----------------------------------------------------------------------------- research checkpoints
def _write_weights(directory: Path, state: dict[str, torch.Tensor], fmt: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().clone().contiguous() for k, v in state.items()}
    if fmt == "safetensors":
        save_file(state, str(directory / "model.safetensors"), metadata={"format": "pt"})
    elif fmt == "bin":
        torch.save(state, directory / "pytorch_model.bin")
    elif fmt in ("sharded", "sharded-bin"):
        names = sorted(state)
        half = len(names) // 2
        ext = "safetensors" if fmt == "sharded" else "bin"
        shards = {f"model-00001-of-00002.{ext}": names[:half], f"model-00002-of-00002.{ext}": names[half:]}
        weight_map = {}
        for fname, keys in shards.items():
            part = {k: state[k] for k in keys}
            if ext == "safetensors":
                save_file(part, str(directory / fname), metadata={"format": "pt"})
            else:
                torch.save(part, directory / fname)
            weight_map.update(dict.fromkeys(keys, fname))
        index = "model.safetensors.index.json" if ext == "safetensors" else "pytorch_model.bin.index.json"
        (directory / index).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    else:
        raise ValueError(fmt)


def write_safeailab_eagle3(
    directory: Path, model: Eagle3DraftModel, fmt: str = "safetensors", *, with_embed: bool = False
) -> Path:
    """What SafeAILab's EAGLE-3 trainer saves: midlayer.*, fc, norm, lm_head, d2t, t2d (+ a Llama config)."""
    state = {}
    for name, tensor in model.persistent_state().items():
        if name == "embed_tokens.weight" and not with_embed:
            continue
        state[name.replace("layers.0.", "midlayer.")] = tensor
    _write_weights(directory, state, fmt)
    lc = model.config.transformer_layer_config
    config = {
        "architectures": ["LlamaForCausalLMEagle3"],
        "model_type": "llama",
        "hidden_size": lc.hidden_size,
        "intermediate_size": lc.intermediate_size,
        "num_attention_heads": lc.num_attention_heads,
        "num_key_value_heads": lc.num_key_value_heads,
        "num_hidden_layers": 1,
        "hidden_act": "silu",
        "rms_norm_eps": 1e-6,
        "max_position_embeddings": 256,
        "rope_theta": 10000.0,
        "vocab_size": lc.vocab_size,
        "draft_vocab_size": model.draft_vocab_size,
        "torch_dtype": "float32",
        "tie_word_embeddings": False,
    }
    (directory / "config.json").write_text(json.dumps(config))
    return directory


def write_nvidia_eagle3(
    directory: Path, model: Eagle3DraftModel, aux_ids: list[int], fmt: str = "safetensors"
) -> Path:
    """What NVIDIA Model-Optimizer exports: layers.N.*, d2t without t2d, eagle_config; embed_tokens only when
    the draft's hidden size differs from the verifier's (it cannot be shared then)."""
    drop = {"t2d"} | ({"embed_tokens.weight"} if model.config.target_hidden_size is None else set())
    state = {k: v for k, v in model.persistent_state().items() if k not in drop}
    _write_weights(directory, state, fmt)
    lc = model.config.transformer_layer_config
    config = {
        "architectures": ["LlamaForCausalLMEagle3"],
        "model_type": "llama",
        "hidden_size": lc.hidden_size,
        "intermediate_size": lc.intermediate_size,
        "num_attention_heads": lc.num_attention_heads,
        "num_key_value_heads": lc.num_key_value_heads,
        "head_dim": lc.head_dim,
        "num_hidden_layers": lc.num_hidden_layers,
        "hidden_act": "silu",
        "rms_norm_eps": 1e-6,
        "max_position_embeddings": 256,
        "rope_theta": 10000.0,
        "vocab_size": lc.vocab_size,
        "draft_vocab_size": model.draft_vocab_size,
        "eagle_config": {
            "eagle_aux_hidden_state_layer_ids": aux_ids,
            "use_aux_hidden_state": True,
            "use_input_layernorm_in_first_layer": True,
            "use_last_layernorm": True,
            "use_mtp_layernorm": False,
        },
    }
    (directory / "config.json").write_text(json.dumps(config))
    return directory


def write_eagle1(directory: Path, model: EagleDraftModel, fmt: str = "bin") -> Path:
    """What the EAGLE-1/HASS research code saves: fc.*, layers.0.*, embed_tokens, optional HASS norms."""
    renames = {
        "embedding_layernorm.weight": "embed_layernorm.weight",
        "pre_lm_head_layernorm.weight": "lm_head_layernorm.weight",
        "transformer.input_layernorm.weight": "hidden_layernorm.weight",
    }
    state = {}
    for name, tensor in model.persistent_state().items():
        if name in renames:
            new = renames[name]
        elif name.startswith("fusion_fc."):
            new = "fc." + name[len("fusion_fc.") :]
        elif name.startswith("transformer."):
            new = "layers.0." + name[len("transformer.") :]
        else:
            new = name
        state[new] = tensor
    state["embed_tokens.weight"] = model.embed_tokens.weight
    _write_weights(directory, state, fmt)
    config = verifier_config().to_dict()
    config.update(num_hidden_layers=1, architectures=["LlamaForCausalLM"])
    (directory / "config.json").write_text(json.dumps(config, default=str))
    return directory
