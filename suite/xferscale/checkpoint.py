"""Checkpoints written atomically, never of a non-finite state, verified on load, and the
random-number state that makes resumes exact.

Beside ``checkpoint.pt`` lies ``checkpoint.pt.sha256``: the SHA-256 of the file as written.
A checkpoint whose bytes changed afterwards (a flipped bit on a disk, a partial copy) is
refused on load instead of training on from garbage. The digest file is rewritten around
the atomic rename so that, wherever a crash falls, it lists the digest of whichever file
``checkpoint.pt`` then is.

Loading never unpickles: ``torch.load(weights_only=True)`` builds only tensors and plain
values, so a file whose pickle would run code is refused instead of run. The digest guards
against corruption, not against whoever can write both files.
"""
from __future__ import annotations

import hashlib
import os
import pickle
import random
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

try:
    from numpy._core.multiarray import _reconstruct
except ImportError:  # numpy < 2
    from numpy.core.multiarray import _reconstruct


CHECKPOINT_NAME = "checkpoint.pt"  # a pre-training run's last state, in its output folder


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (full disk, no permission); the previous one is kept."""


class CheckpointReadError(ValueError):
    """A checkpoint that does not exist or cannot be read (truncated, foreign); names the file."""


# Checkpoints written before the numpy generator state was stored as a list hold it as a
# uint32 array; these rebuild such an array (its elements go through the same restricted unpickler).
_NUMPY_ARRAY = [_reconstruct, np.ndarray, np.dtype, np.dtypes.UInt32DType]


class TensorFileError(ValueError):
    """A file torch's restricted reader cannot read as tensors and plain values; the message is the cause."""


class UnpicklingRefused(TensorFileError):
    """A pickle that names more than tensors and plain values: refused, not unpickled."""


class NonFiniteStateError(RuntimeError):
    """The state to be checkpointed holds NaN/inf (in ``entries``); nothing was written."""

    def __init__(self, message: str, entries: list[str]):
        super().__init__(message)
        self.entries = entries


def _tensors(value: Any) -> Iterator[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _tensors(item)


def nonfinite_entries(state: dict[str, Any], keys: tuple[str, ...] = ("model", "optimizer")) -> list[str]:
    """The top-level entries of ``state`` among ``keys`` whose floating tensors hold NaN/inf."""
    bad = []
    for key in keys:
        floats = [t for t in _tensors(state.get(key)) if t.is_floating_point()]
        if floats and not all(bool(torch.isfinite(t).all()) for t in floats):
            bad.append(key)
    return bad


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write ``state`` so that ``path`` always holds a complete checkpoint, even after a crash.

    A state whose weights or optimizer hold NaN/inf is refused (:class:`NonFiniteStateError`),
    so a checkpoint is always one a run can continue from. A write that fails (a full disk)
    removes its temporary file and keeps the previous checkpoint (:class:`CheckpointWriteError`).
    """
    path = Path(path)
    bad = nonfinite_entries(state)
    if bad:
        raise NonFiniteStateError(f"{path}: not written, the {' and '.join(bad)} state holds NaN/inf", bad)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    sidecar = digest_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as handle:
            torch.save(state, handle)
            handle.flush()
            os.fsync(handle.fileno())
        digest = file_digest(tmp)
        # The new file's digest beside those the current file may have (a crash can leave several).
        _write_digests(sidecar, [digest, *_read_digests(sidecar)][:8])
        os.replace(tmp, path)
        _write_digests(sidecar, [digest])
    except (OSError, RuntimeError) as err:  # torch.save reports a failed write as RuntimeError
        tmp.unlink(missing_ok=True)
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err).splitlines()[0]
        kept = "; the previous checkpoint is kept" if path.exists() else ""
        raise CheckpointWriteError(f"could not write {path}: {reason}{kept}") from err


def digest_path(path: Path) -> Path:
    return path.with_name(f"{path.name}.sha256")


def file_digest(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 24), b""):
            sha.update(block)
    return sha.hexdigest()


def _read_digests(sidecar: Path) -> list[str]:
    try:
        return sidecar.read_text().split()
    except FileNotFoundError:
        return []


def _write_digests(sidecar: Path, digests: list[str]) -> None:
    tmp = sidecar.with_name(f".{sidecar.name}.{os.getpid()}.tmp")
    tmp.write_text("\n".join(digests) + "\n")
    os.replace(tmp, sidecar)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint, verified against its digest file where it has one."""
    return load_checkpoint_and_digest(path, map_location)[0]


def load_checkpoint_and_digest(path: str | Path,
                               map_location: str | torch.device = "cpu") -> tuple[dict[str, Any], str]:
    """:func:`load_checkpoint`, with the SHA-256 it verified the file by (what a record names it by)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointReadError(f"checkpoint {path} does not exist")
    known = _read_digests(digest_path(path))
    digest = file_digest(path)
    if known and digest not in known:
        raise CheckpointReadError(f"checkpoint {path} is corrupt: its bytes changed after it was written (SHA-256 "
                                  f"differs from {digest_path(path).name}); delete both to start over")
    try:
        state = load_tensors(path, map_location)
    except UnpicklingRefused as err:
        raise CheckpointReadError(f"checkpoint {path} is refused: {err}") from None
    except Exception as err:  # a truncated or foreign file
        first = str(err) if isinstance(err, TensorFileError) else first_line(err)
        raise CheckpointReadError(f"checkpoint {path} cannot be read ({first}); delete it to start over") from err
    if not isinstance(state, dict):
        raise CheckpointReadError(f"checkpoint {path} holds a {type(state).__name__}, not an xferscale checkpoint")
    return state, digest


def load_tensors(path: str | Path, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load`` of tensors and plain values only (``weights_only``): never unpickles.

    A pickle naming anything else raises :class:`UnpicklingRefused` instead of running it;
    one torch's restricted reader cannot parse raises :class:`TensorFileError` with its cause.
    """
    try:
        with warnings.catch_warnings(), torch.serialization.safe_globals(_NUMPY_ARRAY):
            warnings.simplefilter("ignore")  # torch warns of pickle protocols it did not write
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        named = re.search(r"GLOBAL ([\w.]+)", str(err))
        if named:
            raise UnpicklingRefused(f"it names {named[1]}, and only tensors and plain values are loaded, "
                                    "never unpickled (that could run code)") from None
        # the cause follows a preamble on how to load the file unsafely
        _, marker, reason = str(err).partition("WeightsUnpickler error:")
        raise TensorFileError(first_line(reason) if marker else first_line(err)) from None


def first_line(message: Exception | str) -> str:
    """The first non-blank line of an error message (an exception's type name if it has none)."""
    lines = [line.strip() for line in str(message).splitlines() if line.strip()]
    return lines[0] if lines else type(message).__name__


def rng_state() -> dict[str, Any]:
    """The generators' states, as tensors and plain values (what a checkpoint load accepts)."""
    kind, key, *rest = np.random.get_state()
    state = {"python": random.getstate(), "numpy": (kind, key.tolist(), *rest), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
