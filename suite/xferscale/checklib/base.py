"""The common base of the xferscale ReFrame checks: launch modes and result reading.

Written in the manner of ReFrame's ``hpctestlib``: the library classes hold the launch
logic, the parsing of the kernels' JSON result line, sanity and performance functions;
the files in ``checks/`` fix parameters, tags and references and register the tests.

Every check runs in two modes chosen by the partition's features, not by separate files:

- a partition with the ``gpu`` feature (JUWELS Booster: ``booster``, ``develbooster``)
  runs the real sizes, one task per GPU through the partition's launcher (srun), inside
  the Apptainer image when the partition has a container platform;
- any other partition (ReFrame's built-in ``generic`` system, ``checks/config/local.py``)
  runs the CPU mode: tiny model, 1 or 2 processes under ``torchrun --standalone``, gloo.

On a partition that states its limits (``extras['max_nodes']``, ``extras['max_time']``, from
:mod:`xferscale.cluster`), a variant whose nodes or time limit do not fit is skipped with
the reason, exactly as ``xferscale slurm`` refuses such a job.
"""
from __future__ import annotations

import os
import shlex
from typing import Any

from xferscale.cluster import Partition, SiteError, pass_env_wrapper

import reframe as rfm
import reframe.utility.sanity as sn
from reframe.core.builtins import parameter, run_before, sanity_function, variable

from xferscale.kernels.output import ResultNotFound, parse_result

# valid_systems specs: partitions with / without the 'gpu' feature.
GPU_PARTITIONS = ["+gpu"]
CPU_PARTITIONS = ["-gpu"]


def perflog_handlers(basedir: str = "perflogs") -> list[dict[str, Any]]:
    """ReFrame's own perflog handler (one file per check, a header line, ``|``-separated)
    writing under ``basedir``: the one format ``xferscale report scaling`` reads."""
    from reframe.core.settings import site_configuration as builtin

    handlers = [dict(h) for h in builtin["logging"][0]["handlers_perflog"]]
    for handler in handlers:
        handler["basedir"] = basedir
    return handlers


class XferscaleRun(rfm.RunOnlyRegressionTest):
    """Runs ``xferscale ARGS`` on ``num_workers`` processes (one per GPU in GPU mode)."""

    #: Processes of the run: GPUs on a GPU partition, torchrun workers on a CPU one.
    num_workers = parameter([1])

    #: Apptainer image to run in (GPU partitions with a container platform). Empty: the
    #: partition's ``extras['container_image']``, else run ``xferscale`` from PATH.
    container_image = variable(str, value="")

    #: The kernel / command whose JSON result line this check reads.
    result_kernel = variable(str, type(None), value=None)

    valid_prog_environs = ["*"]
    maintainers = ["xferscale"]
    executable = "xferscale"

    @property
    def on_gpu(self) -> bool:
        return "gpu" in self.current_partition.features

    @property
    def gpus_per_node(self) -> int:
        return int(self.current_partition.extras.get("gpus_per_node", 4))

    @property
    def num_nodes(self) -> int:
        return max(1, -(-self.num_workers // self.gpus_per_node)) if self.on_gpu else 1

    def xferscale_args(self) -> list[str]:
        """The ``xferscale`` arguments; subclasses build them from their parameters."""
        raise NotImplementedError

    def container_binds(self) -> list[str]:
        """Host folders the container must see besides the stage directory (data, results)."""
        return []

    def run_in_mode(self, gpu: bool) -> None:
        """Make this variant a GPU-mode or a CPU-mode (CI) test: where it runs, its tags."""
        self.valid_systems = GPU_PARTITIONS if gpu else CPU_PARTITIONS
        self.tags |= {"gpu", "benchmark"} if gpu else {"cpu", "ci"}

    def run_nowhere(self) -> None:
        """A parameter combination with no mode (e.g. tf32 on the CPU): no valid system."""
        self.valid_systems = []

    # Before the run, not after setup: subclasses adjust sizes in their own setup hooks,
    # which ReFrame runs after this base class's.
    @run_before("run")
    def set_launch(self) -> None:
        args = self.xferscale_args()
        if self.on_gpu:
            self._launch_gpu(args)
        else:
            self._launch_cpu(args)

    def _launch_cpu(self, args: list[str]) -> None:
        self.num_tasks = 1
        # Under a real scheduler the one task needs a core per worker, or torchrun's workers share one.
        self.num_cpus_per_task = self.num_workers
        # One thread per process at every N: T(1) and T(N) then use the cores alike, and
        # torch's default (all cores per process) would oversubscribe a shared machine.
        self.env_vars.setdefault("OMP_NUM_THREADS", "1")
        if self.num_workers == 1:
            self.executable, self.executable_opts = "xferscale", args
            return
        # torchrun starts the workers; --no-python runs the `xferscale` script from PATH.
        self.executable = "torchrun"
        self.executable_opts = [
            "--standalone", f"--nproc_per_node={self.num_workers}", "--no-python", "xferscale", *args,
        ]

    def partition_limits(self) -> Partition | None:
        extras = self.current_partition.extras
        if "max_nodes" not in extras or "max_time" not in extras:
            return None
        return Partition(self.current_partition.name, int(extras["max_nodes"]), str(extras["max_time"]))

    def check_partition_limits(self) -> None:
        """Skip, naming the limit, a variant the partition would never run."""
        limits = self.partition_limits()
        if limits is None:
            return
        try:
            limits.check(self.num_nodes, self.time_limit if self.time_limit is not None else limits.max_time)
        except SiteError as err:
            self.skip(f"{self.current_partition.fullname}: {err}")

    def _launch_gpu(self, args: list[str]) -> None:
        self.check_partition_limits()
        per_node = min(self.num_workers, self.gpus_per_node)
        self.num_tasks = self.num_workers
        self.num_tasks_per_node = per_node
        self.num_gpus_per_node = per_node
        cpus = self.current_partition.extras.get("cpus_per_task")
        if cpus:
            self.num_cpus_per_task = int(cpus)
        cpu_bind = self.current_partition.extras.get("cpu_bind")
        if cpu_bind:
            self.job.launcher.options += [f"--cpu-bind={cpu_bind}"]
        # srun starts one task per GPU; xferscale.distributed reads SLURM_PROCID etc. and
        # rendezvouses at the first node's InfiniBand name.
        extras = self.current_partition.extras
        suffix = extras.get("master_addr_suffix", "")
        port = extras.get("master_port", 29500)
        # The site's own expression (sed -n 1p, as the sbatch scripts): the job's first host.
        master = extras.get("master_addr_shell",
                            f'"$(scontrol show hostnames "$SLURM_JOB_NODELIST" | sed -n 1p){suffix}"')
        self.prerun_cmds += [f"export MASTER_ADDR={master}", f"export MASTER_PORT={port}"]
        image = self.container_image or extras.get("container_image", "")
        if image and self.current_partition.container_runtime:
            self.container_platform = self.current_partition.container_runtime
            self.container_platform.image = os.path.expandvars(image)
            self.container_platform.command = shlex.join(["xferscale", *args])
            self.container_platform.with_cuda = True
            self.container_platform.mount_points += [(path, path) for path in dict.fromkeys(self.container_binds())]
            self.container_platform.options += list(extras.get("container_options", []))
            names = extras.get("container_env")
            if names:  # a clean container environment: each task passes its launch variables in
                self.job.launcher.options += [shlex.quote(w) for w in pass_env_wrapper(
                    tuple(dict.fromkeys([*names, *self.env_vars])))]
        else:
            self.executable, self.executable_opts = "xferscale", args

    # -- results -----------------------------------------------------------------------
    @sn.deferrable
    def result(self) -> dict[str, Any]:
        """What the run measured, as a dict (read once the run has finished)."""
        return self.load_result()

    def load_result(self) -> dict[str, Any]:
        """The JSON result line of the kernel in stdout (see xferscale.kernels.output)."""
        path = os.path.join(self.stagedir, str(sn.evaluate(self.stdout)))
        with open(path) as fp:
            return parse_result(fp.read(), self.result_kernel)

    def result_value(self, key: str) -> float:
        value = sn.evaluate(self.result())[key]
        if value is None:
            raise ResultNotFound(f"{key} is null in the result line")
        return float(value)

    @sanity_function
    def assert_result(self):
        return sn.all([
            sn.assert_found(r'"schema":"xferscale\.bench/1"', self.stdout,
                            msg="no xferscale result line in the output"),
            sn.assert_eq(sn.getitem(self.result(), "world_size"), self.num_workers,
                         msg="result from {0} ranks, expected {1}"),
        ])
