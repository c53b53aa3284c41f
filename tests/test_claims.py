"""Claims of transfer runs in a results folder that several jobs share: one holder per run,
a dead job's claim taken over by exactly one job, a failed claim write leaves nothing."""
from __future__ import annotations

import json
import multiprocessing
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from xferscale.results import ResultError, ResultStore, RunKey

ROUNDS = 1000


def _dead_pid() -> int:
    return int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True).stdout)


def _key(round_: int) -> RunKey:
    return RunKey("synth", "tiny", "synth", 1, round_)


def _claim_path(store: ResultStore, key: RunKey) -> Path:
    return store.work_dir(key).with_suffix(".claim")


def _take_over(root: str, barrier, results) -> None:
    """One job: in every round, at the same moment as the other, claim the run a dead job held."""
    store = ResultStore(root)
    won = []
    for i in range(ROUNDS):
        barrier.wait()
        claim = store.claim(_key(i))
        if claim is not None:
            won.append((i, claim.token))
    results.put((os.getpid(), won))


def test_two_jobs_taking_over_one_dead_claim_never_both_get_it(tmp_path):
    store = ResultStore(tmp_path)
    dead = {"host": socket.gethostname(), "pid": _dead_pid(), "job": None}  # this host, process gone
    for i in range(ROUNDS):
        path = _claim_path(store, _key(i))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(dead))
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    jobs = [ctx.Process(target=_take_over, args=(str(tmp_path), barrier, results)) for _ in range(2)]
    for job in jobs:
        job.start()
    outcome = dict(results.get(timeout=120) for _ in jobs)
    for job in jobs:
        job.join(30)
    assert [job.exitcode for job in jobs] == [0, 0]
    winners: dict[int, list[tuple[int, str]]] = {}
    for pid, won in outcome.items():
        for i, token in won:
            winners.setdefault(i, []).append((pid, token))
    both = sorted(i for i, w in winners.items() if len(w) > 1)
    assert not both, f"both jobs got the claim in {len(both)} of {ROUNDS} rounds"
    assert sorted(winners) == list(range(ROUNDS))  # and one of them did, every round
    for i, [(pid, token)] in winners.items():  # the claim file names the winner
        owner = json.loads(_claim_path(store, _key(i)).read_text())
        assert (owner["pid"], owner["token"]) == (pid, token)


def test_a_job_releases_only_its_own_claim(tmp_path):
    store = ResultStore(tmp_path, stale_after_s=60)
    key = _key(0)
    mine = store.claim(key)
    assert mine is not None
    path = _claim_path(store, key)
    # this job's heartbeat was late: another node's job took the run over
    other = {"host": "jwb0042.juwels", "pid": 4242, "job": "123", "token": "theirs"}
    path.write_text(json.dumps(other))
    mine.release()
    assert json.loads(path.read_text()) == other  # theirs is kept
    assert store.claim(key) is None  # and still holds the run
    # the owner's own release removes it
    path.unlink()
    again = store.claim(key)
    again.release()
    assert not path.exists()


FULL_DISK_CLAIM = """
import resource, signal, sys
from xferscale.results import ResultError, ResultStore, RunKey
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG) instead of killing
resource.setrlimit(resource.RLIMIT_FSIZE, (0, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
try:
    ResultStore(sys.argv[1]).claim(RunKey("synth", "tiny", "synth", 1, 0))
except ResultError as err:
    print(err)
    sys.exit(2)
"""


def test_a_failed_claim_write_leaves_nothing_and_the_run_is_claimed_at_the_next_try(tmp_path):
    proc = subprocess.run([sys.executable, "-c", FULL_DISK_CLAIM, str(tmp_path)], capture_output=True, text=True,
                          timeout=120)
    store = ResultStore(tmp_path)
    path = _claim_path(store, _key(0))
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout.strip() == f"{path}: cannot claim {_key(0)}: File too large"  # one line: file and cause
    assert not [p.name for p in path.parent.iterdir() if ".claim" in p.name and p.name != ".claims.lock"]
    assert store.claim(_key(0)) is not None  # the re-run takes it at once


def test_a_claim_naming_no_owner_is_taken_over_at_once(tmp_path):
    """Left by a version that wrote claims in place, or not a claim at all: no live job's."""
    store = ResultStore(tmp_path)
    for i, content in enumerate(["", "{", "[1, 2]", json.dumps({"host": "x"})]):
        path = _claim_path(store, _key(i))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
        assert store.claim(_key(i)) is not None, content


def test_a_claim_folder_that_cannot_be_made_is_one_line(tmp_path):
    store = ResultStore(tmp_path)
    (tmp_path / ".work").write_text("not a folder")
    with pytest.raises(ResultError) as err:
        store.claim(_key(0))
    assert str(err.value) == f"{_claim_path(store, _key(0))}: cannot claim {_key(0)}: Not a directory"
