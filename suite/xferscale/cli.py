"""The ``xferscale`` command: one entry point, one module per subcommand.

Subcommand modules live in :mod:`xferscale.commands` and expose
``add_arguments(parser)`` and ``run(args) -> int``; only the module of the subcommand
being run is imported, so ``xferscale --help`` stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from xferscale import __version__

COMMANDS: dict[str, str] = {
    "pretrain": "pre-train a BiT ResNet on a source dataset (default: a 1-minute CPU run)",
    "transfer": "fine-tune a checkpoint on a target with the BiT-HyperRule, full- and few-shot",
    "prepare": "convert a dataset from its public raw layout into manifests and shards",
    "bench": "benchmark kernels: train-step, loader and all-reduce throughput",
    "report": "tables and figures: transfer results beside the paper, scaling from perflogs",
    "hyperrule": "print what the BiT-HyperRule picks for a target, as JSON",
    "slurm": "write a ready sbatch script for JUWELS Booster",
    "weights": "the published BiT weights: where to download them, and a check of a downloaded file",
}


# Commands that stop cleanly on SIGTERM/SIGUSR1 (state saved, exit 0) and continue when re-run.
STOPPABLE = ("pretrain", "transfer")


def _top_parser() -> argparse.ArgumentParser:
    lines = "\n".join(f"  {name:<10} {text}" for name, text in COMMANDS.items())
    return argparse.ArgumentParser(
        prog="xferscale",
        description="Large-scale pre-training and transfer, reproduced and benchmarked.",
        epilog=f"commands:\n{lines}\n\nRun `xferscale COMMAND --help` for a command's options.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    top = _top_parser()
    top.add_argument("--version", action="version", version=f"xferscale {__version__}")
    top.add_argument("command", choices=sorted(COMMANDS), metavar="COMMAND")
    if not argv or argv[0] not in COMMANDS:
        top.parse_args(argv)  # prints help / version / the error, and exits
        return 2
    name, rest = argv[0], argv[1:]
    if name not in STOPPABLE:
        return _run(name, rest)
    from xferscale.preemption import StopRequest

    # From before the command's first import to its last line: a stop signal at any moment
    # is noted and acted on where the state can be saved (exit 0), never a kill.
    with StopRequest():
        return _run(name, rest)


def _run(name: str, rest: list[str]) -> int:
    module = importlib.import_module(f"xferscale.commands.{name}")
    parser = argparse.ArgumentParser(prog=f"xferscale {name}", description=COMMANDS[name])
    module.add_arguments(parser)
    args = parser.parse_args(rest)
    try:
        return int(module.run(args) or 0)
    except OSError as err:  # a full disk, an unwritable or missing folder: the file and the cause, not a traceback
        print(f"xferscale {name}: error: {os_error_line(err)}", file=sys.stderr)
        return 1


def os_error_line(err: OSError) -> str:
    """``FILE: cause`` of an OSError, from the first error of its chain that names a file.

    A failed write is often followed by a failed close of the same cause (a full disk fails
    both): the first one names what could not be written; the cleanup's error adds nothing.
    """
    chain: list[BaseException] = []
    current: BaseException | None = err
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    named = [e for e in reversed(chain)
             if isinstance(e, OSError) and e.errno == err.errno and e.filename is not None]
    first = named[0] if named else err
    cause = first.strerror or str(first) or type(first).__name__
    if first.filename is None:
        return cause
    target = f" -> {first.filename2}" if first.filename2 is not None else ""
    return f"{first.filename}{target}: {cause}"


if __name__ == "__main__":
    sys.exit(main())
