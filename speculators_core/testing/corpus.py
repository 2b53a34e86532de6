"""A synthetic chat corpus with real structure, for tiny verifiers in tests and benchmarks.

The point is a verifier whose next-token distributions are far from uniform (the answers follow
rules) and far from trivial (stories are sampled from a grammar, lists are random, numbers must be
added and copied), so a draft has something to learn and acceptance length means something.

Conversations come out in the two shapes real datasets use: ShareGPT (`conversations` with
`from`/`value`) and OpenAI (`messages` with `role`/`content`). Some assistant turns open with a
`<think> … </think>` block so reasoning handling is exercised.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

NAMES = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy"]
ANIMALS = ["cat", "dog", "bird", "fish", "horse", "mouse", "tiger", "lion", "bear", "wolf", "fox", "owl"]
COLORS = ["red", "blue", "green", "yellow", "black", "white", "orange", "purple", "pink", "brown"]
FRUITS = ["apple", "banana", "cherry", "grape", "lemon", "mango", "peach", "pear", "plum", "melon"]
PLACES = ["the park", "the river", "the city", "the forest", "the beach", "the market", "the school"]
CATEGORIES = {"animals": ANIMALS, "colors": COLORS, "fruits": FRUITS}
# Verbs depend on the kind of object: the grammar has dependencies a model can learn.
VERBS = {
    "animal": ["saw", "fed", "chased", "found", "followed"],
    "fruit": ["ate", "bought", "picked", "dropped", "shared"],
    "place": ["walked to", "ran to", "went to", "looked at", "left"],
}
ADVERBS = ["quickly", "slowly", "happily", "quietly", "again", "today", "yesterday"]
NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]


def _story(rng: random.Random, name: str) -> str:
    sentences = []
    for _ in range(rng.randint(2, 4)):
        kind = rng.choice(list(VERBS))
        verb = rng.choice(VERBS[kind])
        if kind == "animal":
            obj = f"a {rng.choice(COLORS)} {rng.choice(ANIMALS)}"
        elif kind == "fruit":
            obj = f"{rng.choice(NUMBER_WORDS[2:6])} {rng.choice(FRUITS)}s"
        else:
            obj = rng.choice(PLACES)
        tail = f" {rng.choice(ADVERBS)}" if rng.random() < 0.5 else ""
        sentences.append(f"{name} {verb} {obj}{tail} .")
        name = rng.choice(["then " + name, "later " + name, name, "she" if rng.random() < 0.5 else "he"])
    return " ".join(sentences) + " the end ."


def _exchange(rng: random.Random) -> tuple[str, str, str]:
    """One (user, reasoning, answer) exchange of a random kind."""
    kind = rng.choice(["story", "count", "add", "repeat", "list", "spell"])
    if kind == "story":
        name = rng.choice(NAMES)
        return f"tell me a story about {name} .", f"a short story about {name} .", _story(rng, name)
    if kind == "count":
        a = rng.randint(0, 40)
        b = a + rng.randint(3, 9)
        nums = " , ".join(str(i) for i in range(a, b + 1))
        return f"count from {a} to {b} .", f"start at {a} and stop at {b} .", f"{nums} ."
    if kind == "add":
        a, b = rng.randint(0, 50), rng.randint(0, 50)
        return f"what is {a} plus {b} ?", f"{a} plus {b} .", f"{a} plus {b} is {a + b} ."
    if kind == "repeat":
        words = rng.sample(ANIMALS + COLORS + FRUITS, rng.randint(3, 6))
        text = " ".join(words)
        return f"repeat after me : {text}", "copy the words .", f"{text}"
    if kind == "list":
        cat = rng.choice(list(CATEGORIES))
        n = rng.randint(2, 5)
        items = rng.sample(CATEGORIES[cat], n)
        return (
            f"name {NUMBER_WORDS[n]} {cat} .",
            f"pick {NUMBER_WORDS[n]} {cat} .",
            f"here are {NUMBER_WORDS[n]} {cat} : " + " , ".join(items) + " .",
        )
    word = rng.choice(ANIMALS + FRUITS + COLORS)
    return f"spell {word} .", f"the word {word} .", f"{word} is spelled " + " - ".join(word) + " ."


def conversation(rng: random.Random, *, think_prob: float = 0.2, max_turns: int = 3) -> list[dict[str, str]]:
    """A list of {role, content} messages: optional system, then 1..max_turns exchanges."""
    messages: list[dict[str, str]] = []
    if rng.random() < 0.3:
        messages.append({"role": "system", "content": "you are a helpful assistant ."})
    for _ in range(rng.randint(1, max_turns)):
        user, reasoning, answer = _exchange(rng)
        if rng.random() < think_prob:
            answer = f"<think> {reasoning} </think> {answer}"
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
    return messages


_SHAREGPT_ROLE = {"system": "system", "user": "human", "assistant": "gpt"}


def to_sharegpt(messages: list[dict[str, str]]) -> dict[str, Any]:
    return {"conversations": [{"from": _SHAREGPT_ROLE[m["role"]], "value": m["content"]} for m in messages]}


def conversations(n: int, seed: int = 0, **kwargs: Any) -> Iterator[list[dict[str, str]]]:
    rng = random.Random(seed)
    for _ in range(n):
        yield conversation(rng, **kwargs)


def write_jsonl(
    path: str | Path, n: int, seed: int = 0, sharegpt_fraction: float = 0.5, **kwargs: Any
) -> Path:
    """Write n conversations as JSONL, mixing the ShareGPT and OpenAI message shapes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    shape_rng = random.Random(seed + 1)
    with path.open("w") as fh:
        for i, msgs in enumerate(conversations(n, seed, **kwargs)):
            row = to_sharegpt(msgs) if shape_rng.random() < sharegpt_fraction else {"messages": msgs}
            row["id"] = f"syn-{seed}-{i}"
            fh.write(json.dumps(row) + "\n")
    return path
