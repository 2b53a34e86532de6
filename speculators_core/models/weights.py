"""Weight files: read safetensors (single or sharded) and .bin checkpoints, write safetensors atomically.

Every failure is a CheckpointError naming the file (and tensor) and the fix. Directories are written
to a temporary sibling and renamed into place, so a reader never sees a half-written checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from speculators_core.format.errors import CheckpointError
from speculators_core.format.safetensors_header import INDEX_NAME, read_header

WEIGHTS_NAME = "model.safetensors"
BIN_NAME = "pytorch_model.bin"
BIN_INDEX_NAME = "pytorch_model.bin.index.json"


def _read_index(index: Path) -> dict[str, str]:
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError):
        raise CheckpointError(f"{index}: not a valid shard index (needs a weight_map object)") from None
    if not isinstance(weight_map, dict):
        raise CheckpointError(f"{index}: weight_map must map tensor names to shard files")
    return {str(k): str(v) for k, v in weight_map.items()}


def weight_files(directory: str | os.PathLike[str]) -> list[Path]:
    """The weight files of a checkpoint directory, in load order (safetensors preferred over .bin)."""
    d = Path(directory)
    for index_name in (INDEX_NAME, BIN_INDEX_NAME):
        index = d / index_name
        if index.exists():
            files = [d / f for f in sorted(set(_read_index(index).values()))]
            for f in files:
                if not f.exists():
                    raise CheckpointError(
                        f"{f}: listed in {index.name} but missing; re-download the checkpoint"
                    )
            return files
    single = [d / WEIGHTS_NAME] if (d / WEIGHTS_NAME).exists() else sorted(d.glob("*.safetensors"))
    if single:
        return single
    if (d / BIN_NAME).exists():
        return [d / BIN_NAME]
    bins = sorted(d.glob("*.bin"))
    if bins:
        return bins
    raise CheckpointError(
        f"{d}: no weights found (looked for {WEIGHTS_NAME}, {INDEX_NAME}, {BIN_NAME}, {BIN_INDEX_NAME})"
    )


def load_safetensors(path: str | os.PathLike[str], names: set[str] | None = None) -> dict[str, torch.Tensor]:
    """Tensors of one .safetensors file (all, or `names` only); the header is checked first."""
    p = Path(path)
    read_header(p)  # precise errors for truncated / corrupt files
    out: dict[str, torch.Tensor] = {}
    try:
        with safe_open(str(p), framework="pt", device="cpu") as fh:
            for key in fh.keys():  # noqa: SIM118 (safe_open is not a mapping)
                if names is None or key in names:
                    out[key] = fh.get_tensor(key)
    except SafetensorError as exc:
        raise CheckpointError(
            f"{p}: cannot read safetensors data ({exc}); re-download or re-export the file"
        ) from None
    return out


def load_bin(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """A PyTorch .bin state dict, loaded with weights_only (no code execution)."""
    p = Path(path)
    try:
        data = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt pickles/zips
        raise CheckpointError(
            f"{p}: cannot read PyTorch weights ({type(exc).__name__}: {exc}); "
            "re-download the file or convert it to safetensors"
        ) from None
    if isinstance(data, dict) and "state_dict" in data and isinstance(data["state_dict"], dict):
        data = data["state_dict"]
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise CheckpointError(f"{p}: not a state dict of tensors")
    return dict(data)


def load_weight_file(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    p = Path(path)
    if p.suffix == ".safetensors":
        return load_safetensors(p)
    if p.suffix in (".bin", ".pt", ".pth"):
        return load_bin(p)
    raise CheckpointError(f"{p}: unsupported weight file type; use .safetensors or .bin")


def load_state_dict(source: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], list[Path]]:
    """All tensors of a checkpoint directory or of a single weight file, and the files read.

    A tensor present in two shards is an error (a corrupt index would otherwise win silently).
    """
    p = Path(source)
    files = [p] if p.is_file() else weight_files(p)
    state: dict[str, torch.Tensor] = {}
    for f in files:
        for name, tensor in load_weight_file(f).items():
            if name in state:
                raise CheckpointError(
                    f"{f}: tensor {name!r} also appears in another shard; fix the shard index"
                )
            state[name] = tensor
    return state, files


def save_safetensors(state: dict[str, torch.Tensor], path: str | os.PathLike[str]) -> None:
    """Write with the `format: pt` metadata transformers requires to load the file."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    save_file(tensors, str(path), metadata={"format": "pt"})


@contextlib.contextmanager
def atomic_directory(target: str | os.PathLike[str], *, overwrite: bool) -> Iterator[Path]:
    """Yield a temporary directory next to `target`; on success it replaces `target`, on error it is removed.

    With overwrite=False an existing non-empty `target` is refused before anything is written.
    """
    dest = Path(target).absolute()
    if dest.exists() and not dest.is_dir():
        raise CheckpointError(f"{dest}: exists and is not a directory; choose another output path")
    if dest.exists() and any(dest.iterdir()) and not overwrite:
        raise CheckpointError(
            f"{dest}: output directory is not empty; choose a new path or allow overwriting"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o755)  # mkdtemp makes it private
        if dest.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old-", dir=dest.parent))
            os.replace(dest, old / "d")
            os.replace(tmp, dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
