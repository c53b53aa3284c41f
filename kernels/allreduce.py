"""All-reduce bus bandwidth over a sweep of message sizes (``xferscale bench allreduce``).

Sizes double from ``--min-bytes`` up to the gradient size of ``--model`` (R152x4: 3.75 GB
in fp32), the largest message data-parallel training reduces. Bandwidths follow the
nccl-tests convention: algorithm bandwidth = bytes / time, bus bandwidth = algbw * 2(n-1)/n,
the per-link rate a ring achieves, comparable across rank counts. The time of one size is
the slowest rank's mean, so a straggler shows up rather than being averaged away.

Launch with torchrun or srun (torch.distributed: NCCL on GPUs, gloo on CPUs) or with
horovodrun (``--framework horovod``).
"""
from __future__ import annotations

import argparse
import time
from typing import Any, Callable

import torch

from xferscale import distributed as xdist
from xferscale.kernels.output import emit_result
from xferscale.scaling_model import gradient_bytes


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--framework", choices=["torch", "horovod"], default="torch",
                        help="torch.distributed (launch with torchrun/srun) or Horovod (horovodrun)")
    parser.add_argument("--model", default="r152x4", choices=["tiny", "r50x1", "r152x4"],
                        help="the sweep ends at this model's fp32 gradient size (default: %(default)s)")
    parser.add_argument("--num-classes", type=int, default=1000, help="head size used for the gradient size")
    parser.add_argument("--min-bytes", type=_size, default=_size("1K"), help="smallest message, e.g. 1K (default: 1K)")
    parser.add_argument("--max-bytes", type=_size, default=None,
                        help="largest message, e.g. 64M (default: the model's gradient size)")
    parser.add_argument("--factor", type=int, default=2, help="size multiplier between sweep points")
    parser.add_argument("--iters", type=int, default=20, help="timed all-reduces per size")
    parser.add_argument("--warmup", type=int, default=5, help="untimed all-reduces per size")
    parser.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default="float32")


def _size(text: str) -> int:
    """'4K', '64M', '3.75G' or a plain byte count -> bytes (powers of 1024)."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    text = str(text).strip().upper().removesuffix("B").removesuffix("I")
    try:
        if text and text[-1] in units:
            return int(float(text[:-1]) * units[text[-1]])
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (use e.g. 4096, 64K, 16M, 1.5G)") from None


def sweep_sizes(min_bytes: int, max_bytes: int, factor: int, element_size: int) -> list[int]:
    """Message sizes in bytes, whole elements, geometric from min to max; max always included."""
    if min_bytes <= 0 or max_bytes < min_bytes or factor < 2:
        raise ValueError(f"bad sweep: min {min_bytes} B, max {max_bytes} B, factor {factor} (need 0 < min <= max, factor >= 2)")
    sizes, size = [], min_bytes
    while size < max_bytes:
        sizes.append(size - size % element_size or element_size)
        size *= factor
    sizes.append(max_bytes - max_bytes % element_size or element_size)
    return sorted(set(sizes))


def bus_bandwidth(nbytes: int, seconds: float, world_size: int) -> tuple[float, float]:
    """(algorithm, bus) bandwidth in GB/s of one all-reduce of ``nbytes`` taking ``seconds``."""
    algbw = nbytes / seconds / 1e9
    return algbw, algbw * (2 * (world_size - 1) / world_size if world_size > 1 else 0.0)


def _reducer(env: xdist.DistEnv) -> Callable[[torch.Tensor], None]:
    if env.backend == "horovod":
        import horovod.torch as hvd

        return lambda t: hvd.allreduce_(t, op=hvd.Sum)
    if env.backend == "ddp":
        import torch.distributed as dist

        return lambda t: dist.all_reduce(t)
    raise RuntimeError("bench allreduce needs more than one process: launch it with torchrun, srun or horovodrun")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_allreduce(env: xdist.DistEnv, nbytes: int, dtype: torch.dtype, iters: int, warmup: int) -> float:
    """Mean seconds per all-reduce of ``nbytes``, the maximum over ranks."""
    reduce = _reducer(env)
    tensor = torch.ones(nbytes // torch.empty((), dtype=dtype).element_size(), dtype=dtype, device=env.device)
    for _ in range(warmup):
        reduce(tensor)
    _sync(env.device)
    xdist.barrier(env)
    start = time.perf_counter()
    for _ in range(iters):
        reduce(tensor)
    _sync(env.device)
    elapsed = torch.tensor([(time.perf_counter() - start) / iters], dtype=torch.float64, device=env.device)
    return float(xdist.all_reduce(elapsed, env, op="max").item())


def run(args: argparse.Namespace) -> dict[str, Any]:
    env = xdist.init_distributed("horovod" if args.framework == "horovod" else "ddp")
    try:
        dtype = getattr(torch, args.dtype)
        element = torch.empty((), dtype=dtype).element_size()
        max_bytes = args.max_bytes or gradient_bytes(args.model, args.num_classes)
        sizes = sweep_sizes(args.min_bytes, max_bytes, args.factor, element)
        points = []
        for nbytes in sizes:
            seconds = time_allreduce(env, nbytes, dtype, args.iters, args.warmup)
            algbw, busbw = bus_bandwidth(nbytes, seconds, env.world_size)
            points.append({"bytes": nbytes, "time_us": seconds * 1e6, "algbw_gbps": algbw, "busbw_gbps": busbw})
        result = {
            "framework": args.framework,
            "comm_backend": _comm_backend(env),
            "device": str(env.device.type),
            "world_size": env.world_size,
            "dtype": args.dtype,
            "model": args.model,
            "max_bytes": max_bytes,
            "sizes": points,
            "busbw_peak_gbps": max(p["busbw_gbps"] for p in points),
            # At the largest message: the model's gradient size unless --max-bytes was given.
            "busbw_gradient_gbps": points[-1]["busbw_gbps"],
            "time_gradient_ms": points[-1]["time_us"] / 1e3,
        }
        if env.is_main:
            human = [(f"{p['bytes']:>13d} B", f"{p['time_us']:12.1f} us  algbw {p['algbw_gbps']:8.3f} GB/s  "
                      f"busbw {p['busbw_gbps']:8.3f} GB/s") for p in points]
            human += [("ranks", env.world_size), ("backend", result["comm_backend"]),
                      ("busbw peak GB/s", result["busbw_peak_gbps"]),
                      ("busbw at gradient size GB/s", result["busbw_gradient_gbps"])]
            emit_result("allreduce", result, human)
        return result
    finally:
        xdist.shutdown(env)


def _comm_backend(env: xdist.DistEnv) -> str:
    if env.backend == "horovod":
        return "horovod"
    import torch.distributed as dist

    return str(dist.get_backend())
