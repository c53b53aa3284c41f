"""Launch settings of the sites the suite runs on, kept in one place.

The sbatch generator (``xferscale slurm``) and the ReFrame site configs
(``checks/config/``) both read these, so a job script and a ReFrame run launch alike.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field


class SiteError(ValueError):
    """A launch request the site cannot run (unknown partition, too many nodes, bad time)."""


_TIME = re.compile(r"^(?:(?P<days>\d+)-)?(?P<a>\d+)(?::(?P<b>\d+))?(?::(?P<c>\d+))?$")


def slurm_seconds(time: str) -> int:
    """Seconds in a SLURM time limit: MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS."""
    match = _TIME.match(time.strip())
    if not match:
        raise SiteError(f"time limit {time!r} is not a SLURM time (HH:MM:SS, MM or D-HH:MM:SS)")
    days, a, b, c = (int(v) if v else None for v in match.group("days", "a", "b", "c"))
    if days is None:  # MM, MM:SS or HH:MM:SS
        hours, minutes, seconds = (a, b, c) if c is not None else (0, a, b or 0)
    else:  # D-HH, D-HH:MM or D-HH:MM:SS
        hours, minutes, seconds = a, b or 0, c or 0
    if minutes >= 60 or seconds >= 60:
        raise SiteError(f"time limit {time!r}: minutes and seconds must be below 60")
    total = (((days or 0) * 24 + hours) * 60 + minutes) * 60 + seconds
    if total <= 0:
        raise SiteError(f"time limit {time!r} must be longer than zero")
    return total


def format_seconds(seconds: float) -> str:
    """A SLURM time limit (HH:MM:SS) for ``seconds``, rounded up to the next second."""
    total = int(-(-seconds // 1))
    return f"{total // 3600:02d}:{total % 3600 // 60:02d}:{total % 60:02d}"


@dataclass(frozen=True)
class Partition:
    name: str
    max_nodes: int
    max_time: str  # SLURM time limit, HH:MM:SS

    def check(self, nodes: int, time: str | float) -> None:
        """Raise SiteError unless a job of `nodes` nodes and `time` (a SLURM time or
        seconds) fits this partition."""
        if nodes < 1:
            raise SiteError(f"--nodes must be at least 1, got {nodes}")
        if nodes > self.max_nodes:
            raise SiteError(
                f"--nodes {nodes} exceeds the {self.max_nodes}-node limit of partition {self.name!r}"
            )
        seconds = slurm_seconds(time) if isinstance(time, str) else time
        if seconds > slurm_seconds(self.max_time):
            raise SiteError(
                f"--time {time if isinstance(time, str) else format_seconds(seconds)} exceeds the "
                f"{self.max_time} limit of partition {self.name!r}"
            )


# A command run by a scheduler writes this file (relative to its working directory) when a
# signal stopped it with its state saved: the job script then requeues the job.
STOP_MARKER_ENV = "XFERSCALE_STOP_MARKER"

# What every rank must still see inside a container started with --cleanenv: the per-task
# variables srun sets (rank, local rank, GPUs), the rendezvous, and the stop marker.
TASK_ENV: tuple[str, ...] = (
    "SLURM_PROCID", "SLURM_LOCALID", "SLURM_NTASKS", "SLURM_NODEID", "SLURM_NNODES", "SLURM_JOB_ID",
    "SLURM_JOB_NODELIST", "SLURM_NODELIST", "SLURM_STEP_ID", "SLURM_CPUS_PER_TASK", "SLURM_RESTART_COUNT",
    "CUDA_VISIBLE_DEVICES", "MASTER_ADDR", "MASTER_PORT", STOP_MARKER_ENV,
)


def pass_env_wrapper(names: tuple[str, ...]) -> list[str]:
    """Words that run the rest of a task's command line with each of ``names`` that is set
    exported as ``APPTAINERENV_<name>``, the form ``apptainer --cleanenv`` lets through.

    It runs per task (after srun), so per-task values such as ``SLURM_PROCID`` are each
    task's own. It also starts the task with SIGUSR1 ignored (an ignored signal stays ignored
    across ``exec``): a checkpoint request that arrives before xferscale has installed its
    handler would otherwise kill the rank; xferscale's handler replaces the ignore. The words
    are unquoted; quote them for a shell line (:func:`shlex.join`).
    """
    snippet = (f'trap "" USR1; for v in {" ".join(names)}; do if [ -n "${{!v+x}}" ]; then '
               'export "APPTAINERENV_$v=${!v}"; fi; done; exec "$@"')
    return ["bash", "-c", snippet, "xferscale-task-env"]


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
    # --cleanenv: the login node's module variables (PYTHONPATH, LD_LIBRARY_PATH, ...) stay out;
    # what the ranks need is passed explicitly (container_env, pass_env_wrapper).
    container_options: tuple[str, ...] = ("--nv", "--cleanenv")

    def partition(self, name: str) -> Partition:
        try:
            return self.partitions[name]
        except KeyError:
            known = ", ".join(sorted(self.partitions))
            raise SiteError(f"unknown partition {name!r} on {self.name}; choose one of: {known}") from None

    def job_options(self) -> list[str]:
        """Per-node resources of a job (sbatch options; ReFrame `access`/job options)."""
        return [
            f"--ntasks-per-node={self.tasks_per_node}",
            f"--gres=gpu:{self.gpus_per_node}",
            f"--cpus-per-task={self.cpus_per_task}",
        ]

    def launcher_options(self) -> list[str]:
        """Options of the parallel launcher (srun) for every job step."""
        return [f"--cpu-bind={self.cpu_bind}"]

    def master_addr_shell(self) -> str:
        """Shell expression for the rendezvous host: the job's first node, InfiniBand name.

        `sed -n 1p` reads the whole host list: `head -n 1` would close the pipe early and,
        under `set -o pipefail`, fail the script with scontrol's SIGPIPE on large jobs.
        """
        return f'"$(scontrol show hostnames "$SLURM_JOB_NODELIST" | sed -n 1p){self.master_addr_suffix}"'

    def launch_env(self) -> dict[str, str]:
        """Environment for every rank (MASTER_ADDR comes from master_addr_shell at run time)."""
        return {**self.env, "MASTER_PORT": str(self.master_port)}

    def container_env(self, extra: tuple[str, ...] = ()) -> tuple[str, ...]:
        """Names of the variables a rank inside the container needs (TASK_ENV, the site's, ``extra``)."""
        return tuple(dict.fromkeys((*TASK_ENV, *self.env, *extra)))


# Partition limits (booster: up to 384 nodes, 24 h; develbooster: up to 4 nodes, 2 h) follow
# JSC's JUWELS quick-introduction table as remembered; the page could not be re-read from
# the development machine. `scontrol show partition booster` (MaxNodes, MaxTime) on a login
# node is the authority: these only turn a job SLURM would reject into an early, named error.
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
        "TORCH_NCCL_ASYNC_ERROR_HANDLING": "1",  # the name torch >= 2.2 reads
        "OMP_NUM_THREADS": "1",
        "PYTHONNOUSERSITE": "1",
    },
)

SITES: dict[str, Site] = {JUWELS_BOOSTER.name: JUWELS_BOOSTER}
