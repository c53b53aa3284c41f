"""Readers for the raw files of the public dataset releases, with named errors.

Every failure becomes a :class:`PrepareError` that names the file and what is wrong with
it, so that ``xferscale prepare`` can tell the user which download is broken.
"""
from __future__ import annotations

import codecs
import pickle
from pathlib import Path
from typing import Any, Iterable

import numpy as np

try:
    from numpy._core.multiarray import _reconstruct
except ImportError:  # numpy < 2
    from numpy.core.multiarray import _reconstruct

from xferscale.data.records import PrepareError


def require_dir(path: Path, what: str) -> Path:
    """Return ``path`` if it is a folder, else raise naming it and what it should hold."""
    if not path.is_dir():
        raise PrepareError(f"{path}: missing folder ({what})")
    return path


def require_file(path: Path, what: str) -> Path:
    """Return ``path`` if it is a file, else raise naming it and what it should be."""
    if not path.is_file():
        raise PrepareError(f"{path}: missing file ({what})")
    return path


def first_existing(candidates: Iterable[Path]) -> Path | None:
    """The first of ``candidates`` that exists (releases unpack to different depths)."""
    return next((p for p in candidates if p.exists()), None)


# What a CIFAR "python version" pickle names: numpy's array reconstruction (numpy.core before
# numpy 2, numpy._core after), and _codecs.encode, with which Python 3 pickles bytes at protocol 2.
_CIFAR_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,
}


class _RefusedGlobal(pickle.UnpicklingError):
    """A pickle names a global no CIFAR release holds."""


class _CifarUnpickler(pickle.Unpickler):
    """Builds only dicts, lists, numbers, strings, bytes and numpy arrays: a pickle naming
    anything else (a function to call, a class to build) is refused, never run."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _CIFAR_GLOBALS[(module, name)]
        except KeyError:
            raise _RefusedGlobal(f"{module}.{name}") from None


def load_pickle(path: Path, keys: Iterable[str]) -> dict[str, Any]:
    """Load a Python-2 era pickled dict (CIFAR batches) with its keys as ``str``.

    The CIFAR pickles were written by Python 2, so ``encoding="bytes"`` gives ``bytes``
    keys (b'data', b'labels'); they are decoded here so that callers use plain names.
    """
    require_file(path, "CIFAR python pickle")
    try:
        with open(path, "rb") as f:
            obj = _CifarUnpickler(f, encoding="bytes").load()
    except _RefusedGlobal as e:
        raise PrepareError(f"{path}: refused: the pickle names {e}, which no CIFAR release holds (only dicts, "
                           "lists, numbers, strings and numpy arrays are unpickled)") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError) as e:
        raise PrepareError(f"{path}: malformed pickle ({type(e).__name__}: {e})") from e
    if not isinstance(obj, dict):
        raise PrepareError(f"{path}: expected a pickled dict, found {type(obj).__name__}")
    found = {k.decode("latin1") if isinstance(k, bytes) else str(k): v for k, v in obj.items()}
    missing = [k for k in keys if k not in found]
    if missing:
        raise PrepareError(f"{path}: pickle lacks key(s) {missing}; it has {sorted(found)}")
    return found


def load_mat(path: Path, variables: Iterable[str]) -> dict[str, np.ndarray]:
    """Load MATLAB variables with scipy (squeezed), raising if one is missing."""
    from scipy.io import loadmat  # scipy is heavy; only the .mat converters need it

    require_file(path, "MATLAB .mat file")
    try:
        mat = loadmat(path, squeeze_me=True)
    except Exception as e:  # scipy raises ValueError/TypeError/MatReadError for junk
        raise PrepareError(f"{path}: unreadable .mat file ({type(e).__name__}: {e})") from e
    wanted = list(variables)
    missing = [v for v in wanted if v not in mat]
    if missing:
        present = sorted(k for k in mat if not k.startswith("__"))
        raise PrepareError(f"{path}: .mat file lacks variable(s) {missing}; it has {present}")
    return {v: mat[v] for v in wanted}


def as_int_vector(values: Any, path: Path, variable: str) -> np.ndarray:
    """A .mat/pickle field as a 1-D int64 array, or a named error if it is not integral."""
    arr = np.atleast_1d(np.asarray(values))
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.number):
        raise PrepareError(f"{path}: {variable!r} should be a vector of integers, got shape {arr.shape} "
                           f"dtype {arr.dtype}")
    ints = arr.astype(np.int64)
    if not np.array_equal(ints, arr):
        raise PrepareError(f"{path}: {variable!r} holds non-integer values")
    return ints
