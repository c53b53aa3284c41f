"""``xferscale slurm``: write a ready sbatch script that runs a command in the container.

    xferscale slurm pretrain --nodes 16 --account myproj -- --config r50x1_in21k train.precision=tf32
    xferscale slurm bench --nodes 2 --partition develbooster --dry-run -- train --model r50x1

Everything after ``--`` goes to ``xferscale COMMAND`` unchanged.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from xferscale.cluster import SITES, SiteError
from xferscale.sbatch import COMMANDS, RESUME_FLAGS, JobSpec, render_sbatch


def _add_job_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--nodes", type=int, required=True, help="number of nodes (4 GPUs each)")
    parser.add_argument("--partition", default="booster", help="SLURM partition (default: booster)")
    parser.add_argument("--time", help="time limit, HH:MM:SS or D-HH:MM:SS (default: the partition's limit)")
    parser.add_argument("--account", help="budget to charge (default: SBATCH_ACCOUNT)")
    parser.add_argument("--image", default="xferscale.sif", help="container image (default: xferscale.sif)")
    parser.add_argument("--bind", action="append", default=[], metavar="SRC[:DST]",
                        help="extra apptainer bind mount, e.g. /p/scratch (repeatable)")
    parser.add_argument("--job-name", help="SLURM job name (default: xferscale-COMMAND)")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                        help="extra environment for every rank, e.g. NCCL_DEBUG=INFO (repeatable)")
    parser.add_argument("--site", default="juwels_booster", choices=sorted(SITES),
                        help="launch settings to use (default: juwels_booster)")
    requeue = parser.add_mutually_exclusive_group()
    requeue.add_argument("--requeue", dest="requeue", action="store_true", default=None,
                         help=f"checkpoint and requeue before the time limit (default for: {', '.join(RESUME_FLAGS)})")
    requeue.add_argument("--no-requeue", dest="requeue", action="store_false")
    parser.add_argument("--max-restarts", type=int, default=10, help="requeues allowed (default: 10)")
    parser.add_argument("--signal-lead", type=int, default=300, metavar="SECONDS",
                        help="checkpoint this long before the time limit (default: 300)")
    parser.add_argument("-o", "--output", type=Path,
                        help="script to write (default: xferscale-COMMAND-<N>n.sbatch)")
    parser.add_argument("--dry-run", action="store_true", help="print the script instead of writing it")
    parser.add_argument("args", nargs="*", metavar="-- ARGS",
                        help="arguments for `xferscale COMMAND`, after --")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="job_command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        _add_job_arguments(sub.add_parser(name, help=f"a job running `xferscale {name}`"))


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.chmod(tmp, 0o755)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _env_pairs(items: list[str]) -> dict[str, str]:
    pairs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SiteError(f"--env {item!r}: expected KEY=VALUE")
        pairs[key] = value
    return pairs


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except SiteError as err:
        print(f"xferscale slurm {args.job_command}: error: {err}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    job = JobSpec(
        command=args.job_command,
        nodes=args.nodes,
        partition=args.partition,
        time=args.time,
        account=args.account,
        image=args.image,
        args=tuple(args.args),
        binds=tuple(args.bind),
        job_name=args.job_name,
        requeue=args.requeue,
        max_restarts=args.max_restarts,
        signal_lead_s=args.signal_lead,
        extra_env=_env_pairs(args.env),
    )
    script = render_sbatch(SITES[args.site], job)
    if args.dry_run:
        sys.stdout.write(script)
        return 0
    path = args.output or Path(f"xferscale-{job.command}-{job.nodes}n.sbatch")
    _write_atomic(path, script)
    print(f"wrote {path}; submit with: sbatch {path}")
    return 0
