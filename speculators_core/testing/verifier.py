"""A tiny Llama verifier, trained for real on the synthetic corpus so its predictions have structure.

`build_tiny_stack` is what tests and benchmarks call: it builds (or reuses from a cache keyed by the
spec) a tokenizer trained locally, a verifier trained on chat-rendered synthetic conversations, and
two JSONL datasets (train and held-out) in the ShareGPT/OpenAI shapes `prepare-data` reads.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import random
import shutil
from pathlib import Path
from typing import Any

from speculators_core.testing import corpus

# Bump when the builders change in a way that changes their output: invalidates caches.
BUILDER_VERSION = 3


@dataclasses.dataclass(frozen=True)
class TinyStackSpec:
    num_layers: int = 8  # >= 7 so the default aux layers [2, L//2, L-3] are distinct
    hidden_size: int = 64
    intermediate_size: int = 128
    num_heads: int = 4
    num_kv_heads: int = 2
    vocab_size: int = 512
    template: str = "chatml"
    corpus_conversations: int = 4000  # verifier pre-training corpus
    train_steps: int = 150
    batch_size: int = 16
    lr: float = 5e-3
    data_conversations: int = 600  # the dataset prepare-data reads
    heldout_conversations: int = 64
    seed: int = 0

    def key(self) -> str:
        blob = json.dumps({**dataclasses.asdict(self), "v": BUILDER_VERSION}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclasses.dataclass(frozen=True)
class TinyStack:
    root: Path
    verifier: Path  # model + tokenizer (a directory `from_pretrained` reads)
    train_data: Path  # JSONL conversations
    heldout_data: Path
    info: dict[str, Any]


def default_cache_dir() -> Path:
    env = os.environ.get("SPECULATORS_TESTING_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "speculators-operator" / "testing"


def build_tiny_stack(spec: TinyStackSpec | None = None, cache_dir: str | Path | None = None) -> TinyStack:
    """Build or reuse the tiny tokenizer + trained verifier + datasets for `spec`."""
    spec = spec or TinyStackSpec()
    root = Path(cache_dir) if cache_dir else default_cache_dir()
    final = root / spec.key()
    if not (final / "info.json").exists():
        tmp = root / f".tmp-{spec.key()}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        _build(spec, tmp)
        try:
            os.replace(tmp, final)
        except OSError:  # another process finished first: keep theirs
            shutil.rmtree(tmp, ignore_errors=True)
    info = json.loads((final / "info.json").read_text())
    return TinyStack(
        root=final,
        verifier=final / "verifier",
        train_data=final / "data" / "train.jsonl",
        heldout_data=final / "data" / "heldout.jsonl",
        info=info,
    )


def _build(spec: TinyStackSpec, out: Path) -> None:
    from speculators_core.testing.tokenizer import train_tokenizer

    convs = list(corpus.conversations(spec.corpus_conversations, seed=spec.seed + 1000))
    # The tokenizer learns from rendered text, so it learns the template's markers too.
    import jinja2

    from speculators_core.testing.tokenizer import TEMPLATES

    tmpl = jinja2.Environment().from_string(TEMPLATES["chatml"])
    texts = [tmpl.render(messages=c, add_generation_prompt=False) for c in convs]
    tok = train_tokenizer(texts, out / "verifier", vocab_size=spec.vocab_size, template=spec.template)
    stats = train_verifier(spec, tok, convs, out / "verifier")
    corpus.write_jsonl(out / "data" / "train.jsonl", spec.data_conversations, seed=spec.seed + 1)
    corpus.write_jsonl(out / "data" / "heldout.jsonl", spec.heldout_conversations, seed=spec.seed + 2)
    info = {"spec": dataclasses.asdict(spec), "vocab_size": len(tok), **stats}
    (out / "info.json").write_text(json.dumps(info, indent=1))


def tiny_llama_config(spec: TinyStackSpec, vocab_size: int, **overrides: Any):
    from transformers import LlamaConfig

    kwargs: dict[str, Any] = {
        "vocab_size": vocab_size,
        "hidden_size": spec.hidden_size,
        "intermediate_size": spec.intermediate_size,
        "num_hidden_layers": spec.num_layers,
        "num_attention_heads": spec.num_heads,
        "num_key_value_heads": spec.num_kv_heads,
        "max_position_embeddings": 2048,
        "rms_norm_eps": 1e-5,
        "tie_word_embeddings": False,
        "bos_token_id": None,
        "eos_token_id": None,
        "pad_token_id": None,
    }
    kwargs.update(overrides)
    return LlamaConfig(**kwargs)


def train_verifier(spec: TinyStackSpec, tok: Any, convs: list[list[dict[str, str]]], out_dir: Path) -> dict:
    """Next-token training of a tiny Llama on chat-rendered conversations; saves model + config."""
    import torch
    from transformers import LlamaForCausalLM

    torch.manual_seed(spec.seed)
    rng = random.Random(spec.seed)
    config = tiny_llama_config(
        spec,
        len(tok),
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    config._attn_implementation = "sdpa"
    model = LlamaForCausalLM(config)
    ids = [tok.apply_chat_template(c, tokenize=True, return_dict=False) for c in convs]
    ids = [list(x["input_ids"]) if isinstance(x, dict) else list(x) for x in ids]
    opt = torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=0.01, betas=(0.9, 0.95))
    warmup = max(1, spec.train_steps // 20)

    def lr_at(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, spec.train_steps - warmup))) * 0.9 + 0.1

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    model.train()
    losses = []
    for _step in range(spec.train_steps):
        batch = rng.sample(ids, spec.batch_size)
        width = max(len(x) for x in batch)
        inp = torch.full((len(batch), width), tok.pad_token_id, dtype=torch.long)
        att = torch.zeros((len(batch), width), dtype=torch.long)
        for i, x in enumerate(batch):
            inp[i, : len(x)] = torch.tensor(x)
            att[i, : len(x)] = 1
        labels = inp.masked_fill(att == 0, -100)
        out = model(input_ids=inp, attention_mask=att, labels=labels)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(out.loss.detach()))
    model.eval()
    model.save_pretrained(out_dir)
    tail = losses[-20:]
    return {"verifier_final_loss": sum(tail) / len(tail), "verifier_first_loss": losses[0]}
