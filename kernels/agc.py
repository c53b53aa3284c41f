"""AGC step alone (``xferscale bench agc``): batched kernels against timm's per-parameter loop.

Both clip the same real gradients of a model (a forward and backward on random input), so
the figure isolates what the suite's batched AGC saves inside every training step.
"""
from __future__ import annotations

import argparse
import time
from typing import Any

import torch
from torch import nn

from xferscale.kernels.output import emit_result
from xferscale.models import MODEL_NAMES, build_model, head_of
from xferscale.optim import adaptive_clip_grad_, agc_parameters


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", choices=MODEL_NAMES, default="r50x1")
    parser.add_argument("--repeats", type=int, default=20, help="timed repeats of each; the best is kept")


def _gradients(model_name: str) -> list[nn.Parameter]:
    torch.manual_seed(0)
    model = build_model(model_name, 1000)
    nn.init.normal_(head_of(model).weight, std=0.01)  # a zero head would leave the body's gradients zero
    model(torch.randn(2, 3, 64, 64)).logsumexp(1).sum().backward()
    return agc_parameters(model)


def _best_time(params: list[nn.Parameter], grads: list[torch.Tensor], foreach: bool, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        for p, g in zip(params, grads):
            p.grad.copy_(g)
        start = time.perf_counter()
        adaptive_clip_grad_(params, 0.01, 1e-3, foreach=foreach)
        best = min(best, time.perf_counter() - start)
    return best


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.repeats < 1:
        raise SystemExit("xferscale bench agc: --repeats must be >= 1")
    params = _gradients(args.model)
    grads = [p.grad.clone() for p in params]
    per_param = _best_time(params, grads, False, args.repeats)
    batched = _best_time(params, grads, True, args.repeats)
    result = {"model": args.model, "tensors": len(params), "parameters": sum(p.numel() for p in params),
              "threads": torch.get_num_threads(), "per_parameter_ms": per_param * 1e3,
              "batched_ms": batched * 1e3, "speedup": per_param / batched}
    emit_result("agc", result, [
        ("model", f"{args.model}: {len(params)} clipped tensors, {result['parameters'] / 1e6:.1f} M parameters"),
        ("timm per-parameter ms (best)", result["per_parameter_ms"]),
        ("batched ms (best)", result["batched_ms"]),
        ("speedup", f"{result['speedup']:.2f}x"),
    ])
    return result
