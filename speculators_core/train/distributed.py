"""Process groups from the environment, and DDP / FSDP2 wrapping.

Under torchrun (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT set) the process joins the
group: NCCL on GPUs, gloo on CPU. On Kubernetes the operator runs one pod per node (an Indexed Job with a
headless Service): it sets NNODES, NPROC_PER_NODE, MASTER_ADDR (pod 0's DNS name), MASTER_PORT and
NODE_RANK (or JOB_COMPLETION_INDEX); `speculators train` then re-executes itself under torchrun with a
static rendezvous (`torchrun_command`), so the same command line works for 1 or N GPUs and nodes.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistEnv:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _int_env(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value in (None, ""):
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from None


def needs_launch() -> bool:
    """Several processes wanted (NNODES * NPROC_PER_NODE > 1) and we are not under torchrun yet."""
    under_torchrun = "LOCAL_RANK" in os.environ or "TORCHELASTIC_RUN_ID" in os.environ
    return not under_torchrun and _int_env("NNODES", 1) * _int_env("NPROC_PER_NODE", 1) > 1


def torchrun_command(argv: Sequence[str]) -> list[str]:
    """`python -m torch.distributed.run ... -m speculators_core.cli <argv>` from the operator's env."""
    nnodes = _int_env("NNODES", 1)
    node_rank = _int_env("NODE_RANK", _int_env("JOB_COMPLETION_INDEX", 0))
    nproc = _int_env("NPROC_PER_NODE", 1)
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nnodes={nnodes}", f"--nproc-per-node={nproc}"]
    if nnodes > 1:
        addr = os.environ.get("MASTER_ADDR")
        if not addr:
            raise ValueError("NNODES > 1 needs MASTER_ADDR (the first pod's address) and MASTER_PORT")
        cmd += [
            f"--node-rank={node_rank}",
            f"--master-addr={addr}",
            f"--master-port={_int_env('MASTER_PORT', 29500)}",
        ]
    else:
        cmd += ["--standalone"]
    return [*cmd, "-m", "speculators_core.cli", *argv]


def init_distributed(device: str | None = None, timeout_s: int = 1800) -> DistEnv:
    world = _int_env("WORLD_SIZE", 1)
    rank = _int_env("RANK", 0)
    local_rank = _int_env("LOCAL_RANK", 0)
    if device:
        dev = torch.device(device)
    elif torch.cuda.is_available():
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s))
    return DistEnv(rank=rank, world_size=world, local_rank=local_rank, device=dev)


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    if not (dist.is_available() and dist.is_initialized()):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def gather_objects(obj: Any) -> list[Any]:
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def wrap_model(
    model: torch.nn.Module, env: DistEnv, *, fsdp: bool, param_dtype: torch.dtype | None
) -> torch.nn.Module:
    """DDP (default) or FSDP2 (`fully_shard` on the draft)."""
    if not env.distributed:
        return model
    if fsdp:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        mesh = init_device_mesh(env.device.type, (env.world_size,))
        mp = (
            MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32)
            if param_dtype
            else MixedPrecisionPolicy()
        )
        # One FSDP group for the whole draft (parameters, gradients and optimizer state are still
        # sharded at rest). Per-layer groups are wrong with this model: FSDP2 re-wraps a layer's
        # arguments, copying the LayerCache dataclass the layer appends its TTT keys to, so from TTT
        # step 2 on a sharded layer would attend without the keys of step 1.
        fully_shard(model, mesh=mesh, mp_policy=mp)
        return model
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [env.device.index] if env.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)


def no_sync(model: torch.nn.Module, enabled: bool) -> Any:
    """Skip the gradient all-reduce for all but the last micro-batch of a step."""
    import contextlib

    if not enabled:
        return contextlib.nullcontext()
    if hasattr(model, "no_sync"):
        return model.no_sync()
    if hasattr(model, "set_requires_gradient_sync"):  # FSDP2

        @contextlib.contextmanager
        def _fsdp() -> Any:
            model.set_requires_gradient_sync(False)  # type: ignore[operator]
            try:
                yield
            finally:
                model.set_requires_gradient_sync(True)  # type: ignore[operator]

        return _fsdp()
    return contextlib.nullcontext()
