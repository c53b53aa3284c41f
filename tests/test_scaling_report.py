import argparse
import shutil
from pathlib import Path

import pytest

from xferscale.report import scaling
from xferscale.report.perflog import PerflogError, read_perflog

FIXTURE = Path(__file__).parent / "fixtures" / "perflogs"

# The columns ReFrame 4 writes for ScalingSweep (its builtin perflog format), shortened.
HEADER = ("result|job_completion_time|model|name|num_workers|partition|"
          "efficiency_value|efficiency_unit|efficiency_ref|efficiency_lower_thres|efficiency_upper_thres|"
          "throughput_total_value|throughput_total_unit|throughput_total_ref|throughput_total_lower_thres|"
          "throughput_total_upper_thres|step_time_p50_value|step_time_p50_unit|step_time_p50_ref|"
          "step_time_p50_lower_thres|step_time_p50_upper_thres|precision|system")


def _row(n, total, eff, when, ref="0", lower="None", result="pass", step="100.0"):
    return (f"{result}|{when}|r152x4|ScalingSweep %num_workers={n}|{n}|booster|{eff}|%|{ref}|{lower}|None|"
            f"{total}|img/s|0|None|None|{step}|ms|0|None|None|fp32|juwels_booster")


def _write(tmp_path, rows, name="ScalingSweep.log"):
    folder = tmp_path / "juwels_booster" / "booster"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text("\n".join([HEADER, *rows]) + "\n")
    return tmp_path


def test_efficiency_is_recomputed_from_the_throughputs(tmp_path):
    root = _write(tmp_path, [
        _row(1, 10.0, 100.0, "2026-01-01T00:00:00"),
        _row(4, 38.0, 0.0, "2026-01-01T01:00:00"),  # logged E is ignored when T(1) is known
        _row(64, 600.0, 93.75, "2026-01-01T02:00:00", ref="97.07", lower="-0.03"),
    ])
    (series,) = scaling.scaling_series(scaling.read_perflogs(root, "ScalingSweep"))
    effs = {p.n: p.efficiency for p in series.points}
    assert effs == {1: 100.0, 4: pytest.approx(95.0), 64: pytest.approx(93.75)}
    p64 = series.points[-1]
    assert p64.per_gpu == pytest.approx(9.375)
    assert p64.verdict.startswith("FAIL")  # 93.75 < 97.07 * 0.97 = 94.16
    assert series.points[1].verdict == "pass (no ref)"


def test_latest_run_of_each_n_wins_and_failed_runs_are_skipped(tmp_path):
    root = _write(tmp_path, [
        _row(1, 10.0, 100.0, "2026-01-01T00:00:00"),
        _row(2, 12.0, 60.0, "2026-01-01T00:10:00"),
        _row(2, 18.0, 90.0, "2026-01-02T00:10:00"),
        "fail|2026-01-03T00:00:00|r152x4|ScalingSweep %num_workers=2|2|booster|None|%|0|None|None|"
        "None|img/s|0|None|None|None|ms|0|None|None|fp32|juwels_booster",
    ])
    (series,) = scaling.scaling_series(scaling.read_perflogs(root))
    assert [(p.n, p.total) for p in series.points] == [(1, 10.0), (2, 18.0)]
    assert series.points[1].efficiency == pytest.approx(90.0)


def test_without_the_single_gpu_run_the_logged_efficiency_is_used(tmp_path):
    root = _write(tmp_path, [_row(8, 70.0, 87.5, "2026-01-01T00:00:00")])
    (series,) = scaling.scaling_series(scaling.read_perflogs(root))
    assert series.points[0].efficiency == 87.5


def test_malformed_perflog_names_file_and_line(tmp_path):
    root = _write(tmp_path, [_row(1, 10.0, 100.0, "t"), "pass|too|few"])
    with pytest.raises(PerflogError, match=r"ScalingSweep.log:3: 3 fields"):
        list(read_perflog(root / "juwels_booster" / "booster" / "ScalingSweep.log"))
    with pytest.raises(PerflogError, match="not a folder"):
        scaling.read_perflogs(tmp_path / "missing")


def _run_report(perflogs, out, *extra):
    parser = argparse.ArgumentParser()
    scaling.add_arguments(parser)
    return scaling.run(parser.parse_args([str(perflogs), "--out", str(out), *extra]))


def test_report_on_a_real_reframe_perflog(tmp_path, capsys):
    # FIXTURE holds the perflogs of a real `checks/run_ci.sh` run (ReFrame 4.10, local:cpu).
    perflogs = tmp_path / "perflogs"
    shutil.copytree(FIXTURE, perflogs)
    out = tmp_path / "report"
    assert _run_report(perflogs, out) == 0
    table = (out / "scaling.md").read_text()
    assert "| 2 |" in table and "local:cpu tiny fp32" in table
    rows = (out / "scaling.csv").read_text().splitlines()
    assert rows[0].startswith("system,partition,model") and len(rows) == 3
    n1, n2 = (r.split(",") for r in rows[1:])
    # E(2) = 100 * T(2) / (2 * T(1)), from the logged throughputs
    assert float(n2[7]) == pytest.approx(100 * float(n2[5]) / (2 * float(n1[5])), rel=1e-4)
    assert (out / "scaling_local_cpu_tiny_fp32_torch.png").stat().st_size > 10_000
    assert "Scaling model:" in capsys.readouterr().out


def test_report_fails_on_a_missed_reference_and_on_no_data(tmp_path):
    root = _write(tmp_path / "logs", [
        _row(1, 10.0, 100.0, "2026-01-01T00:00:00"),
        _row(64, 500.0, 78.1, "2026-01-01T02:00:00", ref="97.07", lower="-0.03"),
    ])
    assert _run_report(root, tmp_path / "out", "--no-figure") == 1
    assert "FAIL" in (tmp_path / "out" / "scaling.md").read_text()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _run_report(empty, tmp_path / "out2", "--no-figure") == 1


def test_paper_comparison_needs_no_perflogs(capsys):
    parser = argparse.ArgumentParser()
    scaling.add_arguments(parser)
    assert scaling.run(parser.parse_args(["--paper"])) == 0
    out = capsys.readouterr().out
    assert "| 1024 | 93.77 |" in out and "max error" in out
    assert scaling.run(parser.parse_args([])) == 2
