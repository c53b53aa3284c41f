"""``xferscale bench node``: validate one node before a large job, in one table and one JSON line.

On whatever the node has it runs, each as an item with a status (``ok``, ``skipped`` with
the reason, ``failed`` with the error), its figure and its details:

- ``train/<precision>``: the trainer's step of R50x1 at fp32, tf32, amp_fp16 and amp_bf16
  on one GPU (finite loss, images/s, step p50/p90, peak memory, MFU against the device's
  peak), by ``xferscale bench train``;
- ``train/r152x4``: R152x4 at the paper's 16 images per GPU (amp_fp16, the paper's code's
  precision): does it fit, and at what rate;
- ``baseline``: the suite's step against the plain PyTorch/timm loop, R50x1 amp_bf16 with
  channels-last and ``torch.compile`` (``kernels/baseline.py``);
- ``input/torch``, ``input/dali``: training fed by each input pipeline (DALI: mixed
  decoding) from a prepared set of synthetic JPEGs, as a fraction of the same step fed by
  one batch kept on the device;
- ``allreduce``: NCCL bus bandwidth at R50x1's gradient size over all the GPUs it has, one
  process per GPU (one GPU: the local device copy only, said so);
- ``resume``: 30 steps, checkpointed at step 15 and resumed in a new model and optimizer,
  against 30 uninterrupted steps, with deterministic kernels: bit-identical, or the largest
  difference and why.

Each train item also reads the GPU's energy counter (NVML) around its timed window: watts and
images per joule beside images/s, and from them the GPU energy (kWh) of every shipped
pre-training config at its schedule's total steps (``energy_projection``). Without a counter
(no NVML, no GPU) those fields are null and say "no counter" with the reason.

Without a GPU the same command runs the tiny model on the CPU (64 px, fp32, gloo between two
processes) in about a minute: the paths, not the figures, are what it checks there.

It also runs outside the suite's environment, on a node with its own torch and timm: with
the source tree on ``PYTHONPATH`` (``PYTHONPATH=suite python -m xferscale.kernels.node``),
items that need what is absent (DALI) are skipped with the reason.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import socket
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from xferscale.energy import NO_COUNTER, EnergyProjection, fields_text, project_paper_runs, projection_table
from xferscale.kernels.output import emit_result

PRECISIONS = ("fp32", "tf32", "amp_fp16", "amp_bf16")


@dataclass
class Item:
    name: str
    status: str  # "ok", "skipped", "failed"
    figure: str = ""  # one human line
    reason: str = ""  # why skipped / what failed
    detail: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


class Skip(Exception):
    """An item that cannot run here; the message says why."""


class Failed(Exception):
    """An item that ran and showed a fault; the message says what."""


@dataclass(frozen=True)
class NodePlan:
    """What the command runs on this node: the GPU path or the CPU path, and its sizes."""

    device: torch.device
    device_name: str
    gpus: int
    model: str
    image_size: int
    batch_size: int
    steps: int
    warmup: int
    workers: int
    jpegs: int
    scratch: Path  # a temporary folder for the run's synthetic JPEGs, removed at the end

    @property
    def gpu(self) -> bool:
        return self.device.type == "cuda"


def make_plan(args: argparse.Namespace, scratch: Path) -> NodePlan:
    if torch.cuda.is_available() and not args.cpu:
        device = torch.device("cuda", 0)
        batch, steps, warmup = args.batch_size or 128, args.steps or 30, args.warmup or 10
        return NodePlan(device, torch.cuda.get_device_name(device), torch.cuda.device_count(), "r50x1", 224,
                        batch, steps, warmup, args.workers or max(1, (os.cpu_count() or 1) // torch.cuda.device_count()),
                        args.jpegs or batch * (steps + warmup), scratch)
    batch, steps, warmup = args.batch_size or 16, args.steps or 8, args.warmup or 2
    return NodePlan(torch.device("cpu"), "cpu", 0, "tiny", 64, batch, steps, warmup, args.workers or 1,
                    args.jpegs or 64, scratch)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--only", help="comma-separated item names or prefixes (default: all), e.g. train,resume")
    parser.add_argument("--batch-size", type=int, help="images per step of R50x1 (default: 128; CPU: 16)")
    parser.add_argument("--steps", type=int, help="timed steps per item (default: 30; CPU: 8)")
    parser.add_argument("--warmup", type=int, help="untimed steps per item (default: 10; CPU: 2)")
    parser.add_argument("--workers", type=int, help="loader workers (default: CPU cores per GPU; CPU: 1)")
    parser.add_argument("--jpegs", type=int,
                        help="synthetic JPEGs of the input items (default: one epoch covers the timed and warm-up "
                             "steps, so no epoch turnover is timed; CPU: 64)")
    parser.add_argument("--cpu", action="store_true", help="run the CPU path even where a GPU is present")
    parser.add_argument("--json-out", type=Path, help="also write the result (every item) to this JSON file")


# -- running other kernels with their own defaults ------------------------------------------

def kernel_args(module: Any, argv: list[str]) -> argparse.Namespace:
    """``module``'s arguments as its own parser reads ``argv`` (its defaults for the rest)."""
    parser = argparse.ArgumentParser(add_help=False)
    module.add_arguments(parser)
    return parser.parse_args(argv)


def _train(plan: NodePlan, model: str, precision: str, batch: int, extra: list[str] = ()) -> dict[str, Any]:
    from xferscale import distributed as xdist
    from xferscale.kernels import train_step

    args = kernel_args(train_step, ["--model", model, "--precision", precision, "--batch-size", str(batch),
                                    "--image-size", str(plan.image_size), "--steps", str(plan.steps),
                                    "--warmup", str(plan.warmup), "--distributed", "auto", *extra])
    return train_step.measure(args, xdist.DistEnv(device=plan.device))


def _mfu_text(result: dict[str, Any]) -> str:
    return f"MFU {100 * result['mfu']:.1f} %" if result.get("mfu") is not None else "MFU n/a (device peak unknown)"


def train_item(precision: str) -> Callable[[NodePlan], Item]:
    def run(plan: NodePlan) -> Item:
        if precision == "tf32" and not plan.gpu:
            raise Skip("TF32 is a GPU tensor-core mode; on the CPU it is fp32")
        if precision == "amp_fp16" and not plan.gpu:
            raise Skip("fp16 autocast with a GradScaler is a GPU path; the CPU path runs fp32 and amp_bf16")
        r = _train(plan, plan.model, precision, plan.batch_size)
        if not math.isfinite(r["loss"]):
            raise Failed(f"loss is {r['loss']} after {plan.warmup + plan.steps} steps")
        figure = (f"{r['images_per_s_total']:.1f} img/s, step p50/p90 {r['step_time_ms_p50']:.1f}/"
                  f"{r['step_time_ms_p90']:.1f} ms, peak {r['peak_memory_gb']:.2f} GB, {_mfu_text(r)}, "
                  f"{fields_text(r)}, loss {r['loss']:.3f}")
        return Item(f"train/{precision}", "ok", figure, detail=r)
    return run


def r152x4_item(plan: NodePlan) -> Item:
    if not plan.gpu:
        raise Skip("R152x4 needs about 13 GB of host memory even at batch 1; GPU nodes only")
    try:
        r = _train(plan, "r152x4", "amp_fp16", 16)
    except torch.cuda.OutOfMemoryError as err:
        torch.cuda.empty_cache()
        raise Failed(f"does not fit at 16 images per GPU: {str(err).splitlines()[0]}") from None
    if not math.isfinite(r["loss"]):
        raise Failed(f"loss is {r['loss']}")
    return Item("train/r152x4", "ok", f"fits at 16/GPU (amp_fp16): {r['images_per_s_total']:.1f} img/s, "
                                      f"peak {r['peak_memory_gb']:.1f} GB, {_mfu_text(r)}, {fields_text(r)}",
                detail=r)


def baseline_item(plan: NodePlan) -> Item:
    from xferscale.kernels.baseline import compare
    from xferscale.trainer import SpeedOptions

    if plan.gpu:
        options, precision, note = SpeedOptions(channels_last=True, compile=True), "amp_bf16", ""
    else:  # inductor's CPU build takes longer than the whole CPU path
        options, precision = SpeedOptions(channels_last=True), "fp32"
        note = " (CPU: fp32, no torch.compile)"
    r = compare(plan.model, plan.batch_size, plan.image_size, precision, steps=plan.steps, warmup=plan.warmup,
                repeats=3, device=plan.device, options=options)
    figure = (f"ours/plain {r['ratio_median']:.3f} ({r['ours_images_per_s']:.1f} vs "
              f"{r['baseline_images_per_s']:.1f} img/s){note}")
    return Item("baseline", "ok", figure, detail=r)


def _dali_problem() -> str | None:
    try:
        import nvidia.dali  # noqa: F401
    except ImportError as err:
        return f"DALI is not installed ({err})"
    return None


def input_item(backend: str) -> Callable[[NodePlan], Item]:
    def run(plan: NodePlan) -> Item:
        if importlib.util.find_spec("PIL") is None:
            raise Skip("Pillow is not installed: no JPEGs to feed the loaders")
        if backend == "dali" and (problem := _dali_problem()):
            raise Skip(problem)
        precision = "amp_bf16" if plan.gpu else "fp32"
        fed = _train(plan, plan.model, precision, plan.batch_size,
                     ["--data", "prepared", "--backend", backend, "--data-path", str(_jpegs(plan)),
                      "--workers", str(plan.workers)])
        synthetic = _train(plan, plan.model, precision, plan.batch_size)
        kept = fed["images_per_s_total"] / synthetic["images_per_s_total"]
        how = "mixed decoding" if backend == "dali" and plan.gpu else "CPU decoding"
        figure = (f"{100 * kept:.1f} % of synthetic ({fed['images_per_s_total']:.1f} vs "
                  f"{synthetic['images_per_s_total']:.1f} img/s, {how}, {plan.workers} workers)")
        return Item(f"input/{backend}", "ok", figure,
                    detail={"fraction": kept, "fed": fed, "synthetic": synthetic, "workers": plan.workers})
    return run


def _jpegs(plan: NodePlan) -> Path:
    """The run's prepared set of synthetic photo-like JPEGs, written once for both input items."""
    from xferscale.kernels.loader import synthetic_jpegs

    folder = plan.scratch / "jpegs"
    if not (folder / "dataset.json").is_file():
        started = time.perf_counter()
        synthetic_jpegs(folder, max(plan.jpegs, plan.batch_size), 0)
        print(f"[node] {plan.jpegs} synthetic JPEGs written in {time.perf_counter() - started:.0f} s", flush=True)
    return folder


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _allreduce_worker(rank: int, world: int, port: int, nbytes: int, out: str) -> None:
    from xferscale import distributed as xdist
    from xferscale.kernels.allreduce import bus_bandwidth, time_allreduce

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    env = xdist.init_distributed("ddp")
    try:
        seconds = time_allreduce(env, nbytes, torch.float32, iters=10, warmup=3)
        if rank == 0:
            algbw, busbw = bus_bandwidth(nbytes, seconds, world)
            Path(out).write_text(json.dumps({"bytes": nbytes, "time_ms": seconds * 1e3, "algbw_gbps": algbw,
                                             "busbw_gbps": busbw, "comm_backend": str(torch.distributed.get_backend()),
                                             "world_size": world}))
    finally:
        xdist.shutdown(env)


def allreduce_item(plan: NodePlan) -> Item:
    from xferscale.scaling_model import gradient_bytes

    nbytes = gradient_bytes("r50x1") if plan.gpu else 1 << 20
    if plan.gpu and plan.gpus == 1:
        src = torch.empty(nbytes // 4, device=plan.device)
        dst = torch.empty_like(src)
        for _ in range(3):
            dst.copy_(src)
        torch.cuda.synchronize(plan.device)
        start = time.perf_counter()
        for _ in range(10):
            dst.copy_(src)
        torch.cuda.synchronize(plan.device)
        gbps = 2 * nbytes * 10 / (time.perf_counter() - start) / 1e9  # read + write
        return Item("allreduce", "ok", f"one GPU: no all-reduce; device copy {gbps:.0f} GB/s (read+write) "
                                       f"of {nbytes / 1e6:.0f} MB", detail={"gpus": 1, "copy_gbps": gbps})
    world = plan.gpus if plan.gpu else 2
    with tempfile.TemporaryDirectory(prefix="xferscale-node-") as tmp:
        out = os.path.join(tmp, "allreduce.json")
        torch.multiprocessing.start_processes(_allreduce_worker, args=(world, _free_port(), nbytes, out),
                                              nprocs=world, start_method="spawn")
        r = json.loads(Path(out).read_text())
    what = "NCCL" if plan.gpu else "gloo over 2 CPU processes (the path only)"
    return Item("allreduce", "ok", f"busbw {r['busbw_gbps']:.2f} GB/s at {nbytes / 1e6:.0f} MB over "
                                   f"{world} ranks, {what}", detail=r)


def resume_item(plan: NodePlan) -> Item:
    from xferscale.kernels.resume_check import run_resume_check

    r = run_resume_check(plan.model, plan.device, batch=32 if plan.gpu else 8, image_size=plan.image_size,
                         precision="amp_bf16" if plan.gpu else "fp32")
    if r["identical"]:
        return Item("resume", "ok", f"30 steps, resumed at 15: bit-identical ({r['mode']})", detail=r)
    if r["max_abs_diff"] <= r["tolerance"]:
        return Item("resume", "ok", f"30 steps, resumed at 15: max |Δw| {r['max_abs_diff']:.2e} ≤ "
                                    f"{r['tolerance']:.0e} ({r['mode']}: {r['why']})", detail=r)
    raise Failed(f"resumed weights differ by {r['max_abs_diff']:.2e} > {r['tolerance']:.0e}")


# The items in the order they run: cheap and decisive first.
ITEMS: dict[str, Callable[[NodePlan], Item]] = {
    **{f"train/{p}": train_item(p) for p in PRECISIONS},
    "train/r152x4": r152x4_item,
    "baseline": baseline_item,
    "input/torch": input_item("torch"),
    "input/dali": input_item("dali"),
    "allreduce": allreduce_item,
    "resume": resume_item,
}


def select(only: str | None) -> list[str]:
    if not only:
        return list(ITEMS)
    wanted = [w.strip() for w in only.split(",") if w.strip()]
    chosen = [name for name in ITEMS if any(name == w or name.startswith(w + "/") for w in wanted)]
    unknown = [w for w in wanted if not any(n == w or n.startswith(w + "/") for n in ITEMS)]
    if unknown:
        raise SystemExit(f"xferscale bench node: --only: unknown item(s) {', '.join(unknown)}; "
                         f"items: {', '.join(ITEMS)}")
    return chosen


def run_item(name: str, plan: NodePlan) -> Item:
    started = time.perf_counter()
    try:
        item = ITEMS[name](plan)
    except Skip as why:
        item = Item(name, "skipped", reason=str(why))
    except Failed as what:
        item = Item(name, "failed", reason=str(what))
    except Exception as err:  # a broken path is a finding of the check, not the end of it
        item = Item(name, "failed", reason=f"{type(err).__name__}: {err}",
                    detail={"traceback": traceback.format_exc(limit=8)})
    item.seconds = round(time.perf_counter() - started, 2)
    if plan.gpu:
        torch.cuda.empty_cache()  # the next item's peak memory is its own
    print(f"[node] {name:<14} {item.status:<7} {item.figure or item.reason}  ({item.seconds:.0f} s)", flush=True)
    return item


def table(items: list[Item]) -> str:
    rows = ["| item | status | result | s |", "|---|---|---|---|"]
    rows += [f"| {i.name} | {i.status} | {i.figure or i.reason} | {i.seconds:.0f} |" for i in items]
    return "\n".join(rows)


def run(args: argparse.Namespace) -> dict[str, Any]:
    names = select(args.only)
    with tempfile.TemporaryDirectory(prefix="xferscale-node-") as scratch:
        return _run(names, make_plan(args, Path(scratch)), args)


def _run(names: list[str], plan: NodePlan, args: argparse.Namespace) -> dict[str, Any]:
    print(f"[node] {socket.gethostname()}: {plan.device_name}"
          + (f" x {plan.gpus}" if plan.gpu else " (no GPU: the tiny model on the CPU)")
          + f", torch {torch.__version__}, {os.cpu_count()} CPU cores; {len(names)} items", flush=True)
    started = time.perf_counter()
    items = [run_item(name, plan) for name in names]
    print(table(items))
    projection = energy_projection(items)
    if projection:
        print(projection_table(projection))
    counts = {s: sum(i.status == s for i in items) for s in ("ok", "skipped", "failed")}
    result = {"host": socket.gethostname(), "device": plan.device.type, "device_name": plan.device_name,
              "gpus": plan.gpus, "world_size": 1, "torch": torch.__version__, "model": plan.model,
              "seconds": round(time.perf_counter() - started, 1), **counts,
              "items": {i.name: asdict(i) for i in items},
              "energy_projection": [{**asdict(p), "images": p.images, "kwh": p.kwh} for p in projection]}
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(result, indent=1, default=str) + "\n")
    emit_result("node", {**result, "energy_projection": [{"config": p["config"], "kwh": p["kwh"]}
                                                         for p in result["energy_projection"]],
                         "items": {i.name: {"status": i.status, "figure": i.figure, "reason": i.reason,
                                                      **_headline(i)} for i in items}})
    if counts["failed"]:
        raise SystemExit(1)  # after the table and the JSON line: a failed item fails the command
    return result


def energy_projection(items: list[Item]) -> list[EnergyProjection]:
    """kWh of the shipped pre-training configs from the train items' measured J/image (their
    model and precision); empty when no train item ran."""
    measured: dict[tuple[str, str], tuple[float, str]] = {}
    counters: list[str] = []
    for item in items:
        d = item.detail
        if item.status != "ok" or "energy_counter" not in d:
            continue
        counters.append(d["energy_counter"])
        if d["images_per_joule"]:
            measured[(d["model"], d["precision"])] = (1 / d["images_per_joule"],
                                                      f"{item.name}: {d['energy_counter']} on {d['device_name']}")
    if not counters:
        return []
    # Nothing measured with a counter: every row says why (e.g. "no counter: cpu device ...").
    missing = None if measured else next((c for c in counters if c.startswith(NO_COUNTER)), None)
    return project_paper_runs(measured, missing=missing)


def _headline(item: Item) -> dict[str, Any]:
    """The figures a check compares, flat, for the JSON line."""
    d = item.detail
    keys = ("images_per_s_total", "step_time_ms_p50", "step_time_ms_p90", "peak_memory_gb", "mfu", "loss",
            "ratio_median", "fraction", "busbw_gbps", "copy_gbps", "max_abs_diff", "identical", "watts",
            "images_per_joule", "energy_counter")
    return {k: d[k] for k in keys if k in d and not isinstance(d[k], (dict, list))}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m xferscale.kernels.node", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    main()
