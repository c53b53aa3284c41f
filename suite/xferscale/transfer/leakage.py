"""Does a target's test split hold images its checkpoint was pre-trained on?

A prepared dataset's manifests record the SHA-256 of every stored image
(:mod:`xferscale.data.manifest`); a pre-training checkpoint records the prepared folder and
split it trained on (``train_data``). Before a transfer run the target's test digests (a
small set) are compared with the source's training manifest, streamed row by row: a 14 M-row
ImageNet-21k manifest costs one pass over its CSV, never its digests in memory. Nothing is
cached: each check reads the manifests as they are now.

The outcome goes into every result record as ``overlap``: ``{"count": 0}``, ``{"count": n,
"allowed": true}`` (``--allow-overlap``), or ``"unchecked: <reason>"`` where the check cannot
be made: weights that record no training data (BiT's published weights, older checkpoints),
a synthetic or stroke-glyph source, a folder that is gone, manifests without digests.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xferscale.data.manifest import iter_digests, load_dataset_info
from xferscale.data.records import PrepareError

TARGET_SPLIT = "test"


class LeakageError(ValueError):
    """Target test images are in the checkpoint's pre-training set; the message is one line."""


@dataclass(frozen=True)
class Overlap:
    """The outcome of the check: ``count`` target test images found in the source's training
    set (None: not checked, ``unchecked`` says why), with one example pair of keys."""

    count: int | None
    unchecked: str | None = None
    example: tuple[str, str] | None = None  # (target test key, source training key)

    def record(self, allowed: bool) -> dict[str, Any] | str:
        """What a result record carries."""
        if self.count is None:
            return f"unchecked: {self.unchecked}"
        return {"count": self.count, "allowed": True} if self.count and allowed else {"count": self.count}


def _test_digests(target: Path) -> dict[str, list[str]] | str:
    """digest -> the keys of the target's test split with that image, or why there are none."""
    try:
        info = load_dataset_info(target)
        path = target / info.split(TARGET_SPLIT).manifest
        digests: dict[str, list[str]] = {}
        for key, digest in iter_digests(path):
            if digest is None:
                return f"target {path} records no image digests (re-run `xferscale prepare` to add them)"
            digests.setdefault(digest, []).append(key)
    except PrepareError as err:
        return f"target: {err}"
    return digests


def find_overlap(target: str | Path, train_data: dict[str, Any] | None) -> Overlap:
    """Compare the prepared ``target``'s test split with the checkpoint's ``train_data``."""
    if not train_data:
        return Overlap(None, "the checkpoint records no pre-training data (published weights or an older run)")
    if train_data.get("source") != "prepared" or not train_data.get("path"):
        return Overlap(None, f"pre-trained on {train_data.get('source')} data, not a prepared folder")
    source = Path(train_data["path"])
    split = train_data.get("split") or "train"
    tests = _test_digests(Path(target))
    if isinstance(tests, str):
        return Overlap(None, tests)
    try:
        path = source / load_dataset_info(source).split(split).manifest
        example, seen = None, set()
        for key, digest in iter_digests(path):
            if digest is None:
                return Overlap(None, f"source {path} records no image digests (re-run `xferscale prepare` to add them)")
            if digest in tests and digest not in seen:
                seen.add(digest)
                example = example or (tests[digest][0], key)
    except PrepareError as err:
        return Overlap(None, f"source: {err}")
    return Overlap(sum(len(tests[d]) for d in seen), example=example)  # test rows, an image listed twice twice


def check_overlap(target: str | Path, train_data: dict[str, Any] | None, allow: bool) -> Overlap:
    """:func:`find_overlap`; overlap stops the run (:class:`LeakageError`) unless ``allow``."""
    found = find_overlap(target, train_data)
    if found.count and not allow:
        target_key, source_key = found.example
        raise LeakageError(
            f"{found.count} test image(s) of {target} are in the pre-training set {train_data['path']} "
            f"({train_data.get('split') or 'train'} split), e.g. {target_key} = {source_key}: the scores would "
            f"measure memory, not transfer; pass --allow-overlap to run anyway (recorded with each result)")
    return found
