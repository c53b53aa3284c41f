"""``xferscale transfer`` end to end on the real digits data, as a user runs it."""
from __future__ import annotations

import pytest

from _transfer_fixtures import one_thread, write_checkpoint  # noqa: F401
from xferscale.cli import main
from xferscale.results import ResultStore


def test_missing_default_checkpoint_says_which_command_makes_it(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["transfer"]) == 2
    err = capsys.readouterr().err
    assert "runs/default/checkpoint.pt" in err and "xferscale pretrain" in err


def test_transfer_on_digits_writes_records_prints_table_and_restarts_cleanly(tmp_path, capsys):
    ckpt = write_checkpoint(tmp_path / "ckpt.pt", name="tiny_synthetic")
    args = ["transfer", "--checkpoint", str(ckpt), "--results", str(tmp_path / "res"), "--shots", "2,full",
            "--seeds", "0-1", "--schedule-scale", "0.01", "--crop", "8", "--baselines", "none", "--no-progress"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "NOTE: not the paper's scale: schedule x0.01" in out
    assert "| tiny -> digits [acc]: shots | synthetic |" in out and "| full | " in out and "[2/2] |" in out
    records = list(ResultStore(tmp_path / "res").records())
    assert sorted((str(r.shots), r.seed) for r in records) == [("2", 0), ("2", 1), ("full", 0), ("full", 1)]
    assert all(r.source == "synthetic" and r.steps == 5 for r in records)
    assert (tmp_path / "res/report/fewshot.png").stat().st_size > 0

    assert main(args) == 0
    assert "0 run(s) done, 4 already finished" in capsys.readouterr().out


def test_bad_grid_arguments_are_reported(tmp_path, capsys):
    ckpt = write_checkpoint(tmp_path / "ckpt.pt")
    assert main(["transfer", "--checkpoint", str(ckpt), "--shots", "0", "--results", str(tmp_path)]) == 2
    assert "shots: 0 must be a positive number" in capsys.readouterr().err
    assert main(["transfer", "--checkpoint", str(ckpt), "--target", "cifar10", "--data", str(tmp_path / "x")]) == 2
    assert "xferscale prepare cifar10" in capsys.readouterr().err


def test_report_subcommand_of_a_missing_module_says_so(monkeypatch, capsys):
    from xferscale.commands import report

    monkeypatch.setitem(report.SUBCOMMANDS, "scaling", ("xferscale.report.not_installed", "scaling"))
    assert main(["report", "scaling", "--anything"]) == 2
    assert "needs module xferscale.report.not_installed" in capsys.readouterr().out


@pytest.mark.slow
def test_two_ranks_under_torchrun_share_the_grid(tmp_path):
    from conftest import run_xferscale

    ckpt = write_checkpoint(tmp_path / "ckpt.pt", name="tiny_synthetic")
    proc = run_xferscale("transfer", "--checkpoint", str(ckpt), "--results", str(tmp_path / "res"), "--shots", "1,2",
                         "--seeds", "0", "--schedule-scale", "0.01", "--crop", "8", "--baselines", "none",
                         "--no-progress", nproc=2)
    assert "[rank 0/2] 1 of 2 runs here" in proc.stdout
    records = list(ResultStore(tmp_path / "res").records())
    assert sorted(r.shots for r in records) == [1, 2]
    assert {r.config["launcher_world_size"] for r in records} == {2}
    assert len({r.config["pid"] for r in records}) == 2  # each run was made by its own rank's process


def test_sigterm_saves_the_run_and_the_same_command_continues_it(tmp_path):
    import signal
    import time

    from conftest import run_xferscale, start_xferscale

    ckpt = write_checkpoint(tmp_path / "ckpt.pt", name="tiny_synthetic")
    args = ["transfer", "--checkpoint", str(ckpt), "--results", str(tmp_path / "res"), "--shots", "full",
            "--seeds", "0", "--schedule-scale", "0.2", "--crop", "8", "--checkpoint-every", "1", "--baselines", "none",
            "--no-progress"]
    proc = start_xferscale(*args)
    deadline = time.time() + 120
    while time.time() < deadline and not list((tmp_path / "res").glob(".work/**/state.pt")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    assert "stopped by signal" in stderr and "run the same command again" in stderr
    assert not list(ResultStore(tmp_path / "res").records())

    run_xferscale(*args)
    (record,) = ResultStore(tmp_path / "res").records()
    assert record.steps == 100 and 0 < record.detail["resumed_from_step"] < 100
