"""GPU energy: the meter's arithmetic with a counter passed in, "no counter" without one, and
the kWh projection of the paper's pre-training runs."""
from __future__ import annotations

import argparse
import time

import pytest
import torch

from xferscale import energy
from xferscale.kernels import node


class SteppedCounter:
    """An energy counter that reads ``readings`` in turn (mJ), as NVML's total energy would."""

    source = "test counter"

    def __init__(self, *readings: float):
        self.readings = list(readings)
        self.closed = False

    def millijoules(self) -> float:
        return self.readings.pop(0)

    def close(self) -> None:
        self.closed = True


def test_meter_turns_counter_readings_into_joules_watts_and_images_per_joule():
    meter = energy.EnergyMeter(SteppedCounter(1_000_000.0, 1_450_000.0))  # 450 J in the window
    meter.start()
    time.sleep(0.05)
    reading = meter.stop()
    assert reading.joules == pytest.approx(450.0)
    assert reading.watts == pytest.approx(450.0 / reading.seconds)
    fields = reading.fields(images=900)
    assert fields["images_per_joule"] == pytest.approx(2.0)
    assert fields["energy_counter"] == "test counter"
    assert energy.fields_text(fields) == f"{450.0 / reading.seconds:.0f} W, 2.00 img/J"
    meter.close()
    assert meter.counter.closed


def test_without_a_counter_the_fields_say_no_counter_and_why_never_zero():
    meter = energy.EnergyMeter(None, "nvidia-ml-py (pynvml) is not installed")
    meter.start()
    reading = meter.stop()
    assert reading.joules is None and reading.watts is None
    fields = reading.fields(images=100)
    assert fields == {"energy_j": None, "watts": None, "images_per_joule": None,
                      "energy_counter": "no counter: nvidia-ml-py (pynvml) is not installed"}
    assert energy.fields_text(fields) == "energy: no counter: nvidia-ml-py (pynvml) is not installed"


def test_cpu_device_has_no_counter():
    reading = _window(energy.meter_for(torch.device("cpu")))
    assert reading.joules is None and reading.source.startswith("no counter: cpu device")


@pytest.mark.skipif(torch.cuda.is_available(), reason="a machine with a GPU may have a working NVML")
def test_cuda_device_without_a_driver_says_why():
    # pynvml imports without a driver; nvmlInit raises, and the meter says so instead of failing.
    meter = energy.meter_for(torch.device("cuda", 0))
    assert meter.counter is None and meter.reason
    assert _window(meter).source.startswith("no counter: ")


def test_power_sampler_integrates_power_into_millijoules():
    class ConstantPower:  # the two NVML calls the sampler makes, at 250 W
        @staticmethod
        def nvmlDeviceGetPowerUsage(handle):
            return 250_000.0

    sampler = energy.NvmlPowerSampler(ConstantPower(), handle=None, interval=0.005)
    meter = energy.EnergyMeter(sampler)
    meter.start()
    time.sleep(0.2)
    reading = meter.stop()
    meter.close()
    assert reading.source == "nvml power samples"
    assert reading.watts == pytest.approx(250.0, rel=0.05)


def _window(meter: energy.EnergyMeter) -> energy.EnergyReading:
    meter.start()
    return meter.stop()


def test_projection_is_images_of_the_schedule_times_joules_per_image():
    # r50x1_in1k: its config's epochs of the paper's 1.4 M images at global batch 4096.
    from xferscale.config import load_config

    epochs = load_config("r50x1_in1k", require_data=False).schedule.epochs
    (row,) = energy.project_paper_runs({("r50x1", "amp_fp16"): (0.5, "measured")}, configs=["r50x1_in1k"])
    assert (row.model, row.precision, row.global_batch) == ("r50x1", "amp_fp16", 4096)
    assert row.total_steps == round(epochs * (1_400_000 // 4096))
    assert row.kwh == pytest.approx(row.total_steps * 4096 * 0.5 / 3.6e6)


def test_medical_concatenations_sum_the_paper_sizes():
    assert energy.paper_epoch_images("chexpert_mimic_nih") == int(224e3 + 377e3 + 112e3)
    assert energy.paper_epoch_images("in21k") == int(14e6)
    with pytest.raises(KeyError, match="no image count for source 'chexpert_cifar'"):
        energy.paper_epoch_images("chexpert_cifar")


def test_unmeasured_or_uncounted_configs_say_so_in_the_table():
    rows = energy.project_paper_runs({}, configs=["r152x4_in1k"])
    assert rows[0].kwh is None and rows[0].basis == "r152x4 at amp_fp16 not measured"
    rows = energy.project_paper_runs({}, configs=["r50x1_in1k"], missing="no counter: cpu device")
    table = energy.projection_table(rows)
    assert "| r50x1_in1k | r50x1 / amp_fp16 |" in table
    assert "| no counter | no counter | no counter: cpu device |" in table


def test_node_projects_from_the_train_items_with_a_counter():
    detail = {"model": "r50x1", "precision": "amp_fp16", "device_name": "NVIDIA H200", "images_per_joule": 4.0,
              "energy_counter": "nvml energy counter"}
    items = [node.Item("train/amp_fp16", "ok", detail=detail),
             node.Item("train/fp32", "ok", detail={**detail, "precision": "fp32", "images_per_joule": 1.0})]
    rows = {r.config: r for r in node.energy_projection(items)}
    assert rows["r50x1_in1k"].joules_per_image == pytest.approx(0.25)
    assert rows["r50x1_in1k"].basis == "train/amp_fp16: nvml energy counter on NVIDIA H200"
    assert rows["r152x4_in1k"].kwh is None and "not measured" in rows["r152x4_in1k"].basis


def test_node_without_a_counter_projects_nothing_and_says_no_counter():
    detail = {"model": "tiny", "precision": "fp32", "device_name": "cpu", "images_per_joule": None,
              "energy_counter": "no counter: cpu device, no energy counter read"}
    rows = node.energy_projection([node.Item("train/fp32", "ok", detail=detail)])
    assert rows and all(r.kwh is None and r.basis.startswith("no counter: cpu device") for r in rows)
    assert node.energy_projection([]) == []


def test_train_kernel_result_carries_the_energy_fields_on_cpu():
    from xferscale import distributed as xdist
    from xferscale.kernels import train_step

    parser = argparse.ArgumentParser()
    train_step.add_arguments(parser)
    args = parser.parse_args(["--model", "tiny", "--batch-size", "2", "--image-size", "32", "--steps", "1",
                              "--warmup", "1"])
    result = train_step.measure(args, xdist.DistEnv(device=torch.device("cpu")))
    assert result["energy_j"] is None and result["watts"] is None and result["images_per_joule"] is None
    assert result["energy_counter"].startswith("no counter: cpu device")
