"""Base classes of the xferscale ReFrame checks (the ``checks/`` folder derives from these).

Written in the manner of ReFrame's ``hpctestlib``: the library classes hold the launch
logic, the parsing of the kernels' JSON result line, sanity and performance functions;
the files in ``checks/`` fix parameters, tags and references and register the tests.

Every check runs in two modes chosen by the partition's features, not by separate files:

- a partition with the ``gpu`` feature (JUWELS Booster: ``booster``, ``develbooster``)
  runs the real sizes, one task per GPU through the partition's launcher (srun), inside
  the Apptainer image when the partition has a container platform;
- any other partition (ReFrame's built-in ``generic`` system, ``checks/config/local.py``)
  runs the CPU mode: tiny model, 1 or 2 processes under ``torchrun --standalone``, gloo.
"""
from __future__ import annotations

import os
import shlex
from typing import Any

import reframe as rfm
import reframe.utility.sanity as sn
from reframe.core.builtins import parameter, performance_function, run_after, run_before, sanity_function, variable

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

    def run_in_mode(self, gpu: bool) -> None:
        """Make this variant a GPU-mode or a CPU-mode (CI) test: where it runs, its tags."""
        self.valid_systems = GPU_PARTITIONS if gpu else CPU_PARTITIONS
        self.tags |= {"gpu", "benchmark"} if gpu else {"cpu", "ci"}

    def run_nowhere(self) -> None:
        """A parameter combination with no mode (e.g. tf32 on the CPU): no valid system."""
        self.valid_systems = []

    @run_after("setup")
    def set_launch(self) -> None:
        args = self.xferscale_args()
        if self.on_gpu:
            self._launch_gpu(args)
        else:
            self._launch_cpu(args)

    def _launch_cpu(self, args: list[str]) -> None:
        self.num_tasks = 1
        if self.num_workers == 1:
            self.executable, self.executable_opts = "xferscale", args
            return
        # torchrun starts the workers; --no-python runs the `xferscale` script from PATH.
        self.executable = "torchrun"
        self.executable_opts = [
            "--standalone", f"--nproc_per_node={self.num_workers}", "--no-python", "xferscale", *args,
        ]
        self.env_vars.setdefault("OMP_NUM_THREADS", "1")

    def _launch_gpu(self, args: list[str]) -> None:
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
        suffix = self.current_partition.extras.get("master_addr_suffix", "")
        port = self.current_partition.extras.get("master_port", 29500)
        self.prerun_cmds += [
            f'export MASTER_ADDR="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1){suffix}"',
            f"export MASTER_PORT={port}",
        ]
        image = self.container_image or self.current_partition.extras.get("container_image", "")
        if image and self.current_partition.container_runtime:
            self.container_platform = self.current_partition.container_runtime
            self.container_platform.image = os.path.expandvars(image)
            self.container_platform.command = shlex.join(["xferscale", *args])
            self.container_platform.with_cuda = True
        else:
            self.executable, self.executable_opts = "xferscale", args

    # -- results -----------------------------------------------------------------------
    @sn.deferrable
    def result(self) -> dict[str, Any]:
        """The run's JSON result line (see xferscale.kernels.output)."""
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


class TrainThroughputBase(XferscaleRun):
    """``xferscale bench train``: training-step throughput at a model, precision, loader."""

    model = parameter(["tiny"])
    precision = parameter(["fp32"])
    loader = parameter(["synthetic"])  # synthetic (on the device), dali, torch

    #: Per-GPU batch by model (R152x4 at the paper's 4096 / 256 GPUs).
    batch_per_gpu = variable(dict, value={"tiny": 8, "r50x1": 128, "r152x4": 16})
    image_size = variable(dict, value={"tiny": 32, "r50x1": 224, "r152x4": 224})
    steps = variable(int, value=60)
    warmup_steps = variable(int, value=10)
    #: Prepared dataset folder for the DALI/torch loaders (empty: partition extras 'dataset').
    dataset = variable(str, value="")
    result_kernel = "train"

    @run_after("setup")
    def cpu_sizes(self) -> None:
        if not self.on_gpu:  # a CPU smoke run: a few steps are enough to time
            self.steps, self.warmup_steps = 4, 1

    def xferscale_args(self) -> list[str]:
        args = [
            "bench", "train", "--model", self.model, "--precision", self.precision,
            "--batch-size", str(self.batch_per_gpu[self.model]), "--image-size", str(self.image_size[self.model]),
            "--steps", str(self.steps), "--warmup", str(self.warmup_steps),
        ]
        if self.loader == "synthetic":
            return args + ["--data", "synthetic"]
        dataset = self.dataset or self.current_partition.extras.get("dataset", "")
        return args + ["--data", "prepared", "--backend", self.loader, "--data-path", dataset]

    @run_before("run")
    def need_dataset(self) -> None:
        self.skip_if(self.loader != "synthetic" and not (self.dataset or self.current_partition.extras.get("dataset")),
                     "no prepared dataset: set -S dataset=PATH or the partition's extras['dataset']")

    @performance_function("img/s")
    def throughput_total(self):
        return self.result_value("images_per_s_total")

    @performance_function("img/s")
    def throughput_per_gpu(self):
        return self.result_value("images_per_s_total") / self.num_workers

    @performance_function("ms")
    def step_time_p50(self):
        return self.result_value("step_time_ms_p50")

    @performance_function("GB")
    def peak_memory(self):
        return self.result_value("peak_memory_gb")


class ScalingSweepBase(TrainThroughputBase):
    """Throughput on N workers and E(N) = 100 T(N) / (N T(1)) against the 1-worker run.

    Subclasses define the ``num_workers`` parameter; every N > 1 depends on the N = 1
    variant of the same class on the same partition and environment.
    """

    def baseline_name(self) -> str:
        """The unique name of the N = 1 variant with this variant's other parameters."""
        cls = type(self)
        same = {name: (lambda v, mine=getattr(self, name): v == mine)
                for name in cls.param_space.params if name != "num_workers"}
        (variant,) = cls.get_variant_nums(num_workers=lambda n: n == 1, **same)
        return cls.variant_name(variant)

    @run_after("init")
    def depend_on_single(self) -> None:
        if self.num_workers > 1:
            self.depends_on(self.baseline_name())

    def single_throughput(self) -> float:
        if self.num_workers == 1:
            return self.result_value("images_per_s_total")
        return self.getdep(self.baseline_name()).result_value("images_per_s_total")

    @performance_function("%")
    def efficiency(self):
        return 100.0 * self.result_value("images_per_s_total") / (self.num_workers * self.single_throughput())

    @sanity_function
    def assert_scaling(self):
        return sn.all([
            self.assert_result(),
            sn.assert_bounded(self.efficiency(), 0.0, 150.0, msg="E(N) = {0} % is not plausible"),
        ])


class AllReduceBase(XferscaleRun):
    """``xferscale bench allreduce``: bus bandwidth up to a model's gradient size."""

    framework = parameter(["torch"])
    model = variable(str, value="r152x4")
    min_bytes = variable(str, value="1K")
    max_bytes = variable(str, value="")  # empty: the model's gradient size
    iters = variable(int, value=20)
    result_kernel = "allreduce"

    @run_after("setup")
    def cpu_sizes(self) -> None:
        if not self.on_gpu:  # three sizes over gloo: the path, not the numbers, is under test
            self.min_bytes, self.max_bytes, self.iters = "64K", self.max_bytes or "1M", 3

    def xferscale_args(self) -> list[str]:
        args = ["bench", "allreduce", "--framework", self.framework, "--model", self.model,
                "--min-bytes", self.min_bytes, "--factor", "4", "--iters", str(self.iters), "--warmup", "2"]
        return args + (["--max-bytes", self.max_bytes] if self.max_bytes else [])

    @performance_function("GB/s")
    def busbw_gradient(self):
        return self.result_value("busbw_gradient_gbps")

    @performance_function("GB/s")
    def busbw_peak(self):
        return self.result_value("busbw_peak_gbps")

    @performance_function("ms")
    def time_gradient(self):
        return self.result_value("time_gradient_ms")
