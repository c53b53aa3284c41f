"""Reading ReFrame 4 perflogs: one ``|``-separated file per check with a header line.

ReFrame's ``filelog`` handler writes ``<basedir>/<system>/<partition>/<Check>.log``; its
first line names the columns (``result``, ``num_workers``, ``efficiency_value``,
``efficiency_ref``, ...). When the columns change, ReFrame moves the old file to
``<Check>.log.h0``, ``.h1``...; those are read too.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator


class PerflogError(ValueError):
    """A perflog that cannot be read; the message names the file and line."""


def perflog_files(root: str | Path, check: str | None = None) -> list[Path]:
    root = Path(root)
    if not root.is_dir():
        raise PerflogError(f"{root}: not a folder of ReFrame perflogs")
    pattern = f"{check}.log*" if check else "*.log*"
    return sorted(p for p in root.rglob(pattern) if p.is_file() and (p.suffix == ".log" or ".log.h" in p.name))


def read_perflog(path: str | Path) -> Iterator[dict[str, str]]:
    """Rows of one perflog as ``{column: text}``; the header comes from the file."""
    path = Path(path)
    lines = path.read_text().splitlines()
    if not lines:
        return
    header = lines[0].split("|")
    if "result" not in header and "check_result" not in header:
        raise PerflogError(f"{path}:1: no header line with a 'result' column; is this a ReFrame 4 perflog?")
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = line.split("|")
        if len(fields) != len(header):
            raise PerflogError(f"{path}:{number}: {len(fields)} fields, but the header has {len(header)}")
        yield dict(zip(header, fields))


def read_perflogs(root: str | Path, check: str | None = None) -> list[dict[str, str]]:
    rows = []
    for path in perflog_files(root, check):
        rows.extend(read_perflog(path))
    return rows


def number(text: str | None) -> float | None:
    """A perflog field as a float; ReFrame writes None / null / empty for no value."""
    if text is None or text.strip() in ("", "None", "null", "nan"):
        return None
    return float(text)
