"""``xferscale bench train|loader|allreduce|agc|prepare|node``: run one benchmark kernel.

Each kernel is a module of :mod:`xferscale.kernels` exposing ``add_arguments(parser)`` and
``run(args) -> dict``; it prints human lines and one JSON result line (see
:mod:`xferscale.kernels.output`). The loader kernel comes with the data pipelines; if it
is not installed, ``bench loader`` says so instead of failing at import.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from types import ModuleType

KERNELS: dict[str, tuple[str, str]] = {
    "train": ("xferscale.kernels.train_step", "training-step throughput (images/s), step-time percentiles, memory, MFU"),
    "loader": ("xferscale.kernels.loader", "data-loader throughput (images/s) of a prepared dataset or synthetic JPEGs"),
    "allreduce": ("xferscale.kernels.allreduce", "all-reduce bus bandwidth over a sweep of message sizes"),
    "agc": ("xferscale.kernels.agc", "adaptive gradient clipping alone: batched kernels vs timm's per-parameter loop"),
    "prepare": ("xferscale.kernels.prepare", "xferscale prepare's writer (read, full decode, pack): images/s and MB/s "
                                             "for 1..N workers"),
    "node": ("xferscale.kernels.node", "validate a node: train step at every precision, R152x4 fit, ours vs the "
                                       "plain loop, input pipelines, all-reduce, checkpoint/resume; one table"),
}


def _import_kernel(module_name: str) -> ModuleType | ImportError:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        # Only a missing kernel module is tolerated; a kernel that fails to import for
        # another reason (a bug, a missing dependency) must fail loudly.
        if err.name != module_name:
            raise
        return err


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="kernel", metavar="KERNEL", required=True)
    for name, (module_name, help_text) in KERNELS.items():
        module = _import_kernel(module_name)
        if isinstance(module, ImportError):
            # No option prefix: every argument (even "--x") lands in `rest`, and run() explains.
            kernel_parser = sub.add_parser(name, help=help_text, prefix_chars="\0", add_help=False)
            kernel_parser.add_argument("rest", nargs="*", help=argparse.SUPPRESS)
            kernel_parser.set_defaults(_missing=f"{module_name} is not installed in this build of xferscale")
        else:
            kernel_parser = sub.add_parser(name, help=help_text, description=help_text)
            module.add_arguments(kernel_parser)
            kernel_parser.set_defaults(_module=module_name)


def run(args: argparse.Namespace) -> int:
    missing = getattr(args, "_missing", None)
    if missing:
        print(f"xferscale bench {args.kernel}: {missing}", file=sys.stderr)
        return 2
    module = importlib.import_module(args._module)
    module.run(args)
    return 0
