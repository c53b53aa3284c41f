"""``xferscale report {results,proximity,scaling}``: tables and figures.

Each subcommand lives in a module of :mod:`xferscale.report` exposing
``add_arguments(parser)`` and ``run(args) -> int``, imported when the parser is built. A
module that is not installed (``scaling`` comes with the benchmark part of the suite) still
gets its subcommand, which then says what is missing instead of failing at import.
"""
from __future__ import annotations

import argparse
import importlib

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "results": ("xferscale.report.results_report",
                "transfer records -> the paper's Tables 1/2 with ours beside, few-shot curves, bars, power laws"),
    "proximity": ("xferscale.report.proximity",
                  "Fréchet distance between a source's and a target's features, beside the transfer gain"),
    "scaling": ("xferscale.report.scaling",
                "throughput and scaling efficiency from benchmark perflogs, beside the paper's Fig. 4"),
}


def _missing(module: str, err: ImportError):
    def run(args: argparse.Namespace) -> int:
        print(f"xferscale report {args.report}: this subcommand needs module {module}, "
              f"which is not available in this installation ({err}).")
        return 2

    return run


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="report", required=True, metavar="{" + ",".join(SUBCOMMANDS) + "}")
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ImportError as err:
            if err.name != module_name:
                raise  # the module exists but one of its own imports is broken: show that
            # No option is defined here, so take every word (even "--x") as a positional and
            # let run() explain what is missing instead of argparse rejecting the options.
            p = sub.add_parser(name, help=help_text, prefix_chars="\0", add_help=False)
            p.add_argument("rest", nargs="*", help=argparse.SUPPRESS)
            p.set_defaults(func=_missing(module_name, err))
            continue
        p = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(p)
        p.set_defaults(func=module.run)


def run(args: argparse.Namespace) -> int:
    return int(args.func(args) or 0)
