"""Discovery of dataset converters: the modules of :mod:`xferscale.data_prep`.

A converter module defines ``NAME: str``, ``DESCRIPTION: str`` and
``read(raw, log) -> (DatasetSpec, Iterable[Sample])``. A derived dataset built from
several raw datasets also defines ``SOURCES: tuple[str, ...]``; its ``read`` then gets a
``dict`` mapping each source name to its raw folder.
"""
from __future__ import annotations

import importlib
import pkgutil
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Callable, Iterable

from xferscale.data.records import DatasetSpec, PrepareError, Reconciliation, Sample
from xferscale.data_prep.raw_files import require_dir

PACKAGE = "xferscale.data_prep"
ReadFn = Callable[[Path | dict[str, Path], Reconciliation], tuple[DatasetSpec, Iterable[Sample]]]


@dataclass(frozen=True)
class Converter:
    name: str
    description: str
    read: ReadFn
    sources: tuple[str, ...] = ()  # empty: one raw folder

    @classmethod
    def from_module(cls, module: ModuleType) -> "Converter | None":
        name, description, read = (getattr(module, a, None) for a in ("NAME", "DESCRIPTION", "read"))
        if not (isinstance(name, str) and isinstance(description, str) and callable(read)):
            return None
        return cls(name, description, read, tuple(getattr(module, "SOURCES", ())))


def discover(package: str = PACKAGE) -> dict[str, Converter]:
    """Every converter in ``package`` by NAME; a module that fails to import is reported
    on stderr and left out, so one broken converter does not disable the others."""
    pkg = importlib.import_module(package)
    found: dict[str, Converter] = {}
    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        try:
            module = importlib.import_module(f"{package}.{info.name}")
        except Exception as err:  # noqa: BLE001 - any import failure of a plug-in module
            print(f"warning: converter module {package}.{info.name} cannot be imported: {err}", file=sys.stderr)
            continue
        converter = Converter.from_module(module)
        if converter is not None:
            if converter.name in found:
                raise PrepareError(f"two converter modules define NAME = {converter.name!r}")
            found[converter.name] = converter
    return found


def resolve_raw(converter: Converter, raw: list[str]) -> Path | dict[str, Path]:
    """Turn ``--raw`` values into what ``read`` expects, checking every folder exists."""
    if not converter.sources:
        if len(raw) != 1:
            raise PrepareError(f"dataset {converter.name!r} takes exactly one --raw DIR, got {raw or 'none'}")
        return _existing_dir(Path(raw[0]), converter.name)
    given: dict[str, Path] = {}
    for item in raw:
        source, sep, folder = item.partition("=")
        if not sep or source not in converter.sources:
            raise PrepareError(
                f"dataset {converter.name!r} combines {', '.join(converter.sources)}: "
                f"pass --raw NAME=DIR once for each, got {item!r}"
            )
        if source in given:
            raise PrepareError(f"--raw {source}=... given twice")
        given[source] = _existing_dir(Path(folder), f"{converter.name} ({source})")
    missing = [s for s in converter.sources if s not in given]
    if missing:
        raise PrepareError(f"dataset {converter.name!r}: missing --raw {'=DIR, --raw '.join(missing)}=DIR")
    return given


def _existing_dir(path: Path, what: str) -> Path:
    return require_dir(path, f"raw data of {what}")
