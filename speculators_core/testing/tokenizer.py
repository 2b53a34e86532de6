"""A real BPE tokenizer trained locally on the synthetic corpus, with a chat template.

Templates (all ChatML-shaped, `<|im_start|>role\\n…<|im_end|>\\n`):
  chatml      history rendered verbatim (prefix-stable: one sample per conversation)
  qwen3       like Qwen3: `<think>` blocks of assistant turns before the last user turn are dropped,
              so the rendered history changes between turns (exercises the split path)
  generation  chatml with `{% generation %}` markers (exercises HF's assistant mask)
  broken      never renders assistant content: a template that cannot mark assistant turns
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

_ROW = "{{- '<|im_start|>' + m['role'] + '\\n' + content + '<|im_end|>\\n' -}}"
_GEN_PROMPT = "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"

TEMPLATES = {
    "chatml": (
        "{%- for m in messages -%}{%- set content = m['content'] -%}" + _ROW + "{%- endfor -%}" + _GEN_PROMPT
    ),
    "qwen3": (
        "{%- set ns = namespace(last_user=-1) -%}"
        "{%- for m in messages -%}{%- if m['role'] == 'user' -%}{%- set ns.last_user = loop.index0 -%}"
        "{%- endif -%}{%- endfor -%}"
        "{%- for m in messages -%}{%- set content = m['content'] -%}"
        "{%- if m['role'] == 'assistant' and loop.index0 < ns.last_user and '</think>' in content -%}"
        "{%- set content = content.split('</think>')[-1].lstrip(' ') -%}{%- endif -%}"
        + _ROW
        + "{%- endfor -%}"
        + _GEN_PROMPT
    ),
    "generation": (
        "{%- for m in messages -%}"
        "{%- if m['role'] == 'assistant' -%}"
        "{{- '<|im_start|>assistant\\n' -}}{% generation %}"
        "{{- m['content'] + '<|im_end|>\\n' -}}{% endgeneration %}"
        "{%- else -%}{{- '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' -}}{%- endif -%}"
        "{%- endfor -%}" + _GEN_PROMPT
    ),
    "broken": (
        "{%- for m in messages -%}{%- if m['role'] != 'assistant' -%}{%- set content = m['content'] -%}"
        + _ROW
        + "{%- endif -%}{%- endfor -%}"
        + _GEN_PROMPT
    ),
}

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
REASONING_TOKENS = ["<think>", "</think>"]


def train_tokenizer(
    texts: Iterable[str], out_dir: str | Path, vocab_size: int = 512, template: str = "chatml"
):
    """Train a byte-level BPE on `texts`, wrap it as a transformers fast tokenizer, save it, return it."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    # Reasoning markers are ordinary (non-special) added tokens, as in Qwen3: decode keeps them.
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in REASONING_TOKENS])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token=None,
        unk_token=None,
        model_max_length=4096,
    )
    fast.chat_template = TEMPLATES[template]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(out)
    return fast


def with_template(tokenizer_dir: str | Path, out_dir: str | Path, template: str):
    """Copy a saved tokenizer with another chat template (e.g. `broken` for bad-input tests)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    tok.chat_template = TEMPLATES[template]
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(str(out_dir))
    return tok
