"""The registry of dataset converters, one registration per converter (as timm registers
its models).

A converter module in :mod:`xferscale.data_prep` decorates its reader::

    @register_converter("flowers102", DESCRIPTION, options=(SPLIT_OPTION,))
    def read(raw: Path, log: Reconciliation, *, split: str = "paper") -> tuple[DatasetSpec, Iterable[Sample]]:

``read(raw, log, **options)`` returns the spec and the samples. A derived dataset built
from several raw datasets declares ``sources``; its ``read`` then gets a ``dict`` mapping
each source name to its raw folder. Declared options become ``xferscale prepare`` flags.
Declared ``markers`` (files that only the expected folder holds, e.g. CheXpert's
``train.csv``) let ``--raw`` name a parent folder: the one sub-folder (up to two levels down)
that holds a marker is used, and several are an error naming them.
Only registrations count: a module's own constants are never read as the protocol.

The pre-training configs and the experiment checks' data root name the ImageNet sources
``in1k`` and ``in21k``; :data:`ALIASES` makes ``xferscale prepare in1k`` the ``imagenet1k``
converter, so either name works wherever a dataset is named.
"""
from __future__ import annotations

import importlib
import pkgutil
import shlex
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterable, Mapping

from xferscale.data.records import DatasetSpec, PrepareError, Reconciliation, Sample
from xferscale.data_prep.raw_files import require_dir

PACKAGE = "xferscale.data_prep"
ReadFn = Callable[..., tuple[DatasetSpec, Iterable[Sample]]]


@dataclass(frozen=True)
class ConverterOption:
    """A choice a converter offers, given as ``xferscale prepare NAME --FLAG VALUE``."""

    flag: str  # the command-line flag without dashes, also the keyword ``read`` receives
    choices: tuple[str, ...]
    default: str
    help: str


@dataclass(frozen=True)
class Converter:
    name: str
    description: str
    read: ReadFn
    sources: tuple[str, ...] = ()  # empty: one raw folder
    options: tuple[ConverterOption, ...] = ()
    module: str = ""
    markers: tuple[str, ...] = ()  # relative paths, any of which marks the folder read expects

    def option_values(self, given: Mapping[str, str | None]) -> dict[str, str]:
        """The keyword arguments of ``read``: each declared option, given or its default."""
        values = {}
        for option in self.options:
            value = given.get(option.flag) or option.default
            if value not in option.choices:
                raise PrepareError(f"dataset {self.name!r}: --{option.flag} {value!r} is not one of "
                                   f"{', '.join(option.choices)}")
            values[option.flag] = value
        declared = {o.flag for o in self.options}
        unused = sorted(f for f, v in given.items() if v is not None and f not in declared)
        if unused:
            raise PrepareError(f"dataset {self.name!r} takes no --{', --'.join(unused)}")
        return values

    def convert(self, raw: Path | dict[str, Path], log: Reconciliation,
                given: Mapping[str, str | None] | None = None) -> tuple[DatasetSpec, Iterable[Sample]]:
        return self.read(raw, log, **self.option_values(given or {}))


_REGISTRY: dict[str, Converter] = {}

#: Short dataset names (configs, data root folders) -> the converter registered for them.
ALIASES: dict[str, str] = {"in1k": "imagenet1k", "in21k": "imagenet21k"}


def register_converter(name: str, description: str, *, sources: Iterable[str] = (),
                       options: Iterable[ConverterOption] = (),
                       markers: Iterable[str] = ()) -> Callable[[ReadFn], ReadFn]:
    """Decorator: register ``read`` as the converter ``name``; a second module using the
    same name is an error (re-importing the same module is not)."""
    def decorate(read: ReadFn) -> ReadFn:
        converter = Converter(name, description, read, tuple(sources), tuple(options), read.__module__,
                              tuple(markers))
        known = _REGISTRY.get(name)
        if known is not None and known.module != converter.module:
            raise PrepareError(f"two converter modules register {name!r}: {known.module} and {converter.module}")
        _REGISTRY[name] = converter
        return read
    return decorate


def discover(package: str = PACKAGE) -> dict[str, Converter]:
    """Every converter registered by the modules of ``package``, by name. A module that fails
    to import is reported on stderr and left out, so one broken converter does not disable
    the others."""
    pkg = importlib.import_module(package)
    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        try:
            importlib.import_module(f"{package}.{info.name}")
        except Exception as err:  # noqa: BLE001 - any import failure of a plug-in module
            print(f"warning: converter module {package}.{info.name} cannot be imported: {err}", file=sys.stderr)
    prefix = f"{package}."
    found = {name: c for name, c in sorted(_REGISTRY.items())
             if c.module.startswith(prefix) and c.module in sys.modules}
    for alias, name in ALIASES.items():
        if name in found:
            found[alias] = replace(found[name], name=alias, description=f"the same as {name} (its short name)")
    return dict(sorted(found.items()))


def prepare_command(name: str, out: str) -> str:
    """The ``xferscale prepare`` line that writes dataset ``name`` to ``out`` (raw folders as
    placeholders), e.g. for a message saying that a prepared dataset is missing."""
    converter = discover().get(name)
    sources = converter.sources if converter else ()
    raws = [f"--raw {source}=RAW_{source.upper()}_DIR" for source in sources] or ["--raw RAW_DIR"]
    return " ".join(["xferscale prepare", shlex.quote(name), *raws, "--out", shlex.quote(out)])


def all_options(converters: Iterable[Converter]) -> dict[str, list[Converter]]:
    """Option flag -> the converters declaring it (for the command line's help)."""
    flags: dict[str, list[Converter]] = {}
    for converter in converters:
        for option in converter.options:
            flags.setdefault(option.flag, []).append(converter)
    return flags


def resolve_raw(converter: Converter, raw: list[str]) -> Path | dict[str, Path]:
    """Turn ``--raw`` values into what ``read`` expects, checking every folder exists."""
    if not converter.sources:
        if len(raw) != 1:
            raise PrepareError(f"dataset {converter.name!r} takes exactly one --raw DIR, got {raw or 'none'}")
        if "=" in raw[0] and not Path(raw[0]).exists():
            raise PrepareError(f"dataset {converter.name!r} takes one raw folder (--raw DIR), not "
                               f"SOURCE=DIR: {raw[0]!r}")
        return locate_root(_existing_dir(Path(raw[0]), converter.name), converter)
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
        member = _REGISTRY.get(source)
        folder_path = _existing_dir(Path(folder), f"{converter.name} ({source})")
        given[source] = locate_root(folder_path, member) if member is not None else folder_path
    missing = [s for s in converter.sources if s not in given]
    if missing:
        raise PrepareError(f"dataset {converter.name!r}: missing --raw {'=DIR, --raw '.join(missing)}=DIR")
    return given


def locate_root(raw: Path, converter: Converter, depth: int = 2) -> Path:
    """``raw``, or the one folder below it (``depth`` levels at most) that holds one of the
    converter's markers; a parent folder is accepted where it is unambiguous."""
    if not converter.markers or _has_marker(raw, converter):
        return raw
    level, found = [raw], []
    for _ in range(depth):
        level = sorted(d for parent in level for d in _subfolders(parent))
        found = [d for d in level if _has_marker(d, converter)]
        if found:
            break
    if len(found) > 1:
        raise PrepareError(f"{raw}: several folders hold {converter.name}'s {' or '.join(converter.markers)}: "
                           f"{', '.join(str(d) for d in found)}; pass one of them as --raw")
    if found:
        print(f"{converter.name}: reading {found[0]} (the folder below {raw} that holds "
              f"{next(m for m in converter.markers if (found[0] / m).exists())})")
        return found[0]
    return raw  # the converter's own check names what is missing


def _has_marker(folder: Path, converter: Converter) -> bool:
    return any((folder / marker).exists() for marker in converter.markers)


def _subfolders(folder: Path) -> list[Path]:
    try:
        return [d for d in folder.iterdir() if d.is_dir() and not d.name.startswith(".")]
    except OSError:
        return []


def _existing_dir(path: Path, what: str) -> Path:
    return require_dir(path, f"raw data of {what}")
