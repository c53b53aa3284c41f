"""SIGTERM / SIGUSR1 (SLURM pre-emption or time limit) noted for a training loop to act on.

The handler only records the signal; the loop checks it at a step boundary, writes its
state and stops cleanly, so a requeued job continues from there. A command stopped this way
also leaves the marker file named by ``$XFERSCALE_STOP_MARKER`` (when set), from which a job
script that cannot trap the signal itself (ReFrame's) learns to requeue.
"""
from __future__ import annotations

import os
import signal
import tempfile
from pathlib import Path
from typing import Any

from xferscale.cluster import STOP_MARKER_ENV


def ignore_stop_signals(main_pid: int, _worker_id: int | None = None) -> None:
    """In a loader's worker process (``functools.partial(ignore_stop_signals, os.getpid())``
    as ``worker_init_fn``): SLURM signals every process of the job step, workers included,
    and the main process, saving its state, still needs them. SIGUSR1 is ignored; SIGTERM
    is ignored while the main process says it is stopping (:func:`stopping_flag`), and
    otherwise ends the worker as before, so the loader's own shutdown (which terminates
    stuck workers) and the interpreter's exit still work."""
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)

    def on_term(signum, _frame) -> None:
        if stopping_flag(main_pid).exists():
            return
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_term)


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
    """SIGTERM/SIGUSR1 noted while the ``with`` block runs; nested blocks share one record.

    The command line installs the outermost one before the command's first import, so a
    signal during start-up, between two transfer runs or during an evaluation is noted too
    and acted on at the next point where the state can be saved, instead of killing the
    process; the inner ones (the training loops) read the same record.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
    _received: int | None = None  # shared by every instance
    _depth = 0

    def __init__(self):
        self._previous: dict[int, Any] = {}

    @property
    def signum(self) -> int | None:
        return StopRequest._received

    def __enter__(self) -> "StopRequest":
        if StopRequest._depth == 0:
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        StopRequest._depth += 1
        return self

    @staticmethod
    def _handle(signum, _frame) -> None:
        StopRequest._received = signum
        try:  # tells this process's loader workers to outlive the signal (ignore_stop_signals)
            stopping_flag(os.getpid()).touch()
        except OSError:
            pass

    def __exit__(self, *exc) -> None:
        StopRequest._depth -= 1
        if StopRequest._depth == 0:
            for sig, handler in self._previous.items():
                signal.signal(sig, handler)
            StopRequest._received = None
            stopping_flag(os.getpid()).unlink(missing_ok=True)


def stopping_flag(main_pid: int) -> Path:
    """The file that says: process ``main_pid`` got a stop signal and is saving its state."""
    return Path(tempfile.gettempdir()) / f"xferscale-stopping-{main_pid}"
