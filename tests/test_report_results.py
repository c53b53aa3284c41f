"""Aggregation, the paper-layout tables, figures and power laws on hand-made records."""
from __future__ import annotations

import csv
import io

import numpy as np
import pytest

from xferscale.cli import main
from xferscale.report import tables
from xferscale.report.aggregate import aggregate, full_shot
from xferscale.report.paper import paper_value, source_images
from xferscale.report.powerlaw import Point, fit_all, fit_power_law
from xferscale.report.results_report import write_results_report
from xferscale.results import ResultError, ResultRecord, ResultStore


def rec(source, model, target, shots, seed, value, metric="acc"):
    return ResultRecord(source, model, target, shots, seed, metric, value, 10, 1.0, "h")


@pytest.fixture
def records():
    out = []
    # R50x1 / in21k on CIFAR-10, full shot: seeds 0, 1, 2 of an expected 0-2 ...
    out += [rec("in21k", "r50x1", "cifar10", "full", s, v) for s, v in enumerate([95.0, 96.0, 97.0])]
    # ... and seed 1 missing on in1k
    out += [rec("in1k", "r50x1", "cifar10", "full", s, v) for s, v in [(0, 93.0), (2, 94.0)]]
    out += [rec("in21k", "r50x1", "cifar10", 1, s, v) for s, v in enumerate([40.0, 50.0, 60.0])]
    out += [rec("in21k", "r50x1", "cifar10", 10, s, v) for s, v in enumerate([70.0, 72.0, 74.0])]
    # a medical AUC target with one seed undefined
    out += [rec("chexpert", "r50x1", "padchest_cl", "full", 0, 72.0, "auc"),
            rec("chexpert", "r50x1", "padchest_cl", "full", 1, None, "auc")]
    # a source the paper does not have
    out += [rec("default", "tiny", "digits", "full", s, 90.0 + s) for s in range(3)]
    return out


def test_aggregate_mean_std_and_seed_counts(records):
    cells = aggregate(records)
    c = cells[("in21k", "r50x1", "cifar10", "full")]
    assert c.mean == pytest.approx(96.0) and c.std == pytest.approx(1.0)  # sample std of 95, 96, 97
    missing = cells[("in1k", "r50x1", "cifar10", "full")]
    assert missing.n == 2 and missing.missing_seeds([0, 1, 2]) == [1]
    auc = cells[("chexpert", "r50x1", "padchest_cl", "full")]
    assert auc.mean == pytest.approx(72.0) and auc.std is None and auc.undefined_seeds == [1]


def test_duplicate_seed_is_refused(records):
    with pytest.raises(ResultError, match="two records"):
        aggregate(records + [records[0]])


def test_table1_cells_carry_paper_value_and_difference(records):
    built = {t.name: t for t in tables.build_tables(full_shot(aggregate(records)))}
    t1 = built["table1"]
    assert t1.targets[:4] == ["cifar10", "cifar100", "flowers102", "pets"]
    assert ("r152x4", "in21k") in t1.rows  # paper rows stay, as gaps
    cell = t1.cell("r50x1", "in21k", "cifar10")
    assert cell.paper.mean == 95.78 and cell.diff == pytest.approx(96.0 - 95.78)
    md = tables.render_markdown(t1, expected_seeds=3)
    assert "96.00 ± 1.00 [3/3] · paper 95.78 ± 0.09 · Δ +0.22" in md
    assert "93.50 ± 0.71 [2/3]" in md  # the missing seed shows in the count
    assert "— [0/3] · paper 97.82 ± 0.07 · Δ —" in md  # a run not done is a gap
    rows = list(csv.DictReader(io.StringIO(tables.render_csv(t1))))
    r = next(r for r in rows if (r["model"], r["source"]) == ("r50x1", "in1k"))
    assert r["cifar10_seeds"] == "2" and float(r["cifar10_diff"]) == pytest.approx(93.5 - 94.26)
    assert r["cifar100_mean"] == "" and r["cifar100_paper"] == "75.9"
    assert r"\pm" in tables.render_latex(t1)


def test_table2_and_other_rows(records):
    built = {t.name: t for t in tables.build_tables(full_shot(aggregate(records)))}
    md2 = tables.render_markdown(built["table2"], 3)
    assert "72.00 [2/3], 1 undefined · paper 73.01 ± 0.12 · Δ -1.01" in md2
    assert built["other"].rows == [("tiny", "default")]
    assert "paper" not in tables.render_markdown(built["other"], 3).split("\n", 4)[-1]


def test_paper_lookups():
    assert paper_value("r152x4", "l_med", "covidx").mean == 83.00
    assert paper_value("r50x1", "in21k", "mimic_cxr").where == "poster_table1"
    assert paper_value("tiny", "in21k", "cifar10") is None
    assert source_images("chexpert_mimic") == pytest.approx(224e3 + 377e3)


def test_power_law_fit_recovers_exponent():
    x = np.array([1e5, 1e6, 1e7])
    a, k, r2 = fit_power_law(x, 50 * x**-0.2)
    assert k == pytest.approx(-0.2) and a == pytest.approx(50) and r2 == pytest.approx(1.0)
    with pytest.raises(ValueError, match="two distinct"):
        fit_power_law([1, 1], [2, 3])


def test_power_law_groups_by_axis():
    points = [Point("paper", "cifar10", "in1k", "r50x1", 94.26), Point("paper", "cifar10", "in21k", "r50x1", 95.78),
              Point("paper", "cifar10", "in1k", "r152x4", 96.93)]
    fits = {(f.axis, f.group): f for f in fit_all(points)}
    assert fits[("data", "r50x1/natural")].k < 0  # more data, less error
    assert fits[("model", "in1k")].x == [25.5, 928.0]  # the paper's parameter counts


def test_report_writes_tables_and_nonempty_figures(records, tmp_path):
    report = write_results_report(records, tmp_path / "rep", expected_seeds=[0, 1, 2], latex=True)
    names = {p.name for p in report.files}
    for name in ("table1.md", "table1.csv", "table1.tex", "table2.md", "other.md", "cells.csv", "report.md",
                 "fewshot.png", "fewshot.pdf", "fullshot.png", "fullshot.pdf", "powerlaw_data.png",
                 "powerlaw_model.pdf"):
        assert name in names
    for path in report.files:
        assert path.stat().st_size > 0, path
    assert (tmp_path / "rep/fewshot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "rep/fullshot.pdf").read_bytes()[:5] == b"%PDF-"
    assert "missing seeds 1" in report.markdown


def test_report_command_reads_a_results_folder(records, tmp_path, capsys):
    store = ResultStore(tmp_path / "res")
    for r in records:
        store.save(r)
    assert main(["report", "results", str(tmp_path / "res"), "--seeds", "0-2", "--no-paper-fits"]) == 0
    out = capsys.readouterr().out
    assert "Table 1" in out and (tmp_path / "res/report/fewshot.png").stat().st_size > 0
    with pytest.raises(SystemExit, match="does not exist"):
        main(["report", "results", str(tmp_path / "nothing")])


def test_table2_shows_the_papers_dash_for_the_4set_on_padchest_cl():
    # the paper prints "--" for CheXpert+MIMIC+NIH+PadChest -> PadChest-Cl; the poster's L-MED value
    # (78.33 / 82.68) on PadChest targets is the +NIH row's, which keeps its own value
    assert paper_value("r50x1", "chexpert_mimic_nih_padchest", "padchest_cl") is None
    assert paper_value("r152x4", "l_med", "padchest_cl") is None
    assert paper_value("r50x1", "chexpert_mimic_nih", "padchest_cl").mean == 78.33
    assert paper_value("r152x4", "chexpert_mimic_nih", "padchest").mean == 75.23  # poster's L-MED, 3-set
    assert paper_value("r152x4", "chexpert_mimic_nih_padchest", "padchest") is None
    assert paper_value("r152x4", "l_med", "mimic_cxr").mean == 88.00  # other targets: the 4-set
    built = {t.name: t for t in tables.build_tables({})}
    md = tables.render_markdown(built["table2"], 5)
    row = next(line for line in md.splitlines() if line.startswith("| r50x1 | chexpert_mimic_nih_padchest |"))
    padchest_cl = built["table2"].targets.index("padchest_cl")
    assert row.split(" | ")[2 + padchest_cl] == "--"
    plus_nih = next(line for line in md.splitlines() if line.startswith("| r50x1 | chexpert_mimic_nih |"))
    assert "paper 78.33 ± 0.07" in plus_nih.split(" | ")[2 + padchest_cl]
    ours = full_shot(aggregate([rec("chexpert_mimic_nih_padchest", "r50x1", "padchest_cl", "full", s, 80.0 + s, "auc")
                                for s in range(2)]))
    t2 = {t.name: t for t in tables.build_tables(ours)}["table2"]
    assert "80.50 ± 0.71 [2/5] · paper --" in tables.render_markdown(t2, 5)
    assert "(paper --)" in tables.render_latex(t2)
    row = next(r for r in csv.DictReader(io.StringIO(tables.render_csv(t2)))
               if (r["model"], r["source"]) == ("r50x1", "chexpert_mimic_nih_padchest"))
    assert row["padchest_cl_paper"] == "--" and row["padchest_cl_diff"] == ""


def test_paper_std_is_over_duplicated_rows_and_judges_the_difference():
    # five runs, each written twice, std with n-1 over the 10 rows (pandas), as the paper's code's CSVs
    runs = np.array([78.35, 78.31, 78.24, 78.28, 78.44])
    printed = np.std(np.repeat(runs, 2), ddof=1)
    assert printed * tables.PAPER_STD_TO_SEED_STD == pytest.approx(np.std(runs, ddof=1))
    paper = paper_value("r50x1", "in1k", "covidx")  # 76.30 ± 1.30
    assert paper.seed_std == pytest.approx(1.30 * np.sqrt(9 / 8))
    # 2 x 1.30 = 2.60 < Δ = 2.70 <= 2 x 1.379 = 2.76: within only with the 5-seed std
    assert paper.within(76.30 + 2.70) and not paper.within(76.30 + 2.80)
    assert paper_value("r50x1", "in21k", "cifar10").within(95.78 - 1.0)  # the 1-point floor
    ours = full_shot(aggregate([rec("in1k", "r50x1", "covidx", "full", s, 79.0 + s / 10) for s in range(3)]))
    md = tables.render_markdown({t.name: t for t in tables.build_tables(ours)}["table1"], 3)
    assert "Δ +2.80 (outside)" in md and "each run twice" in md and "6 % smaller" in md
