"""Read and write a speculators `config.json` (torch-free).

    load_config(path) -> SpeculatorModelConfig     path: a checkpoint directory or its config.json
    config_from_dict(data, source=...) -> SpeculatorModelConfig
    save_config(config, directory) -> Path          written to a temporary file, then renamed

The returned object is the registered class for its `speculators_model_type` (Eagle3Config, EagleConfig,
or the envelope-only SpeculatorModelConfig for types served by vLLM without a model here).
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from speculators_core.format.envelope import SpeculatorModelConfig
from speculators_core.format.errors import FormatError, format_error
from speculators_core.format.registry import get_speculator_type

CONFIG_NAME = "config.json"


def config_from_dict(data: Any, *, source: str = CONFIG_NAME) -> SpeculatorModelConfig:
    """Validate a parsed config.json; FormatError names `source` and every bad field."""
    if not isinstance(data, dict):
        raise FormatError(f"{source}: expected a JSON object, got {type(data).__name__}")
    if "speculators_model_type" not in data:
        hint = (
            " It looks like a research checkpoint: convert it with `speculators convert`."
            if "model_type" in data or "architectures" in data
            else ""
        )
        raise FormatError(
            f"{source}: speculators_model_type is missing; this is not a speculators config.{hint}"
        )
    entry = get_speculator_type(data["speculators_model_type"], source=source)
    data = dict(data)
    if entry.name == "eagle3" and "norm_before_residual" not in data:
        # vLLM serves a config without the key as norm_before_residual=True; read it the same way.
        warnings.warn(
            f"{source}: norm_before_residual is absent; reading it as true, as vLLM does. "
            "Write it explicitly to remove the ambiguity (upstream's default is false).",
            stacklevel=2,
        )
        data["norm_before_residual"] = True
    try:
        return entry.config_class.model_validate(data)
    except ValidationError as exc:
        raise format_error(source, exc) from None


def _config_path(path: str | os.PathLike[str]) -> Path:
    p = Path(path)
    return p / CONFIG_NAME if p.is_dir() else p


def read_config_dict(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The raw JSON object of a config.json (directory or file path)."""
    p = _config_path(path)
    if not p.exists():
        raise FormatError(f"{p}: no such file; a speculators checkpoint directory holds config.json")
    try:
        data = json.loads(p.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FormatError(
            f"{p}: not valid JSON ({exc}); restore the file from the checkpoint's source"
        ) from None
    if not isinstance(data, dict):
        raise FormatError(f"{p}: expected a JSON object, got {type(data).__name__}")
    return data


def load_config(path: str | os.PathLike[str]) -> SpeculatorModelConfig:
    """Read and validate `config.json` from a checkpoint directory (or the file itself)."""
    p = _config_path(path)
    return config_from_dict(read_config_dict(p), source=str(p))


def config_to_json(config: SpeculatorModelConfig) -> str:
    return json.dumps(config.to_dict(), indent=2, sort_keys=True) + "\n"


def save_config(config: SpeculatorModelConfig, directory: str | os.PathLike[str]) -> Path:
    """Write `directory/config.json` atomically (temporary file + rename)."""
    target_dir = Path(directory)
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / CONFIG_NAME
    fd, tmp = tempfile.mkstemp(dir=target_dir, prefix=f".{CONFIG_NAME}.")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(config_to_json(config))
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target
