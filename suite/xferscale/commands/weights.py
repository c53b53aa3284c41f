"""``xferscale weights``: the published BiT checkpoints, and a check of a downloaded one.

    xferscale weights list              file names, models, sources and the download commands
    xferscale weights verify PATH       which model and head it holds, whether timm loads it, SHA-256

JUWELS compute nodes have no internet: download on a login node (to ``$SCRATCH``), then
``xferscale transfer --checkpoint $SCRATCH/bit/BiT-M-R50x1.npz ...``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from xferscale.checkpoint import file_digest
from xferscale.transfer.public_weights import KNOWN, WeightsError, load_public_weights, source_of


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    sub.add_parser("list", help="the known public checkpoints and how to download them")
    verify = sub.add_parser("verify", help="check a downloaded weight file")
    verify.add_argument("path", type=Path)


def _list() -> int:
    print(f"{'name':<20} {'model':<7} {'source':<7} {'file':<44} download (on a login node)")
    for entry in KNOWN:
        print(f"{entry.name:<20} {entry.model:<7} {entry.source:<7} {entry.file:<44} {entry.download}")
    print("Sizes and SHA-256 are not listed: they were not measured (the files could not be downloaded "
          "where this list was made). `xferscale weights verify FILE` prints a file's SHA-256 and checks "
          "that timm loads it as the model its name says.")
    return 0


def _verify(path: Path) -> int:
    info, model = load_public_weights(path)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    print(f"{path}: {info.model} ({info.layout} layout, {params:.2f} M parameters), head of {info.num_classes} "
          f"classes, source {source_of(path, info)}; loaded by timm")
    expected = next((entry for entry in KNOWN if entry.file == path.name), None)
    if expected is not None and expected.model != info.model:
        raise WeightsError(f"{path}: named as {expected.name} ({expected.model}) but holds {info.model}")
    print(f"sha256 {file_digest(path)}  {path.name}")
    return 0


def run(args: argparse.Namespace) -> int:
    try:
        return _list() if args.action == "list" else _verify(args.path)
    except WeightsError as err:
        print(f"xferscale weights: {err}", file=sys.stderr)
        return 2
