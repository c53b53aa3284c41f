"""SIGTERM / SIGUSR1 (SLURM pre-emption or time limit) noted for a training loop to act on.

The handler only records the signal; the loop checks it at a step boundary, writes its
state and stops cleanly, so a requeued job continues from there.
"""
from __future__ import annotations

import signal
from typing import Any


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
