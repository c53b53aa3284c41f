"""GPU energy around a timed window, and the energy of a whole experiment projected from it.

A :class:`EnergyMeter` reads a device's cumulative energy counter (an :class:`EnergyCounter`)
at ``start()`` and ``stop()``. On NVIDIA GPUs the counter is NVML's total energy since the
driver was loaded (``nvmlDeviceGetTotalEnergyConsumption``, mJ; Volta and later); where
the driver does not offer it, the board power (``nvmlDeviceGetPowerUsage``, mW) sampled on a
thread and integrated stands in. Without NVML or a GPU there is no counter: the reading
carries ``joules=None`` and the reason, never zero and never an estimate.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Iterable, Protocol

import torch

NO_COUNTER = "no counter"


class EnergyCounter(Protocol):
    """A device's energy counter: a reading in millijoules that only grows."""

    source: str  # what the reading is, e.g. "nvml energy counter"

    def millijoules(self) -> float: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class EnergyReading:
    """The energy of one window: ``joules`` is None when there was no counter (``reason`` says why)."""

    seconds: float
    joules: float | None
    source: str  # the counter's source, or "no counter: <reason>"

    @property
    def watts(self) -> float | None:
        return self.joules / self.seconds if self.joules is not None and self.seconds > 0 else None

    def per_item(self, items: float) -> float | None:
        """Items (images) per joule."""
        return items / self.joules if self.joules else None

    def fields(self, images: float) -> dict[str, Any]:
        """The reading as result fields beside images/s (None where there was no counter)."""
        return {"energy_j": self.joules, "watts": self.watts, "images_per_joule": self.per_item(images),
                "energy_counter": self.source}


def fields_text(fields: dict[str, Any]) -> str:
    """One human phrase of :meth:`EnergyReading.fields`: watts and images per joule, or why not."""
    if fields.get("energy_j") is None:
        return f"energy: {fields.get('energy_counter') or NO_COUNTER}"
    return f"{fields['watts']:.0f} W, {fields['images_per_joule']:.2f} img/J"


class EnergyMeter:
    """``start()`` ... ``stop() -> EnergyReading`` around a timed window (synchronise the device first)."""

    def __init__(self, counter: EnergyCounter | None, reason: str = ""):
        self.counter = counter
        self.reason = reason
        self._start: tuple[float, float | None] | None = None

    def start(self) -> None:
        self._start = (time.perf_counter(), self.counter.millijoules() if self.counter else None)

    def stop(self) -> EnergyReading:
        if self._start is None:
            raise RuntimeError("EnergyMeter.stop() before start()")
        began, mj = self._start
        seconds = time.perf_counter() - began
        if self.counter is None or mj is None:
            return EnergyReading(seconds, None, f"{NO_COUNTER}: {self.reason}")
        return EnergyReading(seconds, (self.counter.millijoules() - mj) / 1e3, self.counter.source)

    def close(self) -> None:
        if self.counter is not None:
            self.counter.close()


class NvmlEnergyCounter:
    """NVML's total energy since the driver was loaded (mJ)."""

    source = "nvml energy counter"

    def __init__(self, nvml: Any, handle: Any):
        self._nvml, self._handle = nvml, handle

    def millijoules(self) -> float:
        return float(self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle))

    def close(self) -> None:
        pass


class NvmlPowerSampler:
    """Board power (mW) sampled every ``interval`` s on a thread, integrated (trapezoids) into mJ."""

    source = "nvml power samples"

    def __init__(self, nvml: Any, handle: Any, interval: float = 0.02):
        self._nvml, self._handle, self._interval = nvml, handle, interval
        self._mj = 0.0
        self._last = (time.perf_counter(), self._power_mw())
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="nvml-power", daemon=True)
        self._thread.start()

    def _power_mw(self) -> float:
        return float(self._nvml.nvmlDeviceGetPowerUsage(self._handle))

    def _sample(self) -> None:
        now, mw = time.perf_counter(), self._power_mw()
        with self._lock:
            then, before = self._last
            self._mj += (now - then) * (mw + before) / 2
            self._last = (now, mw)

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            self._sample()

    def millijoules(self) -> float:
        self._sample()
        with self._lock:
            return self._mj

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


def meter_for(device: torch.device) -> EnergyMeter:
    """The meter of ``device``: NVML's energy counter, else its power samples, else no counter."""
    if device.type != "cuda":
        return EnergyMeter(None, f"{device.type} device, no energy counter read")
    try:
        import pynvml
    except ImportError:
        return EnergyMeter(None, "nvidia-ml-py (pynvml) is not installed")
    try:
        pynvml.nvmlInit()
        handle = _nvml_handle(pynvml, device)
    except pynvml.NVMLError as err:
        return EnergyMeter(None, f"NVML: {err}")
    try:
        NvmlEnergyCounter(pynvml, handle).millijoules()
        return EnergyMeter(NvmlEnergyCounter(pynvml, handle))
    except pynvml.NVMLError:
        pass  # not offered by this GPU or driver: power samples instead
    try:
        return EnergyMeter(NvmlPowerSampler(pynvml, handle))
    except pynvml.NVMLError as err:
        return EnergyMeter(None, f"NVML offers neither total energy nor power: {err}")


def _nvml_handle(pynvml: Any, device: torch.device) -> Any:
    """NVML's handle of a CUDA device: by UUID (CUDA_VISIBLE_DEVICES renumbers), else by index."""
    index = device.index if device.index is not None else torch.cuda.current_device()
    uuid = str(getattr(torch.cuda.get_device_properties(index), "uuid", "") or "")
    if uuid:
        try:
            return pynvml.nvmlDeviceGetHandleByUUID(uuid if uuid.startswith("GPU-") else f"GPU-{uuid}")
        except pynvml.NVMLError:
            pass
    return pynvml.nvmlDeviceGetHandleByIndex(index)


# -- projection of a whole experiment --------------------------------------------------------

@dataclass(frozen=True)
class EnergyProjection:
    """The GPUs' energy of a config's ``total_steps`` steps of ``global_batch`` images at a measured J/image."""

    config: str
    model: str
    precision: str
    total_steps: int
    global_batch: int
    joules_per_image: float | None
    basis: str  # where joules_per_image comes from, or why there is none

    @property
    def images(self) -> int:
        return self.total_steps * self.global_batch

    @property
    def kwh(self) -> float | None:
        return self.images * self.joules_per_image / 3.6e6 if self.joules_per_image is not None else None


def paper_epoch_images(source: str) -> int:
    """Images per epoch of a pre-training source as the paper states them (paper.yaml:
    pretraining.sources; medical sets summed over a concatenation such as chexpert_mimic_nih)."""
    from xferscale.report.paper import load_paper

    sources = load_paper()["pretraining"]["sources"]
    if source in sources and "images" in sources[source]:
        return int(float(sources[source]["images"]))
    sizes = sources["medical"]["datasets"]
    names = {"mimic": "mimic_cxr"}
    parts = [names.get(p, p) for p in source.split("_")]
    unknown = [p for p in parts if p not in sizes]
    if unknown:
        raise KeyError(f"no image count for source {source!r} ({', '.join(unknown)}) in paper.yaml")
    return int(sum(float(sizes[p]) for p in parts))


def project_paper_runs(joules_per_image: dict[tuple[str, str], tuple[float | None, str]],
                       configs: Iterable[str] | None = None, missing: str | None = None) -> list[EnergyProjection]:
    """kWh of each shipped pre-training config at its schedule's total steps on the paper's
    dataset size, from ``{(model, precision): (J/image or None, basis)}``. A config whose model
    and precision were not measured has ``missing`` as its basis (default: says so)."""
    from xferscale.config import builtin_configs, load_config
    from xferscale.schedule import plan_for_size

    out = []
    for name in sorted(configs if configs is not None else builtin_configs()):
        cfg = load_config(name, require_data=False)
        model, source = cfg.model.name, name.split("_", 1)[1]
        plan = plan_for_size(cfg, paper_epoch_images(source))
        jpi, basis = joules_per_image.get(
            (model, cfg.train.precision), (None, missing or f"{model} at {cfg.train.precision} not measured"))
        out.append(EnergyProjection(name, model, cfg.train.precision, plan.total_steps, plan.global_batch, jpi, basis))
    return out


def projection_table(rows: list[EnergyProjection]) -> str:
    lines = ["| config | model / precision | steps x global batch | J/image | GPU kWh | basis |",
             "|---|---|---:|---:|---:|---|"]
    for r in rows:
        missing = NO_COUNTER if r.basis.startswith(NO_COUNTER) else "n/a"
        jpi = f"{r.joules_per_image:.3f}" if r.joules_per_image is not None else missing
        kwh = f"{r.kwh:,.1f}" if r.kwh is not None else missing
        lines.append(f"| {r.config} | {r.model} / {r.precision} | {r.total_steps:,} x {r.global_batch} | {jpi} | "
                     f"{kwh} | {r.basis} |")
    return "\n".join(lines)
