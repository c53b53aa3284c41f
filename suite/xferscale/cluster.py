"""Launch settings of the sites the suite runs on, kept in one place.

The sbatch generator (``xferscale slurm``) and the ReFrame site configs
(``checks/config/``) both read these, so a job script and a ReFrame run launch alike.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Partition:
    name: str
    max_nodes: int
    max_time: str  # SLURM time limit, HH:MM:SS


@dataclass(frozen=True)
class Site:
    name: str
    partitions: dict[str, Partition]
    tasks_per_node: int
    gpus_per_node: int
    cpus_per_task: int
    cpu_bind: str
    # Appended to the first host name to reach it over InfiniBand (JSC: "<host>i").
    master_addr_suffix: str
    master_port: int
    env: dict[str, str] = field(default_factory=dict)
    container_platform: str = "Apptainer"
    container_options: tuple[str, ...] = ("--nv",)


JUWELS_BOOSTER = Site(
    name="juwels_booster",
    partitions={
        "booster": Partition("booster", max_nodes=384, max_time="24:00:00"),
        "develbooster": Partition("develbooster", max_nodes=4, max_time="02:00:00"),
    },
    tasks_per_node=4,
    gpus_per_node=4,
    cpus_per_task=12,
    cpu_bind="none",
    master_addr_suffix="i",
    master_port=29500,
    env={
        "NCCL_SOCKET_IFNAME": "ib0",
        "GLOO_SOCKET_IFNAME": "ib0",
        "NCCL_IB_TIMEOUT": "50",
        "UCX_RC_TIMEOUT": "4s",
        "NCCL_ASYNC_ERROR_HANDLING": "1",
        "OMP_NUM_THREADS": "1",
        "PYTHONNOUSERSITE": "1",
    },
)

SITES: dict[str, Site] = {JUWELS_BOOSTER.name: JUWELS_BOOSTER}
