"""SIGTERM / SIGUSR1 (SLURM pre-emption or time limit) noted for a training loop to act on.

The handler only records the signal; the loop checks it at a step boundary, writes its
state and stops cleanly, so a requeued job continues from there. A command stopped this way
also leaves the marker file named by ``$XFERSCALE_STOP_MARKER`` (when set), from which a job
script that cannot trap the signal itself (ReFrame's) learns to requeue.
"""
from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

from xferscale.cluster import STOP_MARKER_ENV


def write_stop_marker(message: str) -> Path | None:
    """Write ``$XFERSCALE_STOP_MARKER`` (if set): the run stopped with its state saved."""
    target = os.environ.get(STOP_MARKER_ENV)
    if not target:
        return None
    path = Path(target)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(message + "\n")
    os.replace(tmp, path)
    return path


class StopRequest:
    SIGNALS = (signal.SIGTERM, signal.SIGUSR1)

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "StopRequest":
        for sig in self.SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, _frame) -> None:
        self.signum = signum

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
