"""One GuideLLM run against one server: the scenario it is given, the command, and the run itself.

GuideLLM 0.8.x replaced `guidellm benchmark` with `guidellm run`; its scenario file (`--scenario FILE`,
`{"spec": {backend, tokenizer, data, profile, constraints, outputs}}`) holds every option in one JSON
document, which is easier to get right than the command-line spelling of each of them. The keys below are
GuideLLM 0.8.1's own (guidellm.schemas: backend `openai_http`, tokenizer `huggingface_auto`, data
`synthetic_text` / `huggingface` / `*_file`, profile kinds, constraints `max_duration` / `max_requests`).

A run is resumable: its report is written to a temporary name and renamed, and a run whose report is
already there (a retried pod on the same volume) is skipped.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

PROFILES = ("sweep", "synchronous", "throughput", "constant", "poisson")
RATED = ("constant", "poisson")  # the profiles that take rates
BUILTIN = ("chat", "code")  # prompt sets shipped in speculators_core/bench/prompts
FILE_KINDS = {
    ".jsonl": "json_file",
    ".json": "json_file",
    ".csv": "csv_file",
    ".parquet": "parquet_file",
    ".arrow": "arrow_file",
    ".txt": "text_file",
}


class ScenarioError(ValueError):
    """Options that make no GuideLLM run (the message names the flag)."""


@dataclass(frozen=True)
class Data:
    """What GuideLLM sends: synthetic text of set lengths, a Hub dataset id, or a local file/directory."""

    prompt_tokens: int | None = None
    output_tokens: int | None = None
    hub_id: str | None = None
    path: str | None = None

    def spec(self) -> dict[str, Any]:
        if self.hub_id:
            return {"kind": "huggingface", "source": self.hub_id}
        if self.path:
            kind = FILE_KINDS.get(Path(self.path).suffix.lower())
            # a directory (or an unknown suffix): a saved or scripted Hugging Face dataset
            return {"kind": kind, "path": self.path} if kind else {"kind": "huggingface", "source": self.path}
        if not self.prompt_tokens or not self.output_tokens:
            raise ScenarioError("synthetic data needs --prompt-tokens and --output-tokens (both > 0)")
        return {
            "kind": "synthetic_text",
            "prompt_tokens": self.prompt_tokens,
            "output_tokens": self.output_tokens,
        }


@dataclass(frozen=True)
class Run:
    target: str  # the server's base URL (http://host:port)
    model: str  # the served model name
    data: Data
    profile: str = "sweep"
    rates: tuple[float, ...] = ()
    sweep_size: int = 10
    max_seconds: float | None = 60
    max_requests: int | None = None
    warmup_seconds: float = 0
    tokenizer: str | None = None  # hub id or local directory; GuideLLM defaults to the model name
    random_seed: int = 42
    extra: dict[str, Any] = field(default_factory=dict)

    def scenario(self, output: Path) -> dict[str, Any]:
        """GuideLLM's scenario document, writing its JSON report to `output`."""
        if self.profile not in PROFILES:
            raise ScenarioError(f"--profile {self.profile!r}: use one of {', '.join(PROFILES)}")
        if self.profile in RATED and not self.rates:
            raise ScenarioError(f"--profile {self.profile} needs --rate (requests/s, one or more)")
        if self.profile not in RATED and self.rates:
            raise ScenarioError(f"--rate applies to --profile constant or poisson, not {self.profile}")
        if self.max_seconds is None and self.max_requests is None:
            raise ScenarioError("set --max-seconds or --max-requests: a rate without a limit never ends")
        profile: dict[str, Any] = {"kind": self.profile}
        if self.profile in RATED:
            profile["rate"] = list(self.rates)
        if self.profile == "sweep":
            if self.sweep_size < 3:
                raise ScenarioError("--sweep-size must be at least 3 (synchronous, throughput, one rate)")
            profile["sweep_size"] = self.sweep_size
        if self.warmup_seconds:
            profile["warmup"] = {"value": self.warmup_seconds, "mode": "prefer_duration"}
        constraints = []
        if self.max_seconds is not None:
            constraints.append({"kind": "max_duration", "seconds": self.max_seconds})
        if self.max_requests is not None:
            constraints.append({"kind": "max_requests", "count": self.max_requests})
        spec: dict[str, Any] = {
            "backend": {"kind": "openai_http", "target": self.target, "model": self.model},
            "data": [self.data.spec()],
            "profile": profile,
            "constraints": constraints,
            "outputs": [{"kind": "json", "path": str(output)}],
            "seed": {"kind": "static", "value": self.random_seed},
        }
        if self.tokenizer:
            spec["tokenizer"] = {"kind": "huggingface_auto", "model": self.tokenizer}
        spec.update(self.extra)
        return {"spec": spec}


def builtin_prompts(name: str, output_tokens: int, out: Path) -> Path:
    """A shipped prompt set as GuideLLM reads it (a `prompt` column, each answer `output_tokens` long),
    written next to the report."""
    if name not in BUILTIN:
        raise ScenarioError(f"--data-builtin {name!r}: use one of {', '.join(BUILTIN)}")
    rows = [
        json.loads(line)
        for line in (files("speculators_core.bench") / "prompts" / f"{name}.jsonl").read_text().splitlines()
        if line
    ]
    path = out.with_name(f"{out.stem}.prompts.jsonl")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({**row, "output_tokens_count": output_tokens}) + "\n" for row in rows))
    return path


def is_report(path: Path) -> bool:
    """A complete GuideLLM JSON report (a run that finished and was renamed into place)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return isinstance(data, dict) and bool(data.get("benchmarks"))


def command(guidellm: str, scenario_file: Path) -> list[str]:
    return [*guidellm.split(), "run", "--scenario", str(scenario_file), "--disable-console-interactive"]


def run(spec: Run, output: Path, guidellm: str = "guidellm", timeout: float | None = None) -> bool:
    """Run GuideLLM unless `output` already holds its report; False when it was skipped.

    The report is written beside `output` under a temporary name, then renamed: a pod killed mid-run
    leaves no report that looks complete."""
    if is_report(output):
        return False
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.stem}.tmp.json")
    scenario_file = output.with_name(f"{output.stem}.scenario.json")
    scenario_file.write_text(json.dumps(spec.scenario(tmp), indent=2))
    tmp.unlink(missing_ok=True)
    cmd = command(guidellm, scenario_file)
    proc = subprocess.run(cmd, cwd=output.parent, timeout=timeout, env=os.environ)
    if proc.returncode != 0 or not is_report(tmp):
        raise RuntimeError(f"guidellm exited {proc.returncode} without a report ({' '.join(cmd)})")
    tmp.replace(output)
    return True
