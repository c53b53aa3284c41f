import math

import pytest

from xferscale.report.scaling import paper_efficiencies
from xferscale.scaling_model import (
    Interconnect, ScalingModel, compare, fit, paper_comparison, paper_r152x4_model, peak_tflops, with_fields,
)

LINKS = Interconnect(gpus_per_node=4, intra_busbw_gbps=200.0, inter_busbw_gbps=50.0, latency_us=0.0)


def test_allreduce_time_is_a_ring_at_the_slowest_link():
    model = ScalingModel(step_time_s=1.0, gradient_bytes=1e9, links=LINKS, overlap=0.0)
    assert model.allreduce_time(1) == 0.0
    assert model.allreduce_time(4) == pytest.approx(2 * 3 / 4 * 1e9 / 200e9)  # inside a node: NVLink
    assert model.allreduce_time(8) == pytest.approx(2 * 7 / 8 * 1e9 / 50e9)  # across nodes: InfiniBand
    assert model.efficiency(8) == pytest.approx(100 / (1 + 2 * 7 / 8 / 50))


def test_efficiency_is_100_at_one_gpu_and_falls_with_n():
    model = ScalingModel(step_time_s=0.2, gradient_bytes=3.75e9, overlap=0.1, jitter_cv=0.01)
    effs = model.efficiencies([1, 4, 64, 1024])
    assert effs[1] == 100.0
    assert list(effs.values()) == sorted(effs.values(), reverse=True)


def test_overlap_hides_communication_up_to_the_hidden_time():
    base = ScalingModel(step_time_s=1.0, gradient_bytes=1e9, links=LINKS, overlap=0.0)
    t_ar = base.allreduce_time(64)
    hidden = with_fields(base, overlap=t_ar)  # exactly enough compute to hide it
    assert hidden.step_time(64) == pytest.approx(1.0)
    half = with_fields(base, overlap=t_ar / 2)
    assert half.step_time(64) == pytest.approx(1.0 + t_ar / 2)


def test_fit_recovers_the_parameters_that_made_the_points():
    truth = ScalingModel(step_time_s=0.5, gradient_bytes=1e9, links=LINKS, overlap=0.2, jitter_cv=0.02)
    truth = with_fields(truth, latency_us=40.0)
    measured = truth.efficiencies([1, 4, 8, 32, 128, 512, 1024])
    start = with_fields(truth, overlap=0.6, jitter_cv=0.0, latency_us=1.0)
    result = fit(start, measured, free=("overlap", "jitter_cv", "latency_us"))
    assert result.max_abs_error < 0.01
    assert result.model.jitter_cv == pytest.approx(0.02, rel=0.05)
    with pytest.raises(ValueError, match="cannot fit"):
        fit(start, measured, free=("bogus",))


def test_paper_fig4_a_priori_and_fitted():
    paper = paper_efficiencies()
    assert paper[1024] == 93.77 and paper[64] == 97.07
    # A 3.75 GB ring all-reduce at 90 GB/s (~85 ms) hides behind a ~1.5 s step: the
    # bandwidth-only model says ~100 % and misses the measured fall-off by up to 6.2 points.
    a_priori, fitted = paper_comparison(paper)
    assert a_priori.max_abs_error == pytest.approx(100 - 93.77, abs=0.05)
    # Without any overlap the prediction is flat at ~94.6 %: right level, wrong trend.
    flat = compare(with_fields(paper_r152x4_model(), overlap=0.0), paper)
    assert 2.0 < flat.max_abs_error < 2.5
    # Little overlap plus a per-message cost growing with log2 N (Horovod's fused messages)
    # reproduces Fig. 4 to within half a point.
    assert fitted.max_abs_error < 0.6 and fitted.rms_error < 0.3
    assert fitted.model.overlap < 0.2 and 50 < fitted.model.links.latency_us < 300


def test_peak_flops_lookup():
    assert peak_tflops("NVIDIA A100-SXM4-40GB", "amp_bf16") == 312.0
    assert peak_tflops("NVIDIA H100 80GB HBM3", "tf32") == pytest.approx(494.7)
    assert peak_tflops("cpu", "fp32") is None
    assert not math.isnan(paper_r152x4_model().step_time_s)
