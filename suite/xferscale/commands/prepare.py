"""``xferscale prepare``: convert a raw dataset into shards, or write few-shot subsets.

    xferscale prepare DATASET --raw DIR --out DIR [--shard-size N] [--no-progress] [converter options]
    xferscale prepare DATASET --raw SOURCE=DIR --raw SOURCE=DIR ... --out DIR
    srun -n K xferscale prepare DATASET --raw DIR --out DIR      (each task writes its slice)
    xferscale prepare DATASET --merge --out DIR                  (finish a sliced run by hand)
    xferscale prepare fewshot --dataset DIR --shots 1,5,10 --seeds 0-4
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from xferscale.data.converters import ALIASES, all_options, discover, resolve_raw
from xferscale.data.fewshot import fewshot_keys, write_subset
from xferscale.data.manifest import load_dataset_info
from xferscale.data.merge import PARTS, merge_dataset, merge_lock, read_plan
from xferscale.data.records import PrepareError, Reconciliation
from xferscale.data.slices import parse_slice
from xferscale.data.writer import default_workers, write_dataset

FEWSHOT = "fewshot"


def _int_list(text: str) -> list[int]:
    """``"1,5,10"`` -> [1, 5, 10]; ``"0-4"`` -> [0, 1, 2, 3, 4]; both forms may be mixed."""
    values: list[int] = []
    try:
        for part in text.split(","):
            first, sep, last = part.partition("-")
            values.extend(range(int(first), int(last) + 1) if sep else [int(first)])
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected numbers like 1,5,10 or a range like 0-4") from None
    return values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", metavar="DATASET", help=f"converter name (see below), or {FEWSHOT!r}")
    parser.add_argument("--raw", action="append", default=[], metavar="DIR|SOURCE=DIR",
                        help="raw dataset folder; SOURCE=DIR once per source for combined datasets")
    parser.add_argument("--out", type=Path, help="output folder of the prepared dataset")
    parser.add_argument("--shard-size", type=int, default=1000, help="samples per tar shard (default 1000)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--workers", type=int, default=default_workers(),
                        help="processes that read and fully decode the images (default: the cores available, "
                             "%(default)s here); the output is the same for any number")
    parser.add_argument("--slice", default="auto", metavar="auto|all|I/K",
                        help="the shards this task writes: I/K is every K-th shard from the I-th; auto (default) "
                             "takes I and K from srun (SLURM_PROCID of SLURM_STEP_NUM_TASKS) and job arrays, all "
                             "otherwise. The task that finishes last writes the manifests and dataset.json; "
                             "re-running a killed task redoes only its unfinished shards")
    parser.add_argument("--merge", action="store_true",
                        help="only write the manifests, report.json and dataset.json of a sliced run in --out "
                             "whose shards are all written")
    converters = discover()
    few = parser.add_argument_group(f"{FEWSHOT} subsets")
    few.add_argument("--dataset", dest="prepared", type=Path, metavar="DIR", help="prepared dataset folder")
    few.add_argument("--shots", type=_int_list, help="examples per class, e.g. 1,5,10")
    few.add_argument("--seeds", type=_int_list, default=[0], help="seeds, e.g. 0-4 (default 0)")
    # Converter options; --split is shared with the few-shot subsets (the split to draw from).
    flags = all_options(converters.values())
    flags.setdefault("split", [])
    group = parser.add_argument_group("converter options (and --split of fewshot: the split to draw from, default train)")
    for flag, owners in sorted(flags.items()):
        helps = "; ".join(f"{c.name}: {o.help} (choices {', '.join(o.choices)}; default {o.default})"
                          for c in owners for o in c.options if o.flag == flag)
        group.add_argument(f"--{flag}", dest=f"option_{flag}", default=None, help=helps or None)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = "datasets:\n" + "\n".join(
        f"  {c.name:<16} {c.description}" + (f" (sources: {', '.join(c.sources)})" if c.sources else "")
        + "".join(f" [--{o.flag} {'|'.join(o.choices)}]" for o in c.options)
        for c in converters.values()
    )


def _option_values(args: argparse.Namespace) -> dict[str, str | None]:
    prefix = "option_"
    return {k[len(prefix):]: v for k, v in vars(args).items() if k.startswith(prefix)}


def _convert(args: argparse.Namespace) -> int:
    if args.out is None:
        raise PrepareError("--out DIR is required")
    if args.merge:  # needs no converter: the run's plan says what it prepares
        return _merge(args)
    converters = discover()
    if args.dataset not in converters:
        raise PrepareError(f"unknown dataset {args.dataset!r}; available: {', '.join(sorted(converters)) or 'none'}")
    task = parse_slice(args.slice)
    converter = converters[args.dataset]
    raw = resolve_raw(converter, args.raw)
    log = Reconciliation()
    spec, samples = converter.convert(raw, log, _option_values(args))
    marker = write_dataset(spec, samples, args.out, log, shard_size=args.shard_size, progress=not args.no_progress,
                           workers=args.workers, task=task)
    if marker is not None:
        print(f"wrote {marker.parent}")
    return 0


def _merge(args: argparse.Namespace) -> int:
    if not args.out.is_dir():
        raise PrepareError(f"--out {args.out}: no such folder")
    with merge_lock(args.out):
        plan = read_plan(args.out)
        if plan is None:
            raise PrepareError(f"{args.out}: no sliced prepare run to merge (no {PARTS}/plan.json)")
        if plan.spec.name != ALIASES.get(args.dataset, args.dataset):
            raise PrepareError(f"{args.out}: the run in progress prepares {plan.spec.name!r}, not {args.dataset!r}")
        marker = merge_dataset(args.out, plan)
    print(f"wrote {marker.parent}")
    return 0


def _fewshot(args: argparse.Namespace) -> int:
    if args.prepared is None or not args.shots:
        raise PrepareError(f"prepare {FEWSHOT} needs --dataset DIR and --shots K[,K...]")
    split = args.option_split or "train"
    info = load_dataset_info(args.prepared)
    rows = info.manifest(split)
    for k in args.shots:
        for seed in args.seeds:
            try:
                keys = fewshot_keys(rows, k, seed, task=info.spec.task, classes=info.spec.classes)
            except ValueError as err:
                raise PrepareError(f"{info.spec.name} {split}, {k}-shot: {err}") from err
            print(f"{write_subset(info.root, k, seed, keys)}: {len(keys)} keys")
    return 0


def run(args: argparse.Namespace) -> int:
    try:
        return _fewshot(args) if args.dataset == FEWSHOT else _convert(args)
    except PrepareError as err:
        print(f"xferscale prepare: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        folder = args.prepared if args.dataset == FEWSHOT else args.out
        if err.filename is not None or err.errno is None or folder is None:
            raise
        # a failed write names no file (a full disk): the folder being written does
        raise OSError(err.errno, err.strerror, str(folder)) from err
