"""A small Dockerfile reader for the image tests (no container engine here to build the images).

Enough of the Dockerfile grammar for what the tests check: line continuations, comments and parser
directives, ARG defaults and ${VAR} substitution, build stages, COPY sources, LABEL pairs, USER,
ENTRYPOINT/CMD in exec (JSON) form.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Instruction:
    keyword: str
    args: str


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)
    args: dict[str, str] = field(default_factory=dict)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction | None:
        found = self.all(keyword)
        return found[-1] if found else None

    def labels(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for ins in self.all("LABEL"):
            for token in shlex.split(ins.args):
                key, _, value = token.partition("=")
                out[key] = self.expand(value)
        return out

    def expand(self, text: str) -> str:
        return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: self.args.get(m[1] or m[2], m[0]), text)

    def exec_form(self, keyword: str) -> list[str] | None:
        ins = self.last(keyword)
        return None if ins is None else list(json.loads(ins.args))


@dataclass
class CopySource:
    sources: list[str]
    dest: str
    from_stage: str | None


@dataclass
class Dockerfile:
    path: Path
    global_args: dict[str, str]
    stages: list[Stage]

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    def copies(self) -> list[CopySource]:
        out = []
        for stage in self.stages:
            for ins in stage.all("COPY") + stage.all("ADD"):
                tokens = shlex.split(ins.args)
                flags = [t for t in tokens if t.startswith("--")]
                paths = [t for t in tokens if not t.startswith("--")]
                from_stage = next((f.split("=", 1)[1] for f in flags if f.startswith("--from=")), None)
                out.append(CopySource(paths[:-1], paths[-1], from_stage))
        return out


def _logical_lines(text: str) -> list[str]:
    lines: list[str] = []
    current = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or not stripped:
            continue  # comments and blank lines (also inside continuations, as BuildKit allows)
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        lines.append(current + stripped)
        current = ""
    if current:
        lines.append(current)
    return lines


def parse(path: Path) -> Dockerfile:
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in _logical_lines(path.read_text()):
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        args = args.strip()
        if keyword == "ARG":
            name, _, default = args.partition("=")
            if stages:
                stage = stages[-1]
                # A bare ARG in a stage re-imports the global default.
                stage.args[name] = default if default else global_args.get(name, "")
                stage.instructions.append(Instruction(keyword, args))
            else:
                global_args[name] = default
            continue
        if keyword == "FROM":
            tokens = args.split()
            base = re.sub(r"\$\{(\w+)\}", lambda m: global_args.get(m[1], m[0]), tokens[0])
            name = tokens[2] if len(tokens) >= 3 and tokens[1].upper() == "AS" else None
            stages.append(Stage(base=base, name=name))
            continue
        if not stages:
            raise ValueError(f"{path}: {keyword} before FROM")
        stages[-1].instructions.append(Instruction(keyword, args))
    return Dockerfile(path, global_args, stages)
