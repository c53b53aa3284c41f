import argparse
import io
from contextlib import redirect_stdout

import pytest

from xferscale.kernels import train_step
from xferscale.kernels.output import parse_result


def test_summary_arithmetic():
    out = train_step.summarise([10.0, 30.0], [100.0, 110.0, 120.0, 400.0])
    assert out["images_per_s_total"] == 40.0 and out["images_per_s_min_rank"] == 10.0
    assert out["step_time_ms_p50"] == pytest.approx(115.0)
    assert out["step_time_ms_mean"] == pytest.approx(182.5)
    assert out["step_time_ms_p99"] > out["step_time_ms_p90"] > out["step_time_ms_p50"]


def test_bench_train_runs_the_trainer_step_and_reports_consistently(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    parser = argparse.ArgumentParser()
    train_step.add_arguments(parser)
    args = parser.parse_args(["--model", "tiny", "--batch-size", "4", "--image-size", "32", "--steps", "3",
                              "--warmup", "1", "--num-classes", "10"])
    stream = io.StringIO()
    with redirect_stdout(stream):
        returned = train_step.run(args)
    result = parse_result(stream.getvalue(), "train")
    assert result["images_per_s_total"] == pytest.approx(returned["images_per_s_total"])
    assert result["world_size"] == 1 and result["steps"] == 3 and result["batch_per_rank"] == 4
    assert result["images_per_s_total"] == pytest.approx(sum(result["images_per_s_per_rank"]))
    assert result["images_per_s_total"] > 0 and result["peak_memory_gb"] > 0
    # FLOPs are counted on a real step: forward + backward is ~3x the forward alone.
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from xferscale.models import build_model

    counter = FlopCounterMode(display=False)
    with counter:
        build_model("tiny", 10)(torch.zeros(1, 3, 32, 32))
    assert 2.5 < result["flops_per_image"] / counter.get_total_flops() < 3.5
    assert result["mfu"] is None  # no known peak for a CPU
    assert "[train] images/s total" in stream.getvalue()


def test_bad_precision_is_rejected_by_name():
    parser = argparse.ArgumentParser()
    train_step.add_arguments(parser)
    with pytest.raises(SystemExit):
        parser.parse_args(["--precision", "fp8"])


def _run_kernel(module, argv, kernel):
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    stream = io.StringIO()
    with redirect_stdout(stream):
        returned = module.run(parser.parse_args(argv))
    return returned, parse_result(stream.getvalue(), kernel), stream.getvalue()


def test_compare_baseline_reports_both_loops_and_their_ratio():
    returned, result, text = _run_kernel(train_step, [
        "--model", "tiny", "--batch-size", "4", "--image-size", "32", "--steps", "2", "--warmup", "1",
        "--repeats", "2", "--num-classes", "10", "--compare-baseline", "--fused-sgd"], "train_compare")
    assert result["ours_images_per_s"] > 0 and result["baseline_images_per_s"] > 0
    assert len(result["ratios"]) == 2 and result["ratio_min"] <= result["ratio_median"] <= result["ratio_max"]
    assert result["options"]["fused_sgd"] is True and result["options"]["channels_last"] is False
    assert "ratio ours/baseline" in text and returned["ratios"] == result["ratios"]


def test_agc_kernel_times_both_implementations_on_real_gradients():
    from xferscale.kernels import agc

    _, result, text = _run_kernel(agc, ["--model", "tiny", "--repeats", "2"], "agc")
    # tiny: every weight of the body, the head excluded
    assert result["tensors"] > 20 and result["parameters"] < 600_000
    assert result["per_parameter_ms"] > 0 and result["batched_ms"] > 0
    assert result["speedup"] == pytest.approx(result["per_parameter_ms"] / result["batched_ms"])
    assert "[agc] speedup" in text
