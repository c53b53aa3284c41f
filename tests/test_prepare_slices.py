"""Preparing in slices (``srun -n K`` tasks, job arrays): the same bytes as one process, a
killed task redone by re-running, the merge by the last task or by ``--merge``."""
from __future__ import annotations

import json

import pytest

from _data_fixtures import CLASSES, jpeg_bytes, tiny_samples
from xferscale.cli import main
from xferscale.data.merge import PARTS
from xferscale.data.records import DatasetSpec, PrepareError, Reconciliation, Sample
from xferscale.data.shards import ShardWriter
from xferscale.data.slices import Slice, parse_slice, slice_from_environment
from xferscale.data.writer import write_dataset

SPEC = DatasetSpec("tiny", "multiclass", CLASSES)


def _samples(raw):
    """Files, spooled bytes, two splits, and one image cut after its header."""
    samples = tiny_samples(raw, n_jpeg=40, n_png=8) + tiny_samples(raw / "v", n_jpeg=9, n_png=0, split="valid")
    whole = jpeg_bytes(77, (64, 64))
    samples.append(Sample("train/cut.jpg", "train", whole[: len(whole) // 2], (1,), "tiny"))
    return samples


def _converter_log() -> Reconciliation:
    log = Reconciliation()
    log.row(60)
    log.skip("raw/notes.txt", "not an image file name")
    return log


def _files(folder) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def _write(samples, out, task=Slice(0, 1), **kwargs):
    return write_dataset(SPEC, samples, out, _converter_log(), shard_size=5, progress=False, task=task, **kwargs)


@pytest.fixture
def whole(tmp_path):
    samples = _samples(tmp_path / "raw")
    _write(samples, tmp_path / "whole")
    return samples, _files(tmp_path / "whole")


@pytest.mark.parametrize("count", [2, 3])
def test_slices_write_the_bytes_of_one_process(tmp_path, whole, count):
    samples, reference = whole
    out = tmp_path / "sliced"
    markers = [_write(samples, out, Slice(i, count), workers=2 if i == 0 else 1) for i in range(count)]
    assert markers[:-1] == [None] * (count - 1) and markers[-1] == out / "dataset.json"
    assert _files(out) == reference  # shards, indexes, manifests, report.json, dataset.json
    assert not (out / PARTS).exists() and not list(out.glob("*.tmp"))
    report = json.loads((out / "report.json").read_text())
    assert [s["ref"] for s in report["skips"]] == ["raw/notes.txt", "train/cut.jpg"]


def test_a_killed_task_is_redone_and_finished_shards_kept(tmp_path, whole, monkeypatch):
    samples, reference = whole
    out = tmp_path / "sliced"
    close = ShardWriter.close
    calls = []

    def dies_on_the_third_shard(self):
        calls.append(self.path.name)
        if len(calls) == 3:
            raise KeyboardInterrupt  # as a kill mid-slice
        close(self)

    monkeypatch.setattr(ShardWriter, "close", dies_on_the_third_shard)
    with pytest.raises(KeyboardInterrupt):
        _write(samples, out, Slice(0, 2))
    monkeypatch.setattr(ShardWriter, "close", close)
    finished = {name: (out / name).stat().st_mtime_ns for name in calls[:2]}
    assert not (out / "dataset.json").exists()
    assert _write(samples, out, Slice(1, 2)) is None  # slice 0 is still incomplete: no merge
    assert _write(samples, out, Slice(0, 2)) == out / "dataset.json"
    assert {name: (out / name).stat().st_mtime_ns for name in finished} == finished  # not rewritten
    assert _files(out) == reference


def test_a_changed_plan_never_reuses_old_shards(tmp_path, whole):
    samples, _ = whole
    out = tmp_path / "sliced"
    assert _write(samples, out, Slice(0, 2)) is None
    relabelled = [Sample(s.key, s.split, s.image, ((s.labels[0] + 1) % 3,), s.source, s.patient) for s in samples]
    assert _write(relabelled, out, Slice(1, 2)) is None  # slice 0's shards are of the old labels
    assert _write(relabelled, out, Slice(0, 2)) is not None
    _write(relabelled, tmp_path / "reference")
    assert _files(out) == _files(tmp_path / "reference")


def test_merge_by_hand_and_its_errors(tmp_path, whole, capsys):
    samples, reference = whole
    out = tmp_path / "sliced"
    assert main(["prepare", "tiny", "--merge", "--out", str(out)]) == 2
    assert "sliced: no such folder" in capsys.readouterr().err
    out.mkdir()
    assert main(["prepare", "tiny", "--merge", "--out", str(out)]) == 2
    assert "no sliced prepare run to merge" in capsys.readouterr().err
    _write(samples, out, Slice(0, 2))
    assert main(["prepare", "tiny", "--merge", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "shards are not written yet (train-00001.tar" in err
    assert main(["prepare", "cifar10", "--merge", "--out", str(out)]) == 2
    assert "prepares 'tiny', not 'cifar10'" in capsys.readouterr().err
    # the other slice's parts arrive (as from a task that could not take the lock), then --merge
    other = tmp_path / "other"
    _write(samples, other, Slice(1, 2))
    for path in other.glob("*-0000[0-9].*"):
        path.rename(out / path.name)
    for path in (other / PARTS).iterdir():
        path.rename(out / PARTS / path.name)
    assert main(["prepare", "tiny", "--merge", "--out", str(out)]) == 0
    assert _files(out) == reference


def test_slice_from_srun_and_job_arrays():
    assert slice_from_environment({}) == Slice(0, 1)
    # a batch script's own shell: SLURM_NTASKS but no step of srun
    assert slice_from_environment({"SLURM_NTASKS": "8", "SLURM_PROCID": "0"}) == Slice(0, 1)
    assert slice_from_environment({"SLURM_STEP_NUM_TASKS": "8", "SLURM_PROCID": "5"}) == Slice(5, 8)
    array = {"SLURM_ARRAY_TASK_ID": "7", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_STEP": "2",
             "SLURM_ARRAY_TASK_COUNT": "4"}
    assert slice_from_environment(array) == Slice(3, 4)
    assert slice_from_environment({**array, "SLURM_STEP_NUM_TASKS": "2", "SLURM_PROCID": "1"}) == Slice(7, 8)
    assert parse_slice("2/4") == Slice(2, 4) and parse_slice("all") == Slice(0, 1)
    for bad in ("4/4", "1-4", "x"):
        with pytest.raises(PrepareError, match="--slice"):
            parse_slice(bad)
