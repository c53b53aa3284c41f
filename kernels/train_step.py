"""Training-step throughput (``xferscale bench train``), on the trainer's own step.

Times :class:`xferscale.trainer.TrainStep` (forward, backward, gradient all-reduce, AGC,
SGD) on a model at a precision and per-GPU batch, fed either by one synthetic batch kept
on the device (compute only) or by the prepared-dataset loader (DALI or torch). Warm-up
steps are excluded. Throughput is measured on every rank and summed ("as measured"), so
a straggler lowers the total instead of hiding behind rank 0 x N. The GPUs' energy over the
same timed window (NVML, :mod:`xferscale.energy`) gives watts and images per joule; without
a counter those fields are null and ``energy_counter`` says why.
"""
from __future__ import annotations

import argparse
import itertools
import math
import resource
import sys
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from xferscale import distributed as xdist
from xferscale.config import DataConfig
from xferscale.energy import EnergyReading, fields_text, meter_for
from xferscale.kernels.output import emit_result
from xferscale.losses import LOSSES
from xferscale.models import MODEL_NAMES, build_model
from xferscale.precision import autocast_context, configure_matmul
from xferscale.scaling_model import peak_tflops
from xferscale.trainer import SpeedOptions, build_train_step

PRECISIONS = ("fp32", "tf32", "amp_fp16", "amp_bf16")
DEFAULT_IMAGE_SIZE = {"tiny": 64, "r50x1": 224, "r152x4": 224}


def _precision(text: str) -> str:
    value = text.replace("-", "_")
    if value not in PRECISIONS:
        raise argparse.ArgumentTypeError(f"precision {text!r} is not one of {', '.join(PRECISIONS)}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", choices=MODEL_NAMES, default="tiny")
    parser.add_argument("--precision", type=_precision, default="fp32", help="fp32, tf32, amp-fp16 or amp-bf16")
    parser.add_argument("--batch-size", type=int, default=16, help="images per GPU (per process) and step")
    parser.add_argument("--image-size", type=int, default=None, help="default: 224, or 64 for the tiny model")
    parser.add_argument("--num-classes", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=30, help="timed steps")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps before timing")
    parser.add_argument("--data", choices=["synthetic", "prepared"], default="synthetic",
                        help="synthetic: one random batch kept on the device; prepared: a dataset folder")
    parser.add_argument("--backend", choices=["dali", "torch"], default="dali", help="loader of --data prepared")
    parser.add_argument("--data-path", default=None, help="prepared dataset folder (xferscale prepare --out)")
    parser.add_argument("--workers", type=int, default=4, help="loader workers / threads per process")
    parser.add_argument("--distributed", choices=["auto", "ddp", "horovod"], default="auto")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--fused-sgd", action="store_true", help="one fused SGD kernel instead of foreach")
    parser.add_argument("--no-foreach", dest="foreach", action="store_false",
                        help="per-parameter AGC and SGD (the reference kernels)")
    parser.add_argument("--compare-baseline", action="store_true",
                        help="run the suite's step and the plain PyTorch/timm loop alternately on one process "
                             "and print ours / baseline")
    parser.add_argument("--repeats", type=int, default=5, help="alternating repeats of --compare-baseline")


def _batches(args: argparse.Namespace, env: xdist.DistEnv, image_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    if args.data == "synthetic":
        gen = torch.Generator().manual_seed(env.rank)
        images = torch.randn(args.batch_size, 3, image_size, image_size, generator=gen).to(env.device)
        targets = torch.randint(0, args.num_classes, (args.batch_size,), generator=gen).to(env.device)
        return itertools.repeat((images, targets))
    if not args.data_path:
        raise SystemExit("xferscale bench train: --data prepared needs --data-path DATASET_FOLDER")
    from xferscale.data.loader import build_loader

    cfg = DataConfig(source="prepared", path=args.data_path, backend=args.backend, image_size=image_size,
                     workers=args.workers)
    loader = build_loader(cfg, batch_size=args.batch_size, rank=env.rank, world_size=env.world_size,
                          device=env.device, train=True, seed=0, num_classes=args.num_classes)
    if len(loader) == 0:
        raise SystemExit(f"xferscale bench train: {args.data_path} has fewer than one batch of {args.batch_size} per rank")
    return itertools.chain.from_iterable(loader.epoch(e) for e in itertools.count())


class _StepClock:
    """Per-step times: CUDA events on a GPU (no host sync inside the loop), else wall time."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.marks: list[Any] = []

    def mark(self) -> None:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self.marks.append(event)
        else:
            self.marks.append(time.perf_counter())

    def step_times_ms(self) -> list[float]:
        if self.cuda:
            torch.cuda.synchronize()
            return [a.elapsed_time(b) for a, b in zip(self.marks, self.marks[1:])]
        return [(b - a) * 1e3 for a, b in zip(self.marks, self.marks[1:])]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_memory_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1e9
    # ru_maxrss is in KiB on Linux: the process's peak resident memory.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


def _gather(value: float, env: xdist.DistEnv) -> list[float]:
    """``value`` of every rank, in rank order."""
    slots = torch.zeros(env.world_size, dtype=torch.float64, device=env.device)
    slots[env.rank] = value
    return xdist.all_reduce(slots, env).tolist()


def _model_flops(model: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor], precision: str,
                 device: torch.device) -> float:
    """FLOPs (convolutions, matmuls) of one forward + backward on ``batch``: the model FLOPs
    of MFU. Counted on the bare model, so DDP hooks and torch.compile stay out of it."""
    images, targets = batch
    counter = FlopCounterMode(display=False)
    with counter:
        with autocast_context(precision, device):
            logits = model(images)
        LOSSES["softmax_ce"](logits.float(), targets).backward()
    model.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def _energy_fields(reading: EnergyReading, env: xdist.DistEnv, images: int) -> dict[str, Any]:
    """The timed window's energy summed over the ranks' GPUs (no counter if one rank has none)."""
    joules = _gather(math.nan if reading.joules is None else reading.joules, env)
    if reading.joules is not None and any(math.isnan(j) for j in joules):
        reading = EnergyReading(reading.seconds, None, "no counter: not on every rank")
    elif reading.joules is not None:
        reading = EnergyReading(reading.seconds, sum(joules), reading.source)
    return reading.fields(images)


def summarise(per_rank_ips: list[float], step_ms: list[float]) -> dict[str, float]:
    """Totals and step-time percentiles of a measured run."""
    times = np.asarray(step_ms, dtype=float)
    return {
        "images_per_s_total": float(sum(per_rank_ips)),
        "images_per_s_min_rank": float(min(per_rank_ips)),
        "step_time_ms_mean": float(times.mean()),
        "step_time_ms_p50": float(np.percentile(times, 50)),
        "step_time_ms_p90": float(np.percentile(times, 90)),
        "step_time_ms_p99": float(np.percentile(times, 99)),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.steps < 1 or args.warmup < 1 or args.batch_size < 1:
        raise SystemExit("xferscale bench train: --steps, --warmup and --batch-size must be >= 1")
    if args.compare_baseline:
        return _compare_baseline(args)
    env = xdist.init_distributed(args.distributed)
    try:
        return _run(args, env)
    finally:
        xdist.shutdown(env)


def _run(args: argparse.Namespace, env: xdist.DistEnv) -> dict[str, Any]:
    result = measure(args, env)
    if env.is_main:
        per_rank = result["images_per_s_per_rank"]
        emit_result("train", result, [
            ("model / precision / data", f"{args.model} / {args.precision} / {result['data']}"),
            ("ranks x batch", f"{env.world_size} x {args.batch_size} @ {result['image_size']}px on "
                              f"{result['device_name']}"),
            ("images/s per rank", " ".join(f"{v:.1f}" for v in per_rank)),
            ("images/s total", result["images_per_s_total"]),
            ("step ms p50/p90/p99", f"{result['step_time_ms_p50']:.1f} / {result['step_time_ms_p90']:.1f} / "
                                    f"{result['step_time_ms_p99']:.1f}"),
            ("peak memory GB", result["peak_memory_gb"]),
            ("model TFLOP/s per rank", result["tflops_per_rank"]),
            ("MFU", f"{100 * result['mfu']:.1f} %" if result["mfu"] is not None else "n/a (device peak unknown)"),
            ("energy", fields_text(result)),
            ("last loss", result["loss"]),
        ])
    sys.stdout.flush()
    return result


def measure(args: argparse.Namespace, env: xdist.DistEnv) -> dict[str, Any]:
    """Time ``args.steps`` steps after ``args.warmup``; the result without printing it."""
    image_size = args.image_size or DEFAULT_IMAGE_SIZE[args.model]
    configure_matmul(args.precision)
    torch.manual_seed(0)
    model = build_model(args.model, args.num_classes).to(env.device)
    batches = _batches(args, env, image_size)
    # Before wrapping: a backward on the bare model must not fire DDP's or Horovod's hooks.
    flops_per_step = _model_flops(model, next(batches), args.precision, env.device)
    step = build_train_step(model, LOSSES["softmax_ce"], lr=1e-3, precision=args.precision, env=env,
                            options=_speed_options(args))
    for _ in range(args.warmup):
        step(*next(batches))
    _sync(env.device)
    if env.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(env.device)
    xdist.barrier(env)

    clock = _StepClock(env.device)
    meter = meter_for(env.device)
    meter.start()
    start = time.perf_counter()
    clock.mark()
    for _ in range(args.steps):
        loss = step(*next(batches))
        clock.mark()
    _sync(env.device)
    elapsed = time.perf_counter() - start
    reading = meter.stop()
    meter.close()

    per_rank = _gather(args.steps * args.batch_size / elapsed, env)
    result = {
        "model": args.model, "precision": args.precision, "data": args.data if args.data == "synthetic" else args.backend,
        "world_size": env.world_size, "device": env.device.type,
        "device_name": torch.cuda.get_device_name(env.device) if env.device.type == "cuda" else "cpu",
        "batch_per_rank": args.batch_size, "image_size": image_size, "steps": args.steps, "warmup": args.warmup,
        "images_per_s_per_rank": per_rank,
        **summarise(per_rank, clock.step_times_ms()),
        "peak_memory_gb": max(_gather(_peak_memory_gb(env.device), env)),
        "flops_per_image": flops_per_step / args.batch_size,
        **_energy_fields(reading, env, args.steps * args.batch_size * env.world_size),
    }
    peak = peak_tflops(result["device_name"], args.precision)
    achieved = flops_per_step * args.steps / elapsed
    result["tflops_per_rank"] = achieved / 1e12
    result["mfu"] = achieved / (peak * 1e12) if peak else None
    result["loss"] = float(loss.item())  # the last step's: finite, or the run is broken
    return result


def _speed_options(args: argparse.Namespace) -> SpeedOptions:
    return SpeedOptions(foreach=args.foreach, fused_sgd=args.fused_sgd, channels_last=args.channels_last,
                        compile=args.compile)


def _compare_baseline(args: argparse.Namespace) -> dict[str, Any]:
    """Ours / plain-loop images/s on synthetic input, alternating in one process."""
    from xferscale.kernels.baseline import compare

    options = _speed_options(args)
    result = compare(args.model, args.batch_size, args.image_size or DEFAULT_IMAGE_SIZE[args.model], args.precision,
                     steps=args.steps, warmup=args.warmup, repeats=args.repeats, options=options,
                     num_classes=args.num_classes)
    emit_result("train_compare", result, [
        ("model / precision", f"{args.model} / {args.precision} @ {result['image_size']}px, batch {args.batch_size}"),
        ("options", ", ".join(f"{k}={v}" for k, v in result["options"].items())),
        ("ours images/s (median)", result["ours_images_per_s"]),
        ("baseline images/s (median)", result["baseline_images_per_s"]),
        ("ratio ours/baseline", f"{result['ratio_median']:.3f} (min {result['ratio_min']:.3f}, "
                                f"max {result['ratio_max']:.3f}, {args.repeats} repeats)"),
    ])
    return result
