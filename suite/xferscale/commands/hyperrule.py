"""``xferscale hyperrule``: print what the BiT-HyperRule picks, before any GPU hour is spent."""
from __future__ import annotations

import argparse
import json

from xferscale.hyperrule import PAPER_BASE_LR, PAPER_BATCH, hyperrule


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--train-size", type=int, required=True, metavar="N",
                        help="number of training images (the few-shot subset's size for a few-shot run)")
    parser.add_argument("--image-size", type=int, nargs=2, required=True, metavar=("H", "W"),
                        help="original image height and width")
    parser.add_argument("--batch-size", type=int, default=PAPER_BATCH, help="default: the paper's %(default)s")
    parser.add_argument("--base-lr", type=float, default=PAPER_BASE_LR, help="default: the paper's %(default)s")
    parser.add_argument("--schedule-scale", type=float, default=1.0,
                        help="multiply every step boundary (CPU demonstrations only; default %(default)s)")
    parser.add_argument("--lr-table", action="store_true",
                        help="also list the learning rate at each boundary")


def run(args: argparse.Namespace) -> int:
    try:
        rule = hyperrule(args.train_size, tuple(args.image_size), batch_size=args.batch_size,
                         base_lr=args.base_lr, schedule_scale=args.schedule_scale)
    except ValueError as err:
        raise SystemExit(f"xferscale hyperrule: {err}") from err
    out = rule.to_dict()
    if args.lr_table:
        probes = sorted({0, *rule.boundaries, *(b + 1 for b in rule.boundaries)})
        out["lr_at_step"] = {str(step): rule.lr(step) for step in probes}
    print(json.dumps(out, indent=2))
    return 0
