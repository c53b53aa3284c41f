"""``xferscale transfer``: fine-tune a checkpoint on a target, full- and few-shot, over seeds.

With no arguments: the embedded CPU demo. It fine-tunes the checkpoint the default
``xferscale pretrain`` wrote (runs/default/checkpoint.pt, pre-trained on stroke glyphs) on
scikit-learn's digits, 1/5/10-shot and full, 3 seeds, beside two baselines (``--baselines``):
the same network from random init with the same budget, and a linear probe on the frozen
features; it prints one table of the three. To fit in about two minutes on two cores it
trains at 16 px instead of the rule's 128 (``--crop``), shortens the rule's schedule by
``--schedule-scale 0.2`` (500 -> 100 steps) and, to converge in those steps, raises the
base learning rate to 0.03 (``--base-lr``; the paper's is 0.001). All three are printed
and recorded with every result, and none is ever applied to another target unasked. It
also runs torch on one CPU thread (``--cpu-threads``): the model is so small that a second
OpenMP thread per op costs more than it gives, many times over on a shared machine.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

from xferscale.hyperrule import PAPER_BASE_LR
from xferscale.results import ResultError, ResultStore, parse_seeds, parse_shots, shots_sort_key

DEFAULT_CHECKPOINT = "runs/default/checkpoint.pt"
PAPER_SHOTS = "1,5,10,100,500,full"
PAPER_SEEDS = "0-4"
# The embedded demo's settings (target digits): what makes it a two-minute CPU run.
DEMO = {"shots": "1,5,10,full", "seeds": "0-2", "schedule_scale": 0.2, "crop": 16, "cpu_threads": 1,
        "base_lr": 0.03, "baselines": "scratch,linear"}
PAPER = {"shots": PAPER_SHOTS, "seeds": PAPER_SEEDS, "schedule_scale": 1.0, "crop": None, "cpu_threads": None,
         "base_lr": PAPER_BASE_LR, "baselines": "none"}
BASELINES = {"scratch": "the same network from random init, trained with the same budget",
             "linear": "a linear probe (logistic regression) on the frozen pre-trained features"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT,
                        help="pre-training run folder or its checkpoint.pt (default: %(default)s, written by "
                             "`xferscale pretrain`): its best.pt (lowest validation loss) where the run validated, "
                             "else checkpoint.pt; or any other checkpoint file, or BiT's published weights: "
                             "BiT-S/BiT-M .npz, timm's .safetensors/.pth (`xferscale weights list`)")
    parser.add_argument("--last-checkpoint", action="store_true",
                        help="start from the run's checkpoint.pt (its last state) even where it kept a best.pt")
    parser.add_argument("--target", default="digits",
                        help="target name: 'digits' (built in), or a prepared dataset's name (cifar10, covidx, ...)")
    parser.add_argument("--data", help="prepared dataset folder of the target (default: data/prepared/TARGET)")
    parser.add_argument("--source", help="source name in the records (default: the checkpoint's run name "
                                         "without its model prefix, e.g. r50x1_in21k -> in21k)")
    parser.add_argument("--shots", help=f"examples per class and/or 'full' (default: {PAPER_SHOTS}; "
                                        f"digits demo: {DEMO['shots']})")
    parser.add_argument("--seeds", help=f"seeds, e.g. 0-4 or 0,3 (default: {PAPER_SEEDS}; digits demo: {DEMO['seeds']})")
    parser.add_argument("--results", type=Path, default=Path("results/transfer"),
                        help="results folder: one JSON record per finished run (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=128, help="default: the paper's %(default)s")
    parser.add_argument("--base-lr", type=float,
                        help=f"default: the paper's {PAPER_BASE_LR}; digits demo {DEMO['base_lr']}")
    parser.add_argument("--baselines",
                        help="comma-separated baselines run beside fine-tuning, or 'none': "
                             + "; ".join(f"'{k}': {v}" for k, v in BASELINES.items())
                             + f" (default: none; digits demo: {DEMO['baselines']})")
    parser.add_argument("--schedule-scale", type=float,
                        help="multiply the rule's step boundaries (CPU demonstrations; default 1, digits demo 0.2)")
    parser.add_argument("--crop", type=int,
                        help="train/test crop size instead of the rule's (precrop keeps the 160:128 ratio; "
                             "default: the rule's, digits demo 16)")
    parser.add_argument("--image-size", type=int, nargs=2, metavar=("H", "W"),
                        help="original image size of a prepared target the suite does not know")
    parser.add_argument("--cpu-threads", type=int,
                        help="torch intra-op threads on a CPU (default: torch's; digits demo 1)")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "tf32", "amp_fp16", "amp_bf16"])
    parser.add_argument("--no-mixup", action="store_true", help="turn MixUp off even where the rule uses it")
    parser.add_argument("--backend", default="torch", choices=["torch", "dali"], help="prepared-data loader")
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1),
                        help="prepared-data loader workers (default: 4, at most one per CPU core)")
    parser.add_argument("--checkpoint-every", type=int, default=100, help="steps between resume states")
    parser.add_argument("--allow-overlap", action="store_true",
                        help="run even where the target's test images are in the checkpoint's pre-training set "
                             "(recorded with each result as overlap); by default such a run stops")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace records made under another configuration instead of stopping")
    parser.add_argument("--no-report", action="store_true", help="do not write/print the report at the end")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def _rank_and_device() -> tuple[int, int, torch.device]:
    from xferscale.distributed import launch_env

    info = launch_env()
    if torch.cuda.is_available():
        device = torch.device("cuda", info["local_rank"] % torch.cuda.device_count())
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    return info["rank"], info["world_size"], device


def _build_target(args: argparse.Namespace):
    from xferscale.transfer.targets import PreparedTarget, digits_target

    if args.target == "digits" and not args.data:
        return digits_target()
    path = args.data or f"data/prepared/{args.target}"
    return PreparedTarget(args.target, path, backend=args.backend, workers=args.workers,
                          image_size=tuple(args.image_size) if args.image_size else None)


def run(args: argparse.Namespace) -> int:
    from xferscale.checkpoint import CheckpointWriteError
    from xferscale.preemption import write_stop_marker
    from xferscale.report.results_report import write_results_report
    from xferscale.transfer.finetune import FineTuneError, FineTuneSettings, Preempted
    from xferscale.transfer.grid import run_grid
    from xferscale.transfer.pretrained import CheckpointError, describe_choice, load_pretrained, resolve_checkpoint
    from xferscale.transfer.targets import TargetError

    defaults = DEMO if args.target == "digits" and not args.data else PAPER
    shots_text = args.shots or defaults["shots"]
    seeds_text = args.seeds or defaults["seeds"]
    scale = args.schedule_scale if args.schedule_scale is not None else defaults["schedule_scale"]
    crop = args.crop if args.crop is not None else defaults["crop"]
    base_lr = args.base_lr if args.base_lr is not None else defaults["base_lr"]

    if args.checkpoint_every <= 0:
        print(f"xferscale transfer: --checkpoint-every must be a positive number of steps, got {args.checkpoint_every}",
              file=sys.stderr)
        return 2
    if problem := _unwritable(args.results):
        print(f"xferscale transfer: cannot write results under {args.results}: {problem}", file=sys.stderr)
        return 2
    checkpoint = resolve_checkpoint(args.checkpoint, last=args.last_checkpoint)
    if not checkpoint.is_file():
        hint = ("make it with `xferscale pretrain` (its default run writes it there)"
                if args.checkpoint == DEFAULT_CHECKPOINT else "check the path, or pre-train with `xferscale pretrain`")
        print(f"xferscale transfer: no checkpoint at {checkpoint}; {hint}", file=sys.stderr)
        return 2
    try:
        shots, seeds = parse_shots(shots_text), parse_seeds(seeds_text)
        baselines = parse_baselines(args.baselines or defaults["baselines"])
        pretrained = load_pretrained(checkpoint, args.source)
        target = _build_target(args)
        settings = FineTuneSettings(batch_size=args.batch_size, base_lr=base_lr, schedule_scale=scale,
                                    crop=crop, mixup=not args.no_mixup, precision=args.precision,
                                    checkpoint_every=args.checkpoint_every, progress=not args.no_progress)
        rank, world, device = _rank_and_device()
        threads = args.cpu_threads if args.cpu_threads is not None else defaults["cpu_threads"]
        if device.type == "cpu" and threads:
            torch.set_num_threads(threads)
        if rank == 0:
            full_rule = settings.rule_for(target.train_size("full", 0), target.spec)
            paper_rule = FineTuneSettings().rule_for(full_rule.train_size, target.spec)
            print(f"transfer {pretrained.model_name} / {pretrained.source} -> {target.spec.name} "
                  f"[{target.spec.metric}], shots {shots_text}, seeds {seeds_text}, results in {args.results}/")
            print(f"checkpoint: {describe_choice(pretrained)}")
            if scale != 1.0 or crop is not None or base_lr != PAPER_BASE_LR:
                print(f"NOTE: not the paper's scale: schedule x{scale} (--schedule-scale), crop "
                      f"{full_rule.crop} px (--crop), base LR {base_lr} (--base-lr); full-shot runs train "
                      f"{full_rule.steps} steps where the BiT-HyperRule gives {paper_rule.steps} steps at "
                      f"{paper_rule.crop} px and LR {PAPER_BASE_LR}. Recorded with each result.")
            for name in baselines:
                print(f"baseline {name}: {BASELINES[name]}")
        overlap = _overlap(target, pretrained, args.allow_overlap, rank)
        arms = _arms(pretrained, baselines)
        summary = None
        for start, method in arms:
            ran = run_grid(start, target, shots, seeds, settings, ResultStore(args.results), device,
                           rank=rank, world_size=world, overwrite=args.overwrite, method=method,
                           extra_config={"launcher_world_size": world, "pid": os.getpid(), "overlap": overlap})
            summary = ran if summary is None else summary.merged(ran)
    except Preempted as err:  # the state is saved; finished runs already have their records
        print(f"xferscale transfer: {err}", file=sys.stderr)
        write_stop_marker(str(err))
        return 0
    except (ResultError, CheckpointError, TargetError, FineTuneError, CheckpointWriteError, ValueError) as err:
        print(f"xferscale transfer: {err}", file=sys.stderr)
        return 2
    if rank == 0:
        print(f"{len(summary.ran)} run(s) done, {len(summary.skipped)} already finished"
              + (f", {summary.elsewhere} on other ranks" if summary.elsewhere else ""))
        if not args.no_report:
            sources = [method.source_name(start.source) for start, method in arms]
            records = [r for r in ResultStore(args.results).records()
                       if r.source in sources and (r.model, r.target) == (pretrained.model_name, target.spec.name)]
            report = write_results_report(records, args.results / "report", seeds, with_paper_fits=False)
            print(grid_table(records, seeds, sources))
            print(f"report: {len(report.files)} files in {report.out_dir}/ (full-shot tables beside the paper, "
                  f"figures, cells.csv); for all records: `xferscale report results {args.results}`")
    return 0


def _overlap(target, pretrained, allow: bool, rank: int) -> dict | str:
    """The leakage check of a prepared target against the checkpoint's pre-training set, as its
    records carry it; overlap raises (one line) unless ``allow``. In-memory targets (the digits
    demo) have no manifest: recorded as unchecked, without a note."""
    from xferscale.transfer.leakage import check_overlap
    from xferscale.transfer.targets import PreparedTarget

    if not isinstance(target, PreparedTarget):
        return "unchecked: an in-memory target (no manifest)"
    found = check_overlap(target.path, pretrained.train_data, allow)
    if rank == 0 and found.count is None:
        print(f"NOTE: test/train overlap not checked: {found.unchecked}")
    elif rank == 0 and found.count:
        print(f"WARNING: {found.count} test image(s) of {target.path} are in the pre-training set "
              f"(e.g. {' = '.join(found.example)}); running as --allow-overlap asks, recorded with each result")
    return found.record(allow)


def _unwritable(folder: Path) -> str | None:
    """Why records cannot be written under ``folder`` (checked before any run starts), or None."""
    import tempfile

    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".probe-"):
            pass
    except OSError as err:
        return err.strerror or str(err)
    return None


def parse_baselines(text: str) -> list[str]:
    """``"scratch,linear"`` -> the names, ``"none"`` -> []."""
    names = [] if text.strip().lower() == "none" else [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in BASELINES]
    if unknown:
        raise ValueError(f"--baselines: unknown baseline(s) {', '.join(unknown)}; choose from "
                         f"{', '.join(BASELINES)} or 'none'")
    return list(dict.fromkeys(names))


def _arms(pretrained, baselines: list[str]) -> list:
    """(starting weights, method) of each grid: fine-tuning first, then each baseline."""
    from xferscale.transfer.methods import FINETUNE, LINEAR_PROBE
    from xferscale.transfer.pretrained import Pretrained

    arms = [(pretrained, FINETUNE)]
    if "scratch" in baselines:
        arms.append((Pretrained.random_init(pretrained.model_name), FINETUNE))
    if "linear" in baselines:
        arms.append((pretrained, LINEAR_PROBE))
    return arms


def grid_table(records, seeds, sources: list[str]) -> str:
    """The grid as a Markdown table: a row per shots value, a column per source (fine-tuned,
    then the baselines), mean ± std [seeds] of each (model, target)."""
    from xferscale.report.aggregate import aggregate
    from xferscale.report.tables import cell_text

    cells = aggregate(records)
    pairs = sorted({(model, target) for _, model, target, _ in cells})
    lines = []
    for model, target in pairs:
        shots = sorted({k[3] for k in cells if k[1:3] == (model, target)}, key=shots_sort_key)
        metric = next(c.metric for k, c in cells.items() if k[1:3] == (model, target))
        lines += [f"| {model} -> {target} [{metric}]: shots | " + " | ".join(sources) + " |",
                  "|---" * (len(sources) + 1) + "|"]
        for s in shots:
            row = [cell_text(cells[(src, model, target, s)], len(seeds)) if (src, model, target, s) in cells else "–"
                   for src in sources]
            lines.append(f"| {s} | " + " | ".join(row) + " |")
    return "\n".join(lines)

