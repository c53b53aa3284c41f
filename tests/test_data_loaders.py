"""DALI (CPU operators) and torch DataLoader backends on the same prepared shards."""
from __future__ import annotations

import json
import multiprocessing
from collections import Counter

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from _data_fixtures import (
    class_from_pixels, identity_from_pixels, jpeg_bytes, tiny_samples, write_tiny, write_unique,
)
from xferscale.config import DataConfig
from xferscale.data.loader import build_loader
from xferscale.data.prepared import CorruptImageError
from xferscale.data.records import DatasetSpec, Reconciliation, Sample
from xferscale.data.writer import write_dataset

BACKENDS = ("dali", "torch")


def loader(path, backend, *, train, batch_size=8, rank=0, world_size=1, num_classes=3, workers=1, **fields):
    cfg = DataConfig(source="prepared", path=str(path), backend=backend, image_size=32, workers=workers, **fields)
    return build_loader(cfg, batch_size=batch_size, rank=rank, world_size=world_size,
                        device="cpu", train=train, seed=7, num_classes=num_classes)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return write_tiny(root / "ds", root / "raw")  # 24 JPEGs (grey + RGB) and 6 16-bit PNGs


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("pipeline", ["natural", "finetune", "xray"])  # eval, eval_finetune, eval_xray
def test_eval_reads_every_image_once_with_its_label(tiny, backend, pipeline):
    batches = loader(tiny, backend, train=False, pipeline=pipeline)
    assert len(batches) == 4 and batches.num_samples == 30
    assert batches.num_classes == 3 and batches.task == "multiclass"
    labels = []
    for images, targets in batches.epoch(0):
        assert images.dtype == torch.float32 and images.shape[1:] == (3, 32, 32)
        assert targets.dtype == torch.int64 and targets.shape == (len(images),)
        assert class_from_pixels(images) == targets.tolist()  # 16-bit PNGs kept their range
        labels += targets.tolist()
    assert Counter(labels) == {0: 10, 1: 10, 2: 10}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("pipeline", ["natural", "xray", "finetune", "eval"])
def test_training_pipelines_shapes(tiny, backend, pipeline):
    batches = loader(tiny, backend, train=True, pipeline=pipeline, precrop=40)
    out = list(batches.epoch(0))
    assert len(out) == len(batches) == 3
    for images, targets in out:
        assert images.shape == (8, 3, 32, 32) and images.dtype == torch.float32
        assert -1.0 <= images.min() and images.max() <= 1.0 and targets.dtype == torch.int64


@pytest.mark.parametrize("backend", BACKENDS)
def test_randaugment_pipeline(tiny, backend):
    images, targets = next(iter(loader(tiny, backend, train=True, pipeline="natural_randaugment").epoch(0)))
    assert images.shape == (8, 3, 32, 32) and targets.shape == (8,)


def test_randaugment_comes_before_the_crop_and_xray_ranges_are_the_papers():
    """The paper's code inserts RandAugment at position 0; its cohen_aug is ShiftScaleRotate(0.25, 0.1, 45)."""
    from torchvision.transforms import v2

    from xferscale.data import transforms as T

    steps = [type(t) for t in T.build_transform("natural_randaugment", 32).transforms]
    assert steps[:3] == [v2.RandAugment, v2.RandomResizedCrop, v2.RandomHorizontalFlip]
    affine = next(t for t in T.build_transform("xray", 32).transforms if isinstance(t, v2.RandomAffine))
    assert affine.degrees == [-45.0, 45.0] and affine.translate == (0.25, 0.25) and affine.scale == (0.9, 1.1)


@pytest.mark.parametrize("backend", BACKENDS)
def test_resume_mid_epoch_gives_the_same_batches(tiny, backend):
    full = list(loader(tiny, backend, train=True, batch_size=4).epoch(1))
    resumed = list(loader(tiny, backend, train=True, batch_size=4).epoch(1, start_batch=3))
    assert len(full) == 7 and len(resumed) == 4
    for (a, y), (b, z) in zip(full[3:], resumed):
        assert torch.equal(a, b) and torch.equal(y, z)
    other = list(loader(tiny, backend, train=True, batch_size=4).epoch(2))
    assert not all(torch.equal(a, b) for (a, _), (b, _) in zip(full, other))


@pytest.mark.parametrize("backend", BACKENDS)
def test_multilabel_targets(tmp_path, backend):
    spec = DatasetSpec("ml", "multilabel", ("A", "B"))
    samples = [Sample(f"k{i}", "valid", jpeg_bytes(90, (20, 20)), ((1, -1), (0, 1))[i % 2], "s") for i in range(6)]
    write_dataset(spec, samples, tmp_path, Reconciliation(), progress=False)
    cfg = dict(split="valid")
    targets = torch.cat([t for _, t in loader(tmp_path, backend, train=False, num_classes=2, **cfg).epoch(0)])
    assert targets.dtype == torch.float32 and targets.shape == (6, 2)
    assert sorted(map(tuple, targets.tolist())) == [(0.0, 1.0)] * 3 + [(1.0, -1.0)] * 3


@pytest.mark.parametrize("backend", BACKENDS)
def test_fewshot_and_oversampling(tmp_path, backend):
    samples = tiny_samples(tmp_path / "raw", n_jpeg=24, n_png=0)
    rare = [s for s in samples if s.labels != (2,)] + [s for s in samples if s.labels == (2,)][:2]
    write_dataset(DatasetSpec("imb", "multiclass", ("a", "b", "c")), rare, tmp_path / "ds", Reconciliation(), progress=False)
    few = loader(tmp_path / "ds", backend, train=True, batch_size=3, fewshot=2, fewshot_seed=1)
    assert few.num_samples == 6 and len(few) == 2
    labels = [t for _, y in few.epoch(0) for t in y.tolist()]
    assert Counter(labels) == {0: 2, 1: 2, 2: 2}
    # a set smaller than one batch: each epoch is one full batch drawn with replacement (as BiT)
    big_batch = loader(tmp_path / "ds", backend, train=True, batch_size=10, fewshot=2, fewshot_seed=1)
    assert big_batch.num_samples == 10 and len(big_batch) == 1
    (images, targets), = list(big_batch.epoch(0))
    assert len(targets) == 10 and set(targets.tolist()) <= {0, 1, 2}
    draws = [big_batch.view.plan.epoch_list(e, True) for e in range(4)]
    assert all(set(d) <= set(big_batch.view.plan.base) for d in draws)
    assert any(len(set(d)) < len(d) for d in draws)  # with replacement: repeats within an epoch
    assert not all((d == draws[0]).all() for d in draws[1:])  # a fresh draw per epoch
    over = loader(tmp_path / "ds", backend, train=True, batch_size=6, oversample=True)
    assert over.num_samples == 18 == 6 * len(over)  # 3 classes x ceil(18 / 3)
    counts = Counter(t for _, y in over.epoch(0) for t in y.tolist())
    assert counts == {0: 6, 1: 6, 2: 6}


def _with_corrupt_image(root):
    """A prepared dataset one of whose shard members went bad after prepare (the decode check
    at prepare time keeps bad images out; a disk or a copy can still damage one later)."""
    import tarfile

    samples = tiny_samples(root / "raw", n_jpeg=12, n_png=0)
    write_dataset(DatasetSpec("c", "multiclass", ("a", "b", "c")), samples, root / "ds", Reconciliation(), progress=False)
    member = next(line for line in (root / "ds" / "train.csv").read_text().splitlines() if line.startswith(samples[5].key))
    shard, name = member.split(",")[1], member.split(",")[2]
    with tarfile.open(root / "ds" / shard) as tar:
        info = tar.getmember(name)
    with open(root / "ds" / shard, "r+b") as f:  # keep the JPEG header, zero the body in place
        f.seek(info.offset_data + 200)
        f.write(b"\x00" * (info.size - 200))
    return root / "ds", f"{shard}:{name}"


@pytest.mark.parametrize("backend", BACKENDS)
def test_corrupt_image_error_or_skip(tmp_path, backend):
    ds, where = _with_corrupt_image(tmp_path)
    with pytest.raises(CorruptImageError, match=where.split(":")[1]) as err:
        for _ in loader(ds, backend, train=False, batch_size=4).epoch(0):
            pass
    assert where.split(":")[0] in str(err.value)
    batches = loader(ds, backend, train=False, batch_size=4, on_corrupt="skip")
    seen = sum(len(y) for _, y in batches.epoch(0))
    assert seen == 11 and batches.corrupt_skipped == 1
    # training keeps its length: torch leaves the image out of its batch, DALI refills the
    # epoch list (a DALI batch cannot shrink) with the next samples of the list
    train = loader(ds, backend, train=True, batch_size=4, on_corrupt="skip")
    sizes = [len(y) for _, y in train.epoch(0)]
    assert len(sizes) == len(train) == 3 and train.corrupt_skipped == 1
    assert sum(sizes) == (12 if backend == "dali" else 11)


def _rank_worker(rank, root, backend, results):
    dist.init_process_group("gloo", init_method=f"file://{root}/pg-{backend}", rank=rank, world_size=2)
    common = dict(rank=rank, world_size=2, batch_size=4, workers=0)  # workers=0: no DataLoader processes
    eval_ids = [i for x, _ in loader(root / "ds", backend, train=False, **common).epoch(0) for i in identity_from_pixels(x)]
    train = loader(root / "ds", backend, train=True, pipeline="eval", **common)
    train_ids = [i for x, _ in train.epoch(3) for i in identity_from_pixels(x)]
    gathered = [None, None]
    dist.all_gather_object(gathered, {"eval": eval_ids, "train": train_ids, "len": len(train)})
    if rank == 0:
        results.write_text(json.dumps(gathered))
    dist.destroy_process_group()


@pytest.mark.parametrize("backend", BACKENDS)
def test_two_ranks_read_every_sample_once(tmp_path, backend):
    write_unique(tmp_path / "ds", tmp_path / "raw", n=30)
    results = tmp_path / "results.json"
    # forkserver: ranks fork from a clean single-threaded server that imported this module
    # once (plain fork would copy this process's DALI and DataLoader threads and can deadlock;
    # spawn would import torch and DALI again in every rank)
    multiprocessing.set_forkserver_preload([__name__])
    mp.start_processes(_rank_worker, args=(tmp_path, backend, results), nprocs=2, join=True, start_method="forkserver")
    r0, r1 = json.loads(results.read_text())
    assert sorted(r0["eval"] + r1["eval"]) == list(range(30))  # each sample exactly once
    assert r0["len"] == r1["len"] == 3  # 15 per rank -> 3 full batches of 4, equal on both ranks
    train = r0["train"] + r1["train"]
    assert len(train) == 24 and len(set(train)) == 24


@pytest.mark.parametrize("backend", BACKENDS)
def test_pretraining_runs_on_prepared_data(tiny, tmp_path, backend):
    from xferscale.config import load_config
    from xferscale.trainer import Trainer

    cfg = load_config(None, [
        "data.source=prepared", f"data.path={tiny}", f"data.backend={backend}", "data.image_size=32",
        "data.workers=1", "model.num_classes=null", "train.global_batch=8", "train.max_steps=2",
        "train.progress=false", "train.validate=false", "distributed.backend=none", f"output_dir={tmp_path}",
    ])  # the folder has no val split
    trainer = Trainer(cfg)
    assert trainer.num_classes == 3 and trainer.steps_per_epoch == 3
    assert trainer.fit()["steps"] == 2 and (tmp_path / "checkpoint.pt").is_file()


@pytest.mark.parametrize("pipeline", ["natural", "finetune", "xray"])
def test_backends_agree_in_evaluation(tiny, pipeline):
    """Same order, labels and normalisation (8-bit JPEG and 16-bit PNG) from both backends."""
    out = {}
    for backend in BACKENDS:
        images, targets = zip(*loader(tiny, backend, train=False, pipeline=pipeline).epoch(0))
        out[backend] = torch.cat(images), torch.cat(targets)
    assert torch.equal(out["dali"][1], out["torch"][1])
    assert torch.allclose(out["dali"][0], out["torch"][0], atol=1e-3)
