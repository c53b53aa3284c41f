"""Process-group set-up for data-parallel training: torchrun, srun, or Horovod.

Ranks come from torchrun's variables (RANK, WORLD_SIZE, LOCAL_RANK) or, under ``srun``
without torchrun, from SLURM's (SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID); the
rendezvous host is MASTER_ADDR, or else the first host of the job's node list.
"""
from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str = "none"  # "none", "ddp" or "horovod"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.backend != "none"


def first_host(nodelist: str) -> str:
    """First host of a SLURM node list: 'jwb[0012-0015,0020],jwc01' -> 'jwb0012'."""
    match = re.match(r"([^,\[]+)(?:\[([^\]]+)\])?", nodelist.strip())
    if not match:
        raise ValueError(f"cannot parse SLURM node list {nodelist!r}")
    prefix, ranges = match.groups()
    if not ranges:
        return prefix
    return prefix + ranges.split(",")[0].split("-")[0]


def launch_env(environ: dict[str, str] | None = None) -> dict[str, Any]:
    """Rank, world size, local rank and rendezvous address from the launcher's variables."""
    env = os.environ if environ is None else environ
    if "RANK" in env and "WORLD_SIZE" in env:  # torchrun, or a launcher that mimics it
        return {
            "rank": int(env["RANK"]),
            "world_size": int(env["WORLD_SIZE"]),
            "local_rank": int(env.get("LOCAL_RANK", 0)),
            "master_addr": env.get("MASTER_ADDR", "127.0.0.1"),
            "master_port": env.get("MASTER_PORT", "29500"),
        }
    if int(env.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in env:
        master = env.get("MASTER_ADDR") or first_host(env.get("SLURM_JOB_NODELIST", env.get("SLURM_NODELIST", "")))
        return {
            "rank": int(env["SLURM_PROCID"]),
            "world_size": int(env["SLURM_NTASKS"]),
            "local_rank": int(env.get("SLURM_LOCALID", 0)),
            "master_addr": master,
            "master_port": env.get("MASTER_PORT", "29500"),
        }
    return {"rank": 0, "world_size": 1, "local_rank": 0, "master_addr": "127.0.0.1", "master_port": "29500"}


def _device_for(local_rank: int) -> torch.device:
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def horovod_available() -> bool:
    try:
        import horovod.torch  # noqa: F401
    except ImportError:
        return False
    return True


def init_distributed(backend: str = "auto") -> DistEnv:
    """Join the job's process group. ``backend``: auto, ddp, horovod or none."""
    if backend == "horovod":
        if not horovod_available():
            raise RuntimeError("distributed.backend=horovod, but horovod.torch cannot be imported "
                               "(install it with scripts/install_horovod.sh)")
        import horovod.torch as hvd

        hvd.init()
        return DistEnv(hvd.rank(), hvd.size(), hvd.local_rank(), _device_for(hvd.local_rank()), "horovod")
    info = launch_env()
    device = _device_for(info["local_rank"])
    if backend == "none" or info["world_size"] == 1:
        return DistEnv(device=device)
    if not dist.is_initialized():
        os.environ.setdefault("MASTER_ADDR", info["master_addr"])
        os.environ.setdefault("MASTER_PORT", str(info["master_port"]))
        dist.init_process_group(
            "nccl" if device.type == "cuda" else "gloo",
            rank=info["rank"], world_size=info["world_size"],
            device_id=device if device.type == "cuda" else None,
        )
    return DistEnv(info["rank"], info["world_size"], info["local_rank"], device, "ddp")


def shutdown(env: DistEnv) -> None:
    if env.backend == "ddp" and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce(tensor: torch.Tensor, env: DistEnv, op: str = "sum") -> torch.Tensor:
    """Sum (or max) a tensor over ranks, in place; a no-op on one process."""
    if env.backend == "ddp":
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
    elif env.backend == "horovod":
        import horovod.torch as hvd

        tensor.copy_(hvd.allreduce(tensor, op=hvd.Sum if op == "sum" else hvd.Max))
    return tensor


def gather_objects(obj: Any, env: DistEnv) -> list[Any]:
    """``obj`` of every rank, in rank order (one rank: ``[obj]``)."""
    if env.world_size == 1:
        return [obj]
    if env.backend == "horovod":
        import horovod.torch as hvd

        return hvd.allgather_object(obj)
    gathered: list[Any] = [None] * env.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def barrier(env: DistEnv) -> None:
    if env.backend == "ddp":
        dist.barrier()
    elif env.backend == "horovod":
        import horovod.torch as hvd

        hvd.join()


class GradientSync:
    """Makes gradients global before clipping: DDP already did it in backward; Horovod
    averages on ``synchronize()``, so AGC sees the averaged gradient as in DDP."""

    def __init__(self, env: DistEnv, optimizer: torch.optim.Optimizer):
        self.env, self.optimizer = env, optimizer

    def synchronize(self) -> None:
        if self.env.backend == "horovod":
            self.optimizer.synchronize()

    def step_context(self):
        if self.env.backend == "horovod":
            return self.optimizer.skip_synchronize()
        return contextlib.nullcontext()


def wrap_for_training(
    model: nn.Module, optimizer: torch.optim.Optimizer, env: DistEnv, bucket_cap_mb: int = 25, static_graph: bool = False
) -> tuple[nn.Module, torch.optim.Optimizer]:
    """DDP-wrap the model, or make the optimizer Horovod-distributed; identity on one process."""
    if env.backend == "ddp":
        model = nn.parallel.DistributedDataParallel(
            model,
            device_ids=[env.device.index] if env.device.type == "cuda" else None,
            bucket_cap_mb=bucket_cap_mb,
            static_graph=static_graph,
            gradient_as_bucket_view=True,
        )
    elif env.backend == "horovod":
        import horovod.torch as hvd

        hvd.broadcast_parameters(model.state_dict(), root_rank=0)
        hvd.broadcast_optimizer_state(optimizer, root_rank=0)
        optimizer = hvd.DistributedOptimizer(optimizer, named_parameters=model.named_parameters())
    return model, optimizer
