"""Shared output of the benchmark kernels: human lines plus one machine-readable JSON line.

Every kernel prints what it measured as readable ``key: value`` lines and then exactly one
JSON object on a line of its own, tagged with ``"schema": "xferscale.bench/1"`` and the
kernel's name. ReFrame checks and tests read results back with :func:`parse_result`, so
the human lines can change freely without breaking a parser.
"""
from __future__ import annotations

import json
import math
import sys
from typing import Any, Iterable, TextIO

SCHEMA = "xferscale.bench/1"


class ResultNotFound(ValueError):
    """No (or no matching) result line in a kernel's output."""


def _jsonable(value: Any) -> Any:
    # JSON has no NaN/inf: write null so strict parsers (and jq) accept the line.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def format_human(kernel: str, lines: Iterable[tuple[str, Any]]) -> str:
    """``[("images/s total", 123.4), ...]`` -> aligned ``[kernel] key: value`` lines."""
    rows = list(lines)
    width = max((len(k) for k, _ in rows), default=0)
    out = []
    for key, value in rows:
        text = f"{value:.4g}" if isinstance(value, float) else str(value)
        out.append(f"[{kernel}] {key:<{width}} : {text}")
    return "\n".join(out)


def emit_result(
    kernel: str,
    result: dict[str, Any],
    human: Iterable[tuple[str, Any]] = (),
    stream: TextIO | None = None,
) -> str:
    """Print the human lines, then the JSON line; return the JSON line."""
    stream = stream or sys.stdout
    text = format_human(kernel, human)
    if text:
        print(text, file=stream)
    record = {"schema": SCHEMA, "kernel": kernel, **_jsonable(result)}
    line = json.dumps(record, sort_keys=False, separators=(",", ":"))
    print(line, file=stream, flush=True)
    return line


def parse_results(text: str, kernel: str | None = None) -> list[dict[str, Any]]:
    """Every result line in ``text`` (optionally of one kernel), in order."""
    found = []
    for raw in text.splitlines():
        line = raw.strip()
        # torchrun may prefix lines with "[rank0]:"; the JSON object starts at the first "{".
        start = line.find("{")
        if start < 0 or '"kernel"' not in line:
            continue
        try:
            record = json.loads(line[start:])
        except json.JSONDecodeError:
            continue
        # A line of ours has the schema tag; a kernel that prints its own JSON line with a
        # "kernel" key but no tag is accepted too.
        if not isinstance(record, dict) or record.get("schema", SCHEMA) != SCHEMA or "kernel" not in record:
            continue
        if kernel is None or record.get("kernel") == kernel:
            found.append(record)
    return found


def parse_result(text: str, kernel: str | None = None) -> dict[str, Any]:
    """The last result line in ``text`` (of ``kernel`` if given); :class:`ResultNotFound` if none."""
    found = parse_results(text, kernel)
    if not found:
        what = f"kernel {kernel!r}" if kernel else "any kernel"
        raise ResultNotFound(f"no {SCHEMA} result line of {what} in the output")
    return found[-1]
