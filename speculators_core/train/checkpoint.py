"""Training checkpoints: everything a resumed run needs to end with bit-identical weights.

    <checkpoint-dir>/step-00000100/
        model.pt       full model state (parameter names as the bare model's; same file for 1 or N ranks)
        optimizer.pt   full optimizer state, keyed by parameter name
        scheduler.pt   LR scheduler state
        rng.pt         torch / CUDA / numpy / python RNG states of every rank
        state.json     step, epoch, position in the epoch's packing plan, tokens, run identity
    <checkpoint-dir>/latest   name of the newest complete checkpoint

Rank 0 writes into a temporary directory and renames it, so a checkpoint either exists whole or not at
all. Loading reads on rank 0 and broadcasts (distributed runs), so only rank 0 needs the files.
"""

from __future__ import annotations

import dataclasses
import json
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from speculators_core.data.errors import IncompatibleDataError
from speculators_core.data.fsutil import atomic_dir, write_json_atomic
from speculators_core.train.distributed import DistEnv, barrier, broadcast_object, gather_objects

_STEP_DIR = re.compile(r"^step-(\d{8})$")
LATEST = "latest"


@dataclasses.dataclass
class TrainState:
    step: int = 0  # optimizer steps done
    epoch: int = 0  # current epoch
    step_in_epoch: int = 0  # steps of `epoch` already done
    tokens: int = 0
    elapsed: float = 0.0
    run_key: str = ""


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _options(env: DistEnv, *, load: bool) -> StateDictOptions:
    if load:
        return StateDictOptions(full_state_dict=True, broadcast_from_rank0=env.distributed)
    return StateDictOptions(full_state_dict=True, cpu_offload=True)


def save_checkpoint(
    directory: Path,
    state: TrainState,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    env: DistEnv,
    *,
    keep: int = 2,
) -> Path:
    """Collective: every rank calls it. Returns the checkpoint path."""
    model_sd = get_model_state_dict(model, options=_options(env, load=False))
    optim_sd = get_optimizer_state_dict(model, optimizer, options=_options(env, load=False))
    rngs = gather_objects(rng_state())
    target = directory / f"step-{state.step:08d}"
    if env.is_main:
        with atomic_dir(target) as tmp:
            torch.save(model_sd, tmp / "model.pt")
            torch.save(optim_sd, tmp / "optimizer.pt")
            torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
            torch.save(rngs, tmp / "rng.pt")
            write_json_atomic(tmp / "state.json", dataclasses.asdict(state))
        (directory / f".{LATEST}.tmp").write_text(target.name)
        (directory / f".{LATEST}.tmp").replace(directory / LATEST)
        _prune(directory, keep)
    barrier()
    return target


def _prune(directory: Path, keep: int) -> None:
    steps = sorted(p for p in directory.iterdir() if _STEP_DIR.match(p.name) and p.is_dir())
    for old in steps[: max(0, len(steps) - max(1, keep))]:
        shutil.rmtree(old, ignore_errors=True)


def latest_checkpoint(directory: Path) -> Path | None:
    """The newest complete checkpoint (a renamed directory with state.json), or None."""
    if not directory.is_dir():
        return None
    pointer = directory / LATEST
    if pointer.exists():
        candidate = directory / pointer.read_text().strip()
        if (candidate / "state.json").exists():
            return candidate
    steps = sorted(p for p in directory.iterdir() if _STEP_DIR.match(p.name) and (p / "state.json").exists())
    return steps[-1] if steps else None


def load_checkpoint(
    path: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    env: DistEnv,
    *,
    run_key: str,
) -> TrainState:
    """Collective. Restores model, optimizer, scheduler, this rank's RNG; returns the training position."""
    state = TrainState(**json.loads((path / "state.json").read_text()))
    if state.run_key != run_key:
        raise IncompatibleDataError(
            f"{path} belongs to another training run (different data, model or hyper-parameters); "
            "use an empty --checkpoint-dir or delete this one"
        )
    main = env.is_main or not env.distributed
    model_sd = torch.load(path / "model.pt", map_location="cpu", weights_only=False) if main else {}
    optim_sd = torch.load(path / "optimizer.pt", map_location="cpu", weights_only=False) if main else {}
    set_model_state_dict(model, model_sd, options=_options(env, load=True))
    set_optimizer_state_dict(model, optimizer, optim_sd, options=_options(env, load=True))
    sched = broadcast_object(torch.load(path / "scheduler.pt", weights_only=False) if main else None)
    scheduler.load_state_dict(sched)
    rngs = broadcast_object(torch.load(path / "rng.pt", weights_only=False) if main else None)
    if env.rank < len(rngs):
        set_rng_state(rngs[env.rank])
    return state


def write_done(directory: Path, summary: dict[str, Any]) -> None:
    write_json_atomic(directory / "done.json", summary)


def read_done(directory: Path) -> dict[str, Any] | None:
    path = directory / "done.json"
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
