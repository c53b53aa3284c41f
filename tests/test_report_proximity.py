"""Source-target proximity: the Fréchet distance, gains beside it, and the command."""
from __future__ import annotations

import numpy as np
import pytest

from _transfer_fixtures import one_thread, write_checkpoint  # noqa: F401
from xferscale.cli import main
from xferscale.report.aggregate import aggregate, full_shot
from xferscale.report.proximity import ProximityRow, attach_gains, feature_stats, frechet_distance, read_rows
from xferscale.results import ResultRecord, ResultStore


def test_frechet_distance_of_gaussians_computed_by_hand():
    # Equal covariances: only the means differ -> ||mu1 - mu2||^2
    assert frechet_distance(np.zeros(2), np.eye(2), np.array([3.0, 4.0]), np.eye(2)) == pytest.approx(25.0)
    # 1-D: (m1 - m2)^2 + s1 + s2 - 2 sqrt(s1 s2) = 1 + 4 + 1 - 2 * 2 = 2
    assert frechet_distance(np.array([1.0]), np.array([[4.0]]), np.array([0.0]), np.array([[1.0]])) == pytest.approx(2.0)
    # Diagonal: sum over dimensions of (sqrt(a) - sqrt(b))^2
    d = frechet_distance(np.zeros(2), np.diag([9.0, 1.0]), np.zeros(2), np.diag([1.0, 4.0]))
    assert d == pytest.approx((3 - 1) ** 2 + (1 - 2) ** 2)


def test_same_distribution_is_near_zero_and_shift_grows_it():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(4000, 3)), rng.normal(size=(4000, 3))
    near = frechet_distance(*feature_stats(a), *feature_stats(b))
    far = frechet_distance(*feature_stats(a), *feature_stats(b + 2.0))
    assert near < 0.02 and far == pytest.approx(12.0, rel=0.05)
    with pytest.raises(ValueError, match="dimensions differ"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))


def rec(source, model, value, seed=0, params=1.0):
    return ResultRecord(source, model, "digits", "full", seed, "acc", value, 5, 1.0, "h",
                        config={"model_params_m": params})


def test_gains_come_from_the_results():
    records = [rec("big", "small_net", 60.0, params=1.0), rec("big", "large_net", 70.0, params=9.0),
               rec("small", "small_net", 55.0, params=1.0)]
    full = full_shot(aggregate(records))
    row = attach_gains(ProximityRow("big", "digits", "small_net/big", 1.5, 10, 10), "small_net", full,
                       {"small_net": 1.0, "large_net": 9.0}, baseline="small")
    assert row.full_shot_value == 60.0 and row.model_gain == pytest.approx(10.0)
    assert row.source_gain == pytest.approx(5.0) and row.baseline_source == "small"


def test_command_measures_digits_against_the_checkpoints_source(tmp_path, capsys):
    ckpt = write_checkpoint(tmp_path / "ckpt.pt", name="tiny_synthetic")
    store = ResultStore(tmp_path / "res")
    store.save(ResultRecord("synthetic", "tiny", "digits", "full", 0, "acc", 42.0, 5, 1.0, "h"))
    args = ["report", "proximity", "--checkpoint", str(ckpt), "--results", str(tmp_path / "res"),
            "--max-images", "64", "--image-size", "8", "--out", str(tmp_path / "prox")]
    assert main(args) == 0
    rows = read_rows(tmp_path / "prox/proximity.csv")
    assert len(rows) == 1 and rows[0].key == ("synthetic", "digits", "tiny/synthetic")
    assert rows[0].frechet_distance > 0 and rows[0].full_shot_value == 42.0
    assert rows[0].source_images == 64 and rows[0].target_images == 64
    assert "| tiny/synthetic | synthetic | digits |" in capsys.readouterr().out
    assert main(args) == 0  # a second call updates the row, it does not add one
    assert len(read_rows(tmp_path / "prox/proximity.csv")) == 1
