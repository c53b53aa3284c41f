"""Library classes of the benchmark checks: train throughput, scaling sweep, all-reduce, loaders, node."""
from __future__ import annotations

import importlib.util

import reframe.utility.sanity as sn
from reframe.core.builtins import parameter, performance_function, run_after, run_before, sanity_function, variable

from xferscale.checklib.base import XferscaleRun
from xferscale.kernels.output import ResultNotFound


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
    #: Gradient all-reduce: auto (DDP) or horovod (the paper's; needs Horovod in the image).
    distributed = variable(str, value="auto")
    #: Prepared dataset folder for the DALI/torch loaders (empty: partition extras 'dataset').
    dataset = variable(str, value="")
    result_kernel = "train"

    @run_after("setup")
    def cpu_sizes(self) -> None:
        if not self.on_gpu:  # a CPU smoke run: ~1 s of timed steps, the rest is start-up
            self.steps, self.warmup_steps = 20, 2

    def xferscale_args(self) -> list[str]:
        args = [
            "bench", "train", "--model", self.model, "--precision", self.precision,
            "--batch-size", str(self.batch_per_gpu[self.model]), "--image-size", str(self.image_size[self.model]),
            "--steps", str(self.steps), "--warmup", str(self.warmup_steps), "--distributed", self.distributed,
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

    # Energy of the timed window (NVML); without a counter the value is null and ReFrame
    # skips the variable with the reason.
    @performance_function("W")
    def power(self):
        return self.result_value("watts")

    @performance_function("img/J")
    def images_per_joule(self):
        return self.result_value("images_per_joule")


class ScalingSweepBase(TrainThroughputBase):
    """Throughput on N workers and E(N) = 100 T(N) / (N T(1)) against the 1-worker run.

    Subclasses define the ``num_workers`` parameter; every N > 1 depends on the N = 1
    variant of the same class on the same partition and environment, and on the next
    smaller N of the sweep, so the points run one after the other: concurrent points would
    share the network and disturb each other's figures.
    """

    def variant_with(self, num_workers: int) -> str | None:
        """The unique name of the variant at ``num_workers`` with this variant's other parameters."""
        cls = type(self)
        same = {name: (lambda v, mine=getattr(self, name): v == mine)
                for name in cls.param_space.params if name != "num_workers"}
        found = cls.get_variant_nums(num_workers=lambda n: n == num_workers, **same)
        return cls.variant_name(found[0]) if found else None

    def baseline_name(self) -> str:
        return self.variant_with(1)

    def previous_point(self) -> str | None:
        """The next smaller N of this variant's sweep that runs where it runs (None: none)."""
        smaller = sorted(n for n in type(self).param_space["num_workers"] if 1 < n < self.num_workers)
        for n in reversed(smaller):
            name = self.variant_with(n)
            if name is not None and self.sweep_point_runs(n):
                return name
        return None

    def sweep_point_runs(self, num_workers: int) -> bool:
        """Whether the sweep has a point at ``num_workers`` in this variant's mode (subclasses)."""
        return True

    @run_after("init")
    def depend_on_single(self) -> None:
        if self.num_workers > 1:
            self.depends_on(self.baseline_name())
            previous = self.previous_point()
            if previous is not None:
                self.depends_on(previous)

    def single_throughput(self) -> float:
        if self.num_workers == 1:
            return self.result_value("images_per_s_total")
        return self.getdep(self.baseline_name()).result_value("images_per_s_total")

    @performance_function("%")
    def efficiency(self):
        return 100.0 * self.result_value("images_per_s_total") / (self.num_workers * self.single_throughput())

    @sanity_function
    def assert_scaling(self):
        # On GPUs E(N) far above 100 % means a broken measurement. CPU runs share their cores
        # (CI runners, laptops), where a load spike can make either run arbitrarily slow:
        # there only the arithmetic is checked.
        upper = 150.0 if self.on_gpu else None
        return sn.all([
            self.assert_result(),
            sn.assert_bounded(self.efficiency(), 0.0, upper, msg="E(N) = {0} % is not plausible"),
        ])


class AllReduceBase(XferscaleRun):
    """``xferscale bench allreduce``: bus bandwidth up to a model's gradient size."""

    framework = parameter(["torch"])
    model = variable(str, value="r152x4")
    min_bytes = variable(str, value="1K")
    factor = variable(int, value=2)
    max_bytes = variable(str, value="")  # empty: the model's gradient size
    iters = variable(int, value=20)
    result_kernel = "allreduce"

    @run_after("setup")
    def cpu_sizes(self) -> None:
        if not self.on_gpu:  # three sizes over gloo: the path, not the numbers, is under test
            self.min_bytes, self.max_bytes, self.factor, self.iters = "64K", self.max_bytes or "1M", 4, 3

    def xferscale_args(self) -> list[str]:
        args = ["bench", "allreduce", "--framework", self.framework, "--model", self.model,
                "--min-bytes", self.min_bytes, "--factor", str(self.factor), "--iters", str(self.iters), "--warmup", "2"]
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


class LoaderThroughputBase(XferscaleRun):
    """``xferscale bench loader``: images/s of the DALI and torch input pipelines."""

    backends = variable(str, value="dali,torch")
    batch_size = variable(int, value=256)
    image_size = variable(int, value=224)
    batches = variable(int, value=50)
    workers = variable(int, value=10)
    #: Prepared dataset folder (empty: the partition's extras['dataset'], else synthetic JPEGs).
    dataset = variable(str, value="")
    result_kernel = "loader"

    @run_after("init")
    def need_loader_kernel(self) -> None:
        self.skip_if(importlib.util.find_spec("xferscale.kernels.loader") is None,
                     "the loader kernel (xferscale.kernels.loader) is not installed in this build")

    @run_after("setup")
    def cpu_sizes(self) -> None:
        if not self.on_gpu:
            self.batch_size, self.image_size, self.batches, self.workers = 16, 64, 3, 1

    def xferscale_args(self) -> list[str]:
        args = ["bench", "loader", "--backends", self.backends, "--batch-size", str(self.batch_size),
                "--image-size", str(self.image_size), "--batches", str(self.batches), "--warmup", "1",
                "--workers", str(self.workers)]
        dataset = self.dataset or (self.current_partition.extras.get("dataset", "") if self.on_gpu else "")
        # Synthetic JPEGs: two batches' worth, so an epoch holds full batches at every size.
        return args + (["--data", dataset] if dataset else ["--synthetic-images", str(max(64, 2 * self.batch_size))])

    @sanity_function
    def assert_measured(self):
        results = sn.getitem(self.result(), "results")
        return sn.all([sn.assert_gt(sn.getitem(sn.getitem(results, b), "images_per_s"), 0,
                                    msg=f"{b}: no images/s") for b in self.backends.split(",")])

    def backend_rate(self, backend: str) -> float:
        return float(sn.evaluate(self.result())["results"][backend]["images_per_s"])

    @performance_function("img/s")
    def dali_images_per_s(self):
        return self.backend_rate("dali")

    @performance_function("img/s")
    def torch_images_per_s(self):
        return self.backend_rate("torch")


class NodeAcceptanceBase(XferscaleRun):
    """``xferscale bench node``: one node's acceptance, one task that sees all its GPUs.

    Sanity: the result line is there and no item failed (a skipped item carries its reason
    and is not a failure: one GPU has no all-reduce, a build without DALI no DALI item).
    Performance: the figures the README's targets are stated in.
    """

    #: Comma-separated items (empty: all), as ``xferscale bench node --only``.
    only = variable(str, value="")
    #: Timed steps per item (0: the kernel's default, 30 on a GPU).
    steps = variable(int, value=0)
    result_kernel = "node"

    def xferscale_args(self) -> list[str]:
        return ["bench", "node", *(["--only", self.only] if self.only else []),
                *(["--steps", str(self.steps)] if self.steps else [])]

    @run_before("run")
    def whole_node(self) -> None:
        """After the base's launch: one task, but every GPU of the node (the kernel spawns its
        all-reduce ranks itself)."""
        if self.on_gpu:
            self.num_tasks, self.num_tasks_per_node = 1, 1
            self.num_gpus_per_node = self.gpus_per_node
            extras = self.current_partition.extras
            self.num_cpus_per_task = int(extras.get("cpus_per_task", 1)) * self.gpus_per_node  # its loader workers

    @sanity_function
    def assert_no_item_failed(self):
        return sn.all([
            self.assert_result(),
            sn.assert_eq(sn.getitem(self.result(), "failed"), 0,
                         msg="{0} item(s) failed; see the table in the output"),
        ])

    def item_value(self, item: str, key: str) -> float:
        value = sn.evaluate(self.result())["items"].get(item, {}).get(key)
        if value is None:
            raise ResultNotFound(f"{item}: no {key} (item skipped or not run)")
        return float(value)

    @performance_function("img/s")
    def amp_bf16_per_gpu(self):
        return self.item_value("train/amp_bf16", "images_per_s_total")

    @performance_function("%")
    def mfu_amp_bf16(self):
        return 100 * self.item_value("train/amp_bf16", "mfu") if self.on_gpu else 0.0

    @performance_function("x")
    def ours_over_plain(self):
        return self.item_value("baseline", "ratio_median")

    @performance_function("%")
    def input_torch_kept(self):
        return 100 * self.item_value("input/torch", "fraction")

    @performance_function("img/J")
    def images_per_joule_amp_bf16(self):
        return self.item_value("train/amp_bf16", "images_per_joule")
