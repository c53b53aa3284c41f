"""Result records of fine-tuning runs: one JSON file per finished run.

A record is written once, atomically (temporary file, then ``os.replace``), when a run has
finished and been evaluated; its presence is what marks the run done. A re-started grid
therefore skips every run that has a record with the same configuration hash, and a record
whose hash differs (the same run under other settings) is an error unless the caller asks
to overwrite it, so a results folder never mixes two configurations silently.

Layout: ``<root>/<source>/<model>/<target>/shots-<k>/seed-<s>.json``.

Several jobs may share one results folder (two SLURM jobs of the same grid): a run is
claimed before it starts (:meth:`ResultStore.claim`: a claim file naming its job, put in place
whole), so each run is done once; the claim of a job that died is taken over: at once on the
same host (its process is gone), elsewhere once its heartbeat (the claim file's time,
refreshed at every resume state the run saves) is older than ``stale_after_s``. Placing,
taking over and releasing claims happen under a lock on the folder, so two jobs never both
take over one claim, and a job releases only its own.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import socket
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

SCHEMA_VERSION = 1
FULL = "full"  # the shots value of a full-shot run

Shots = int | str  # a number of examples per class, or "full"
CLAIMS_LOCK = ".claims.lock"  # beside the claims of one folder; never removed (a removed lock file is no lock)


class ResultError(ValueError):
    """A record or results folder that cannot be used; the message names the file."""


def parse_shots(text: str) -> list[Shots]:
    """``"1,5,10,full"`` -> ``[1, 5, 10, "full"]``."""
    out: list[Shots] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if part.lower() == FULL:
            out.append(FULL)
            continue
        try:
            value = int(part)
        except ValueError:
            raise ResultError(f"shots: {part!r} is neither a positive integer nor 'full'") from None
        if value <= 0:
            raise ResultError(f"shots: {value} must be a positive number of examples per class")
        out.append(value)
    if not out:
        raise ResultError(f"shots: no value in {text!r}")
    return list(dict.fromkeys(out))


def parse_seeds(text: str) -> list[int]:
    """``"0-4"`` -> ``[0, 1, 2, 3, 4]``; ``"0,3,7"`` and mixtures such as ``"0-2,9"`` work too."""
    seeds: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        lo, sep, hi = part.partition("-")
        try:
            first, last = (int(lo), int(hi)) if sep else (int(part), int(part))
        except ValueError:
            raise ResultError(f"seeds: {part!r} is not a seed or a range like 0-4") from None
        if last < first:
            raise ResultError(f"seeds: range {part!r} runs backwards")
        seeds.extend(range(first, last + 1))
    if not seeds or min(seeds) < 0:
        raise ResultError(f"seeds: expected non-negative seeds, got {text!r}")
    return list(dict.fromkeys(seeds))


def shots_sort_key(shots: Shots) -> float:
    return float("inf") if shots == FULL else float(shots)


def config_hash(config: dict[str, Any]) -> str:
    """A short, stable hash of a JSON-able configuration (key order does not matter)."""
    blob = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class RunKey:
    """What identifies one run of a grid."""

    source: str
    model: str
    target: str
    shots: Shots
    seed: int

    @property
    def relpath(self) -> Path:
        return Path(self.source, self.model, self.target, f"shots-{self.shots}", f"seed-{self.seed}.json")

    def __str__(self) -> str:
        return f"{self.source}/{self.model} -> {self.target} shots={self.shots} seed={self.seed}"


@dataclass
class ResultRecord:
    """One finished run. ``value`` is ``None`` when the metric is undefined on the test set, or
    when the run cannot exist: ``infeasible`` then says why (a class with fewer than ``shots``
    examples); such a record is kept so the grid does not try the run again."""

    source: str
    model: str
    target: str
    shots: Shots
    seed: int
    metric: str
    value: float | None
    steps: int
    time_s: float
    config_hash: str
    config: dict[str, Any] = field(default_factory=dict)
    detail: dict[str, Any] = field(default_factory=dict)  # per-label AUCs, undefined labels, ...
    infeasible: str | None = None
    schema: int = SCHEMA_VERSION

    @property
    def key(self) -> RunKey:
        return RunKey(self.source, self.model, self.target, self.shots, self.seed)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "record") -> "ResultRecord":
        required = ["source", "model", "target", "shots", "seed", "metric", "value", "steps", "time_s", "config_hash"]
        missing = [k for k in required if k not in data]
        if missing:
            raise ResultError(f"{where}: missing field(s) {', '.join(missing)}")
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ResultError(f"{where}: unknown field(s) {', '.join(unknown)}")
        shots = data["shots"]
        if not (shots == FULL or (isinstance(shots, int) and shots > 0)):
            raise ResultError(f"{where}: shots must be a positive integer or 'full', got {shots!r}")
        if data["value"] is not None and not isinstance(data["value"], (int, float)):
            raise ResultError(f"{where}: value must be a number or null, got {data['value']!r}")
        if data.get("infeasible") is not None and data["value"] is not None:
            raise ResultError(f"{where}: an infeasible run has no value, got {data['value']!r}")
        return cls(**data)


def write_text_atomic(path: Path, text: str) -> None:
    """Write a file so a crash leaves either the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        raise OSError(err.errno, err.strerror, str(path)) from err  # name the file, not the temporary
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, payload: Any) -> None:
    write_text_atomic(path, json.dumps(payload, indent=2, sort_keys=True) + "\n")


@dataclass
class Claim:
    """This process's hold on one run; :meth:`refresh` is its heartbeat."""

    path: Path
    token: str  # in the claim file: tells this hold from a later one of the same run

    def refresh(self) -> None:
        os.utime(self.path)

    def release(self) -> None:
        """Remove the claim if it is still this one: a job that took it over keeps its own."""
        with _claims_locked(self.path):
            if _claim_owner(self.path).get("token") == self.token:
                self.path.unlink()


@contextlib.contextmanager
def _claims_locked(claim: Path) -> Iterator[None]:
    """Claims of one folder are placed, taken over and removed under an exclusive lock.

    flock holds across nodes on GPFS (JUWELS) and NFS; Lustre needs its ``flock`` mount option.
    """
    fd = os.open(claim.parent / CLAIMS_LOCK, os.O_RDONLY | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _claim_owner(path: Path) -> dict[str, Any]:
    """The owner a claim file names; {} when it names none (empty, cut short, not a claim)."""
    try:
        owner = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):  # PermissionError: the caller decides
        return {}
    named = isinstance(owner, dict) and isinstance(owner.get("host"), str) and isinstance(owner.get("pid"), int)
    return owner if named else {}


def _place_claim(path: Path, owner: dict[str, Any]) -> None:
    """Put the claim file in place whole (a unique temporary file, renamed), or leave nothing."""
    tmp = path.with_name(f".{path.name}.{owner['token']}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(fd, "w") as handle:
            json.dump(owner, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _owner() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid(), "job": os.environ.get("SLURM_JOB_ID")}


def _alive_here(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ResultStore:
    """The records under one results folder."""

    def __init__(self, root: str | os.PathLike[str], stale_after_s: float = 1800.0):
        self.root = Path(root)
        self.stale_after_s = stale_after_s

    def path(self, key: RunKey) -> Path:
        return self.root / key.relpath

    def work_dir(self, key: RunKey) -> Path:
        """Where an unfinished run keeps its resume state (removed once the record exists)."""
        return self.root / ".work" / key.relpath.with_suffix("")

    def claim(self, key: RunKey) -> Claim | None:
        """Claim a run for this process; None when a live job holds it (a dead one's is taken over)."""
        path = self.work_dir(key).with_suffix(".claim")
        owner = {**_owner(), "token": uuid.uuid4().hex}
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with _claims_locked(path):
                if self._held_by_a_live_job(path):
                    return None
                _place_claim(path, owner)  # replaces a dead job's claim in one step
        except OSError as err:
            raise ResultError(f"{path}: cannot claim {key}: {err.strerror or err}") from err
        return Claim(path, owner["token"])

    def _held_by_a_live_job(self, path: Path) -> bool:
        """Whether ``path`` is the claim of a running job: its process on this host, its
        heartbeat elsewhere. A claim naming no owner is no live job's: claims are placed whole."""
        try:
            age = time.time() - path.stat().st_mtime
        except FileNotFoundError:
            return False
        try:
            owner = _claim_owner(path)
        except PermissionError:  # another user's claim, unreadable here: its heartbeat tells
            return age <= self.stale_after_s
        if not owner:
            return False
        if owner["host"] == socket.gethostname():
            return _alive_here(owner["pid"])
        return age <= self.stale_after_s

    def load(self, key: RunKey) -> ResultRecord | None:
        path = self.path(key)
        if not path.exists():
            return None
        return read_record(path)

    def is_finished(self, key: RunKey, cfg_hash: str, overwrite: bool = False) -> bool:
        """True if the run has a record of this configuration; raise if it has another's."""
        record = self.load(key)
        if record is None:
            return False
        if record.config_hash == cfg_hash:
            return True
        if overwrite:
            return False
        raise ResultError(
            f"{self.path(key)}: a record of {key} exists with configuration {record.config_hash}, "
            f"this run's is {cfg_hash}; use another results folder, or --overwrite to replace it"
        )

    def save(self, record: ResultRecord) -> Path:
        path = self.path(record.key)
        write_json_atomic(path, asdict(record))
        return path

    def records(self) -> Iterator[ResultRecord]:
        yield from iter_records(self.root)


def read_record(path: Path) -> ResultRecord:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ResultError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(data, dict):
        raise ResultError(f"{path}: expected a JSON object")
    return ResultRecord.from_dict(data, where=str(path))


def iter_records(root: str | os.PathLike[str]) -> Iterator[ResultRecord]:
    """Every record under ``root`` (resume state under ``.work`` is not a record)."""
    base = Path(root)
    if not base.is_dir():
        raise ResultError(f"results folder {base} does not exist")
    for path in sorted(base.rglob("seed-*.json")):
        if ".work" in path.relative_to(base).parts:
            continue
        yield read_record(path)


def load_records(roots: Iterable[str | os.PathLike[str]]) -> list[ResultRecord]:
    return [r for root in roots for r in iter_records(root)]
