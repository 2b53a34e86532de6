"""Read a research checkpoint: a directory, a single weight file, or a hub id.

Accepted weights: model.safetensors, sharded safetensors with model.safetensors.index.json,
pytorch_model.bin, sharded .bin with pytorch_model.bin.index.json (upstream refuses sharded input).
config.json next to the weights is optional for EAGLE-3 (shapes are read from the tensors) and required
for EAGLE-1/HASS.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from speculators_core.format.errors import CheckpointError
from speculators_core.models.hub import snapshot
from speculators_core.models.weights import load_state_dict

SOURCE_PATTERNS = ("*.json", "*.safetensors", "*.bin")


@dataclass
class ResearchCheckpoint:
    """A checkpoint to convert: its config (may be empty), its tensors and the files they came from."""

    ref: str
    directory: Path
    config: dict[str, Any]
    state: dict[str, torch.Tensor]
    files: list[Path] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.ref.rstrip("/").split("/")[-1] or "checkpoint"


def read_checkpoint(ref: str | os.PathLike[str], *, revision: str | None = None) -> ResearchCheckpoint:
    p = Path(ref)
    if p.is_file():
        directory, weights = p.parent, p
    else:
        directory = snapshot(ref, allow_patterns=SOURCE_PATTERNS, revision=revision)
        weights = directory
    config: dict[str, Any] = {}
    config_path = directory / "config.json"
    if config_path.exists():
        try:
            loaded = json.loads(config_path.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"{config_path}: not valid JSON ({exc})") from None
        if not isinstance(loaded, dict):
            raise CheckpointError(f"{config_path}: expected a JSON object")
        config = loaded
    state, files = load_state_dict(weights)
    if not state:
        raise CheckpointError(f"{weights}: contains no tensors")
    return ResearchCheckpoint(ref=str(ref), directory=directory, config=config, state=state, files=files)
