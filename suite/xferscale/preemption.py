"""SIGTERM / SIGUSR1 (SLURM pre-emption or time limit) noted for a training loop to act on.

The handler only records the signal (in memory); the loop checks it at a step boundary,
writes its state and stops cleanly, so a requeued job continues from there. Loader workers
never act on these signals themselves (:func:`loader_context`,
:func:`obey_only_main_process`). A command stopped this way
also leaves the marker file named by ``$XFERSCALE_STOP_MARKER`` (when set), from which a job
script that cannot trap the signal itself (ReFrame's) learns to requeue.
"""
from __future__ import annotations

import multiprocessing
import os
import signal
import threading
from multiprocessing import forkserver, resource_tracker
from multiprocessing.context import BaseContext
from pathlib import Path
from typing import Any

from xferscale.cluster import STOP_MARKER_ENV


# What SLURM (and a terminal) sends every process of a job step; loader workers outlive all three.
WORKER_STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGUSR1, signal.SIGINT})


def loader_context() -> BaseContext:
    """The multiprocessing context for loader workers, its fork server started immune.

    SLURM signals every process of the job step; a worker, or the fork server every worker is
    forked from, killed by it fails the main process's loader while the main process is saving
    its state. The fork server is started here with the stop signals blocked and keeps them
    blocked for life (they stay pending; it ends when the main process does), so every worker
    is born with them blocked, until :func:`obey_only_main_process` takes over. A fork server
    that something else in this process started earlier keeps its own mask.
    """
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, WORKER_STOP_SIGNALS)
    try:
        # The resource tracker, started on the way, unblocks SIGINT and SIGTERM in the caller
        # as its start ends (CPython's resource_tracker.ensure_running): start it first, then
        # block again for the fork server.
        resource_tracker.ensure_running()
        signal.pthread_sigmask(signal.SIG_BLOCK, WORKER_STOP_SIGNALS)
        forkserver.ensure_running()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
    return multiprocessing.get_context("forkserver")


def obey_only_main_process(main_pid: int, _worker_id: int | None = None) -> None:
    """In a loader's worker process (``functools.partial(obey_only_main_process, os.getpid())``
    as ``worker_init_fn``; started from :func:`loader_context`): SIGUSR1 and SIGINT are
    ignored, and SIGTERM, kept blocked, is taken by a thread that ends the worker only when
    the main process sent it (the loader's shutdown of a stuck worker, the interpreter's exit
    terminating its daemonic children). The main process decides when its workers end."""
    signal.pthread_sigmask(signal.SIG_BLOCK, WORKER_STOP_SIGNALS)  # already, when born from the fork server
    for sig in WORKER_STOP_SIGNALS - {signal.SIGTERM}:
        signal.signal(sig, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, WORKER_STOP_SIGNALS - {signal.SIGTERM})
    # SIGTERM must stay blocked (not ignored, which would discard it) for sigwaitinfo to see it;
    # threads started later inherit the block from this one.
    threading.Thread(target=_end_on_sigterm_from, args=(main_pid,), name="sigterm-from-main", daemon=True).start()


def _end_on_sigterm_from(main_pid: int) -> None:
    while True:
        if signal.sigwaitinfo({signal.SIGTERM}).si_pid == main_pid:
            # exit 0 as torch's own worker handler does for its parent's SIGTERM (a worker killed
            # by a signal reads as a failure to a loader that started it with fork)
            os._exit(0)


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

    @property
    def cause(self) -> int | str:
        """Why the ranks agreed to stop: this process's signal, or another rank's."""
        return StopRequest._received or "signal on another rank"

    def __enter__(self) -> "StopRequest":
        if StopRequest._depth == 0:
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        StopRequest._depth += 1
        return self

    @staticmethod
    def _handle(signum, _frame) -> None:
        StopRequest._received = signum

    def __exit__(self, *exc) -> None:
        StopRequest._depth -= 1
        if StopRequest._depth == 0:
            for sig, handler in self._previous.items():
                signal.signal(sig, handler)
            StopRequest._received = None

