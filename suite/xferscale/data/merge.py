"""The record of a prepare run in progress, and the merge that completes it.

While shards are being written, ``out/.parts/`` holds:

- ``plan.json``: the dataset spec, the converter's row count and skips, and every shard the
  run will write, each with the digest of its planned samples. Every task writes the same
  plan (each runs the converter), so any of them, or ``xferscale prepare --merge``, can
  finish the dataset.
- ``{shard}.json`` (one per written shard, written after its tar and index are in place):
  the shard's plan digest, its manifest rows and its decode skips.

A shard counts as done when its part exists with the digest the current plan gives it, so a
re-run (after a crash, a kill or a pre-emption) rewrites exactly the shards that are not,
and a plan that changed (other options, other raw input) never reuses an old shard.

The merge, run under a file lock by whichever task finds every shard done (or by
``--merge``), writes ``{split}.csv``, ``report.json`` and ``dataset.json`` from the parts in
shard order, so they are byte-identical to a one-process run, then removes ``.parts/``.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from xferscale.data.manifest import ManifestRow, SplitInfo, atomic_write_text, dataset_json, write_manifest
from xferscale.data.records import DatasetSpec, PrepareError, Reconciliation, Skip
from xferscale.data.shards import index_path, remove_stale_tmp

PARTS = ".parts"
PLAN = "plan.json"
LOCK = ".prepare.lock"


@dataclass(frozen=True)
class PlannedShard:
    split: str
    name: str  # {split}-{NNNNN}.tar
    digest: str  # of the samples planned for it

    @property
    def part(self) -> str:
        return f"{Path(self.name).stem}.json"


@dataclass(frozen=True)
class Plan:
    spec: DatasetSpec
    rows_read: int
    converter_skips: tuple[Skip, ...]
    shards: tuple[PlannedShard, ...]  # split by split (sorted), in shard order

    @property
    def splits(self) -> list[str]:
        return sorted({s.split for s in self.shards})


@dataclass(frozen=True)
class Part:
    """What one written shard contributes to the manifests and the report."""

    digest: str
    rows: tuple[ManifestRow, ...]
    skips: tuple[Skip, ...]


def _write_json(path: Path, doc: dict) -> None:
    # tasks of one run may write the same file at once: a tmp name of their own each
    tmp = path.with_name(f"{path.name}.{socket.gethostname()}-{os.getpid()}.tmp")
    tmp.write_text(json.dumps(doc, separators=(",", ":")) + "\n")
    os.replace(tmp, path)


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as err:
        raise PrepareError(f"{path}: unreadable prepare record ({err}); delete it and re-run") from err


def write_plan(out: Path, plan: Plan) -> None:
    (out / PARTS).mkdir(exist_ok=True)
    _write_json(out / PARTS / PLAN, {
        "name": plan.spec.name, "task": plan.spec.task, "classes": list(plan.spec.classes),
        "rows_read": plan.rows_read,
        "converter_skips": [[s.ref, s.reason] for s in plan.converter_skips],
        "shards": [[s.split, s.name, s.digest] for s in plan.shards],
    })


def read_plan(out: Path) -> Plan | None:
    doc = _read_json(out / PARTS / PLAN)
    if doc is None:
        return None
    return Plan(
        DatasetSpec(doc["name"], doc["task"], tuple(doc["classes"])), doc["rows_read"],
        tuple(Skip(*s) for s in doc["converter_skips"]), tuple(PlannedShard(*s) for s in doc["shards"]),
    )


def write_part(out: Path, shard: PlannedShard, part: Part) -> None:
    _write_json(out / PARTS / shard.part, {
        "digest": part.digest,
        "rows": [[r.key, r.member, list(r.labels), r.patient, r.source, r.sha256] for r in part.rows],
        "skips": [[s.ref, s.reason] for s in part.skips],
    })


def read_part(out: Path, shard: PlannedShard) -> Part | None:
    """The shard's part if it is done for this plan (its digest matches, its tar exists)."""
    doc = _read_json(out / PARTS / shard.part)
    if doc is None or doc["digest"] != shard.digest:
        return None
    rows = tuple(ManifestRow(key, shard.name, member, tuple(labels), patient, source, *digest)
                 for key, member, labels, patient, source, *digest in doc["rows"])  # no digest: an older part
    if rows and not (out / shard.name).is_file():
        return None
    return Part(doc["digest"], rows, tuple(Skip(*s) for s in doc["skips"]))


@contextmanager
def merge_lock(out: Path) -> Iterator[None]:
    """One merger at a time across the tasks of a run (``fcntl`` locks hold across nodes on
    GPFS and on NFS; Lustre needs its ``flock`` mount option)."""
    with open(out / LOCK, "a") as handle:
        fcntl.lockf(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.lockf(handle, fcntl.LOCK_UN)


def report_dict(spec: DatasetSpec, log: Reconciliation) -> dict:
    return {
        "dataset": spec.name,
        "rows_read": log.rows_read,
        "written": dict(sorted(log.written.items())),
        "written_total": sum(log.written.values()),
        "skipped": len(log.skips),
        "skip_reasons": dict(log.skip_reasons().most_common()),
        "skips": [{"ref": s.ref, "reason": s.reason} for s in log.skips],
    }


def summary_lines(spec: DatasetSpec, log: Reconciliation) -> Iterator[str]:
    yield f"{spec.name}: {log.rows_read} rows read, {sum(log.written.values())} images written, {len(log.skips)} skipped"
    for split, n in sorted(log.written.items()):
        yield f"  {split:<12} {n:>9} images"
    for reason, n in log.skip_reasons().most_common():
        yield f"  skipped {n:>7}  {reason}"


def _remove_stale_outputs(out: Path, keep: set[str]) -> None:
    """Delete shards, indexes and manifests of an earlier run that this run did not write."""
    for pattern in ("*-[0-9][0-9][0-9][0-9][0-9].tar", "*-[0-9][0-9][0-9][0-9][0-9].idx", "*.csv"):
        for path in out.glob(pattern):
            if path.name not in keep:
                path.unlink()


def missing_shards(out: Path, plan: Plan) -> list[PlannedShard]:
    return [shard for shard in plan.shards if read_part(out, shard) is None]


def merge_dataset(out: Path, plan: Plan, log: Reconciliation | None = None) -> Path:
    """Write the manifests, ``report.json`` and ``dataset.json`` of a run whose shards are all
    done; returns the path of ``dataset.json``. ``log`` (the converter's) receives the decode
    skips and the written counts. A shard not done yet is an error naming it."""
    missing = [shard.name for shard in missing_shards(out, plan)]
    if missing:
        raise PrepareError(
            f"{out}: {len(missing)} of {len(plan.shards)} shards are not written yet ({', '.join(missing[:3])}"
            f"{', ...' if len(missing) > 3 else ''}); re-run the prepare tasks that did not finish"
        )
    return _merge_parts(out, plan, log)


def _merge_parts(out: Path, plan: Plan, log: Reconciliation | None) -> Path:
    """:func:`merge_dataset` once every part is known to be done. Parts are read shard by
    shard: the rows of a 14 M-image dataset are never all in memory."""
    spec = plan.spec
    if log is None:
        log = Reconciliation(plan.rows_read, skips=list(plan.converter_skips))
    splits: dict[str, SplitInfo] = {}
    for split in plan.splits:
        written: list[str] = []

        def rows() -> Iterator[ManifestRow]:
            for shard in plan.shards:
                if shard.split == split:
                    part = read_part(out, shard)
                    log.skips.extend(part.skips)
                    if part.rows:
                        written.append(shard.name)
                    yield from part.rows

        manifest = f"{split}.csv"
        count = write_manifest(out / manifest, spec, rows())
        log.written[split] = count
        splits[split] = SplitInfo(count, tuple(written), manifest)
    atomic_write_text(out / "report.json", json.dumps(report_dict(spec, log), indent=2) + "\n")
    for line in summary_lines(spec, log):
        print(line)
    empty = [name for name, info in splits.items() if info.count == 0]
    if empty:
        raise PrepareError(
            f"dataset {spec.name!r}: split(s) {', '.join(empty)} have no images left after skips "
            f"(see {out / 'report.json'})"
        )
    keep = {info.manifest for info in splits.values()}
    for info in splits.values():
        keep.update(info.shards)
        keep.update(index_path(Path(s)).name for s in info.shards)
    _remove_stale_outputs(out, keep)
    marker = out / "dataset.json"
    atomic_write_text(marker, dataset_json(spec, splits))
    for path in (out / PARTS).iterdir():
        path.unlink()
    (out / PARTS).rmdir()
    remove_stale_tmp(out)
    return marker


def merge_when_complete(out: Path, log: Reconciliation | None = None) -> Path | None:
    """Merge if every shard of the current plan is done (else None: other tasks are still
    writing). Safe to call from every task: the lock admits one, and a task that comes after
    the merge finds ``dataset.json`` in place."""
    with merge_lock(out):
        plan = read_plan(out)
        if plan is None:
            marker = out / "dataset.json"
            if marker.is_file():
                return marker
            raise PrepareError(f"{out}: no prepare run to merge (no {PARTS}/{PLAN}); run `xferscale prepare` first")
        if missing_shards(out, plan):
            return None
        return _merge_parts(out, plan, log)
