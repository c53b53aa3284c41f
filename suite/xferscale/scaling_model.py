"""A data-parallel scaling model: predicted efficiency E(N) from a 1-GPU step time.

One synchronous step on N GPUs takes

    t(N) = t1 * (1 + cv * sqrt(2 ln N))              compute, waiting for the slowest rank
         + max(0, t_ar(N) - overlap * t1)             all-reduce time not hidden by backward

and E(N) = 100 * T(N) / (N * T(1)) = 100 * t1 / t(N) at a fixed per-GPU batch (weak
scaling, as in the paper's Fig. 4). The gradient all-reduce of G bytes over N ranks is a
ring at the slowest link's bus bandwidth (NVLink inside a node, InfiniBand between nodes)
plus a per-message latency that grows like a tree, log2(N), over the fused buckets:

    t_ar(N) = 2 (N-1)/N * G / busbw(N) + ceil(G / bucket) * 2 log2(N) * alpha

The straggler term is the expected maximum of N normally distributed step times with
coefficient of variation cv (Gumbel asymptote); it is the part of the cost that keeps
growing with N once the ring's bandwidth term has saturated.
"""
from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass, replace
from typing import Iterable, Sequence

import numpy as np


@dataclass(frozen=True)
class Interconnect:
    """Bus bandwidths an all-reduce reaches inside a node and across nodes."""

    gpus_per_node: int
    intra_busbw_gbps: float  # GB/s, all GPUs of one node
    inter_busbw_gbps: float  # GB/s, once the ring leaves the node
    latency_us: float = 5.0  # per tree level per message

    @classmethod
    def from_allreduce(cls, node: dict, multi_node: dict | None, gpus_per_node: int) -> "Interconnect":
        """From ``bench allreduce`` results: one on a full node, one across nodes."""
        intra = float(node["busbw_gradient_gbps"])
        inter = float((multi_node or node)["busbw_gradient_gbps"])
        return cls(gpus_per_node, intra, inter)


# JUWELS Booster, as given: 4 A100 joined by NVLink3 (4 links = 100 GB/s per direction
# between each pair, so a 4-GPU ring runs over 3 x 100 GB/s at ~80 %), and 4 HDR200
# adapters per node (4 x 25 GB/s; NCCL reaches ~90 % of it across nodes).
JUWELS_BOOSTER_LINKS = Interconnect(gpus_per_node=4, intra_busbw_gbps=240.0, inter_busbw_gbps=90.0, latency_us=5.0)

# Peak dense throughput (TFLOP/s) per precision, for model FLOP utilisation.
PEAK_TFLOPS: dict[str, dict[str, float]] = {
    "A100": {"fp32": 19.5, "tf32": 156.0, "amp_fp16": 312.0, "amp_bf16": 312.0},
    "H100": {"fp32": 67.0, "tf32": 494.7, "amp_fp16": 989.4, "amp_bf16": 989.4},
    "H200": {"fp32": 67.0, "tf32": 494.7, "amp_fp16": 989.4, "amp_bf16": 989.4},
}


def peak_tflops(device_name: str, precision: str) -> float | None:
    """The device's peak for ``precision``, matched by name ('NVIDIA A100-SXM4-40GB'); None if unknown."""
    for key, table in PEAK_TFLOPS.items():
        if key in device_name.upper():
            return table.get(precision)
    return None


@functools.lru_cache(maxsize=None)
def parameter_count(model: str, num_classes: int = 1000) -> int:
    """Parameters of ``model``, counted on the meta device (no memory, no weights)."""
    import torch

    from xferscale.models import build_model

    with torch.device("meta"):
        net = build_model(model, num_classes)
    return sum(p.numel() for p in net.parameters())


def gradient_bytes(model: str, num_classes: int = 1000, bytes_per_value: int = 4) -> int:
    """Bytes all-reduced per step: one fp32 gradient value per parameter."""
    return parameter_count(model, num_classes) * bytes_per_value


@dataclass(frozen=True)
class ScalingModel:
    step_time_s: float  # t1: one step on one GPU at the per-GPU batch
    gradient_bytes: float
    links: Interconnect = JUWELS_BOOSTER_LINKS
    overlap: float = 0.5  # fraction of t1 that hides the all-reduce (backward is ~2/3)
    jitter_cv: float = 0.0  # coefficient of variation of a rank's step time
    bucket_bytes: float = 64 * 2**20  # Horovod's fusion buffer; DDP's default bucket is 25 MiB

    def allreduce_time(self, n: int) -> float:
        if n <= 1:
            return 0.0
        busbw = self.links.intra_busbw_gbps if n <= self.links.gpus_per_node else min(
            self.links.intra_busbw_gbps, self.links.inter_busbw_gbps)
        bandwidth = 2 * (n - 1) / n * self.gradient_bytes / (busbw * 1e9)
        messages = math.ceil(self.gradient_bytes / self.bucket_bytes)
        latency = messages * 2 * math.log2(n) * self.links.latency_us * 1e-6
        return bandwidth + latency

    def step_time(self, n: int) -> float:
        straggle = self.jitter_cv * math.sqrt(2 * math.log(n)) if n > 1 else 0.0
        exposed = max(0.0, self.allreduce_time(n) - self.overlap * self.step_time_s)
        return self.step_time_s * (1 + straggle) + exposed

    def efficiency(self, n: int) -> float:
        """E(N) in percent."""
        return 100.0 * self.step_time_s / self.step_time(n)

    def efficiencies(self, ns: Iterable[int]) -> dict[int, float]:
        return {int(n): self.efficiency(int(n)) for n in ns}


@dataclass(frozen=True)
class Fit:
    model: ScalingModel
    predicted: dict[int, float]
    measured: dict[int, float]

    @property
    def errors(self) -> dict[int, float]:
        """Predicted minus measured, in percentage points."""
        return {n: self.predicted[n] - self.measured[n] for n in self.measured}

    @property
    def max_abs_error(self) -> float:
        return max(abs(e) for e in self.errors.values())

    @property
    def rms_error(self) -> float:
        errs = list(self.errors.values())
        return math.sqrt(sum(e * e for e in errs) / len(errs))


def compare(model: ScalingModel, measured: dict[int, float]) -> Fit:
    return Fit(model, model.efficiencies(measured), dict(measured))


def fit(model: ScalingModel, measured: dict[int, float], free: Sequence[str] = ("overlap", "jitter_cv")) -> Fit:
    """Least-squares fit of the ``free`` fields of ``model`` to measured E(N) (percent)."""
    from scipy.optimize import least_squares

    bounds = {"overlap": (0.0, 0.95), "jitter_cv": (0.0, 0.2), "step_time_s": (1e-4, 1e3), "latency_us": (0.0, 1e4)}
    points = {n: e for n, e in measured.items() if n > 1}
    if len(points) < len(free):
        raise ValueError(f"need at least {len(free)} measured points with N > 1 to fit {', '.join(free)}")

    unknown = set(free) - set(bounds)
    if unknown:
        raise ValueError(f"cannot fit {', '.join(sorted(unknown))}; free fields are {', '.join(bounds)}")

    def residuals(x: np.ndarray) -> list[float]:
        trial = with_fields(model, **dict(zip(free, map(float, x))))
        return [trial.efficiency(n) - e for n, e in points.items()]

    start = [min(max(_field(model, f), bounds[f][0]), bounds[f][1]) for f in free]
    lo, hi = zip(*(bounds[f] for f in free))
    # The exposed-communication term has a kink (max(0, .)) that leaves flat regions in
    # the cost; a small grid of starts (plus the model's own values) finds the basin.
    grid = [[a + q * (b - a) for q in (0.01, 0.1, 0.5)] for a, b in zip(lo, hi)]
    best = None
    for x0 in [start, *map(list, itertools.product(*grid))]:
        result = least_squares(residuals, x0, bounds=(lo, hi))
        if best is None or result.cost < best.cost:
            best = result
    fitted = with_fields(model, **dict(zip(free, map(float, best.x))))
    return compare(fitted, measured)


def _field(model: ScalingModel, name: str) -> float:
    return getattr(model.links, name) if name == "latency_us" else getattr(model, name)


def with_fields(model: ScalingModel, **values: float) -> ScalingModel:
    """A copy of ``model`` with fields replaced; ``latency_us`` lives on its interconnect."""
    if "latency_us" in values:
        model = replace(model, links=replace(model.links, latency_us=values.pop("latency_us")))
    return replace(model, **values)


def paper_r152x4_model(per_gpu_batch: int = 16, achieved_tflops: float = 11.7) -> ScalingModel:
    """The paper's Fig. 4 set-up: R152x4, FP32, Horovod, JUWELS Booster.

    The paper does not give the 1-GPU step time; it is estimated from R152x4's 186.9 GMACs
    per 224 px image (x3 for forward + backward) at ``achieved_tflops`` (60 % of the A100's
    19.5 TFLOP/s FP32 peak) and a per-GPU batch of 16 (its 4096 global batch on 256 GPUs).
    """
    flops_per_image = 3 * 2 * 186.9e9
    step = per_gpu_batch * flops_per_image / (achieved_tflops * 1e12)
    return ScalingModel(step_time_s=step, gradient_bytes=936_533_224 * 4)


def paper_comparison(measured: dict[int, float]) -> tuple[Fit, Fit]:
    """(a-priori, fitted) scaling models of the paper's Fig. 4 beside its efficiencies.

    A priori: the given links, half a step of overlap, 5 us per tree level. Fitted: overlap
    and per-message latency chosen by least squares (Horovod's 64 MiB fused messages).
    """
    model = paper_r152x4_model()
    return compare(model, measured), fit(model, measured, free=("overlap", "latency_us"))


def comparison_table(a_priori: Fit, fitted: Fit) -> str:
    """Markdown: N, the paper's E(N), both models' E(N) and their errors."""
    lines = ["| N | paper E(N) % | a-priori model % | fitted model % | fitted - paper (pp) |",
             "|---:|---:|---:|---:|---:|"]
    for n, e in sorted(fitted.measured.items()):
        lines.append(f"| {n} | {e:.2f} | {a_priori.predicted[n]:.2f} | {fitted.predicted[n]:.2f} | "
                     f"{fitted.errors[n]:+.2f} |")
    m = fitted.model
    lines += ["", f"t1 = {m.step_time_s:.3f} s (R152x4, batch 16/GPU, estimated), gradient {m.gradient_bytes / 1e9:.2f} GB, "
              f"busbw {m.links.intra_busbw_gbps:.0f} / {m.links.inter_busbw_gbps:.0f} GB/s (NVLink / 4x HDR200).",
              f"A priori: max error {a_priori.max_abs_error:.2f} pp. Fitted (overlap {m.overlap:.3f}, "
              f"{m.links.latency_us:.0f} us per tree level per message): max error {fitted.max_abs_error:.2f} pp, "
              f"RMS {fitted.rms_error:.2f} pp."]
    return "\n".join(lines)
