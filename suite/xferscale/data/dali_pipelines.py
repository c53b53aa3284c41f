"""DALI backend: ``fn.readers.webdataset`` over the prepared shards and one graph per
``data.pipeline`` (the steps are listed in :mod:`xferscale.data.transforms`).

Sharding: ``shard_id`` is the GLOBAL rank and ``num_shards`` the world size (the reader
takes rank ``r``'s contiguous range of the listed samples). A fresh pipeline is built for
every epoch with a seed derived from ``(seed, epoch, rank)``: shuffling and augmentation
are then a function of the epoch alone, and ``epoch(e, start_batch=b)`` reproduces the
remaining batches of an uninterrupted epoch exactly by running (and dropping) the first
``b`` batches; a resume therefore costs the decoding time of the skipped batches.

What the reader lists per epoch: the writer's shards and index files as they are, with
the shard order permuted per epoch for training (so every rank sees different shards each
epoch) and DALI's shuffle buffer on top. For a few-shot subset, an oversampled epoch or
after corrupt images were dropped, the epoch's sample list is written as DALI index files
(``v1.2``) in a temporary folder that point into the same tars: no image is copied.

Devices: with a CUDA device, ``device_id`` is its index, decoding is ``mixed`` (nvJPEG)
and the augmentation runs on the GPU; without one, ``device_id=None`` and every operator
runs on the CPU. 16-bit PNGs are decoded to float (``xray``) so none of their range is lost.

Corrupt images: DALI cannot skip a sample that fails to decode, and its error does not
name the sample. On a decoding error the loader decodes this rank's samples with Pillow to
find the culprits; with ``on_corrupt="error"`` it raises :class:`CorruptImageError` naming
shard and member, with ``"skip"`` it drops them (counted in ``corrupt_skipped``), rebuilds
the epoch without them and resumes at the batch where it stopped.
"""
from __future__ import annotations

import io
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from nvidia.dali import fn, pipeline_def, types
from nvidia.dali.auto_aug import rand_augment
from nvidia.dali.plugin.base_iterator import LastBatchPolicy
from nvidia.dali.plugin.pytorch import DALIGenericIterator
from PIL import Image

from xferscale.config import DataConfig
from xferscale.data import transforms as T
from xferscale.data.prepared import CorruptImageError, PreparedBatches, RankView, targets_tensor
from xferscale.data.sampling import epoch_permutation, shard_range
from xferscale.data.shards import read_component, write_index

_UINT8_MEAN = _UINT8_STD = 255 * T.NORM_MEAN


def _flip():
    return fn.random.coin_flip(probability=0.5)


def _normalise(images, mirror=None, crop=None, uint8: bool = True, **crop_pos):
    scale = _UINT8_MEAN if uint8 else T.NORM_MEAN
    return fn.crop_mirror_normalize(
        images, dtype=types.FLOAT, output_layout="CHW", crop=crop, mirror=mirror if mirror is not None else 0,
        mean=[scale] * 3, std=[_UINT8_STD if uint8 else T.NORM_STD] * 3, **crop_pos,
    )


def _xray_affine(size: int):
    """A random affine matrix about the image centre (rotation, scale, translation)."""
    centre = [size / 2, size / 2]
    limit = T.XRAY_TRANSLATE * size
    rotation = fn.transforms.rotation(angle=fn.random.uniform(range=[-T.XRAY_ROTATION_DEG, T.XRAY_ROTATION_DEG]), center=centre)
    scale = fn.random.uniform(range=[1 - T.XRAY_SCALE, 1 + T.XRAY_SCALE])
    scaling = fn.transforms.scale(scale=fn.stack(scale, scale), center=centre)
    shift = fn.transforms.translation(offset=fn.random.uniform(range=[-limit, limit], shape=[2]))
    return fn.transforms.combine(rotation, scaling, shift)


def pipeline_graph(encoded, pipeline: str, image_size: int, precrop: int | None, gpu: bool):
    """Decoded, augmented, normalised CHW float images from encoded image bytes."""
    decoder = "mixed" if gpu else "cpu"
    size = image_size
    if pipeline == "natural":
        images = fn.decoders.image_random_crop(
            encoded, device=decoder, output_type=types.RGB,
            random_area=list(T.RRC_AREA), random_aspect_ratio=list(T.RRC_ASPECT), num_attempts=10,
        )
        images = fn.resize(images, resize_x=size, resize_y=size, antialias=True)
        return _normalise(images, mirror=_flip())
    if pipeline == "natural_randaugment":  # RandAugment on the whole image, then the crop (the paper's order)
        images = fn.decoders.image(encoded, device=decoder, output_type=types.RGB)
        images = rand_augment.rand_augment(images, n=T.RANDAUGMENT_OPS, m=T.RANDAUGMENT_MAGNITUDE)
        images = fn.random_resized_crop(images, size=[size, size], random_area=list(T.RRC_AREA),
                                        random_aspect_ratio=list(T.RRC_ASPECT), num_attempts=10, antialias=True)
        return _normalise(images, mirror=_flip())
    if pipeline == "eval":
        images = fn.decoders.image(encoded, device=decoder, output_type=types.RGB)
        images = fn.resize(images, resize_shorter=T.eval_resize(size), antialias=True)
        return _normalise(images, crop=(size, size))
    if pipeline == "eval_finetune":
        images = fn.decoders.image(encoded, device=decoder, output_type=types.RGB)
        return _normalise(fn.resize(images, resize_x=size, resize_y=size, antialias=True))
    if pipeline == "finetune":
        side = T.default_precrop(size, precrop)
        images = fn.decoders.image(encoded, device=decoder, output_type=types.RGB)
        images = fn.resize(images, resize_shorter=side, antialias=True)  # aspect ratio kept
        return _normalise(
            images, mirror=_flip(), crop=(size, size),
            crop_pos_x=fn.random.uniform(range=[0.0, 1.0]), crop_pos_y=fn.random.uniform(range=[0.0, 1.0]),
        )
    if pipeline in ("xray", "eval_xray"):
        images = fn.decoders.image(encoded, device=decoder, output_type=types.RGB, dtype=types.FLOAT)
        shape = images.shape(dtype=types.FLOAT)
        side = fn.reductions.min(fn.slice(shape, 0, 2, axes=[0]))  # (H, W) -> shorter side
        images = fn.crop(images, crop_h=side, crop_w=side)
        images = fn.resize(images, resize_x=size, resize_y=size, antialias=True)
        if pipeline == "eval_xray":
            return _normalise(images, uint8=False)
        images = fn.warp_affine(images, matrix=_xray_affine(size), fill_value=0.0, inverse_map=False)
        return _normalise(images, mirror=_flip(), uint8=False)
    raise ValueError(f"unknown pipeline {pipeline!r}; choose one of {', '.join(T.PIPELINES)} or their eval forms")


@pipeline_def
def _webdataset_pipeline(paths, index_paths, label_ext, label_dtype, shard_id, num_shards, shuffle, reader_seed,
                         pipeline, image_size, precrop, gpu):
    encoded, labels = fn.readers.webdataset(
        paths=paths, index_paths=index_paths, ext=["jpg;png", label_ext], dtypes=[types.UINT8, label_dtype],
        missing_component_behavior="error", random_shuffle=shuffle, initial_fill=1024, seed=reader_seed,
        shard_id=shard_id, num_shards=num_shards, name="reader",
    )
    return pipeline_graph(encoded, pipeline, image_size, precrop, gpu), labels


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence(list(parts)).generate_state(1)[0] & 0x7FFFFFFF)


def find_corrupt(view: RankView, indices: np.ndarray) -> dict[int, str]:
    """Decode ``indices`` with Pillow; the undecodable ones with the error text."""
    plan = view.plan
    bad: dict[int, str] = {}
    handles: dict[int, object] = {}
    try:
        for i in np.unique(indices):
            ref = plan.samples[i]
            if ref.shard not in handles:
                handles[ref.shard] = open(plan.shards[ref.shard], "rb")
            try:
                with Image.open(io.BytesIO(read_component(handles[ref.shard], ref.image))) as image:
                    image.load()
            except Exception as err:  # noqa: BLE001 - Pillow raises many types for bad data
                bad[int(i)] = f"{type(err).__name__}: {err}"
    finally:
        for handle in handles.values():
            handle.close()
    return bad


class DaliBatches(PreparedBatches):
    """A prepared split read by DALI; see the module docstring."""

    def __init__(self, view: RankView, cfg: DataConfig, device: torch.device):
        super().__init__(view, cfg, device)
        self.gpu = device.type == "cuda"
        self._tmp = tempfile.TemporaryDirectory(prefix="xferscale-dali-")
        plan = view.plan
        self._by_shard = [[] for _ in plan.shards]
        for i, ref in enumerate(plan.samples):
            self._by_shard[ref.shard].append(i)

    def _sources(self, epoch: int) -> tuple[list[str], list[str], np.ndarray]:
        """Tar paths, index paths and the listed sample order the reader shards."""
        plan, train = self.view.plan, self.view.train
        natural = (
            not plan.excluded and len(plan.base) == len(plan.samples)
            and not (train and (plan.oversample or plan.draws))
        )
        if natural:
            order = epoch_permutation(len(plan.shards), plan.seed, epoch) if train else range(len(plan.shards))
            paths = [plan.shards[s] for s in order]
            listed = np.concatenate([self._by_shard[s] for s in order])
            return [str(p) for p in paths], [str(p.with_suffix(".idx")) for p in paths], listed
        for stale in Path(self._tmp.name).glob("*.idx"):  # earlier epochs' (read at build time)
            stale.unlink()
        wanted = plan.epoch_list(epoch, train)
        groups: dict[int, list[int]] = {}
        for i in wanted:
            groups.setdefault(plan.samples[i].shard, []).append(int(i))
        paths, index_paths = [], []
        for shard, members in groups.items():
            index = Path(self._tmp.name) / f"epoch{epoch}-{len(index_paths)}.idx"
            write_index(index, [(plan.samples[i].image, plan.samples[i].label) for i in members])
            paths.append(str(plan.shards[shard]))
            index_paths.append(str(index))
        return paths, index_paths, np.concatenate(list(groups.values()))

    def _iterator(self, epoch: int, paths: list[str], index_paths: list[str]) -> DALIGenericIterator:
        view, cfg = self.view, self.cfg
        multiclass = view.plan.task == "multiclass"
        pipe = _webdataset_pipeline(
            paths=paths, index_paths=index_paths,
            label_ext="cls" if multiclass else "lbl", label_dtype=types.INT32 if multiclass else types.INT8,
            shard_id=view.rank, num_shards=view.world_size, shuffle=view.train,
            reader_seed=_seed(view.plan.seed, epoch, 0),
            pipeline=T.pipeline_for(cfg.pipeline, view.train), image_size=cfg.image_size,
            precrop=cfg.precrop, gpu=self.gpu,
            batch_size=view.batch_size, num_threads=max(1, cfg.workers),
            device_id=(self.device.index or 0) if self.gpu else None,
            seed=_seed(view.plan.seed, epoch, view.rank, 1), prefetch_queue_depth=max(1, cfg.prefetch),
            # RandAugment picks its ops with DALI conditionals, whose tracing costs seconds
            enable_conditionals=view.train and cfg.pipeline == "natural_randaugment",
        )
        policy = LastBatchPolicy.DROP if view.train else LastBatchPolicy.PARTIAL
        return DALIGenericIterator([pipe], ["images", "labels"], reader_name="reader", last_batch_policy=policy)

    def _handle_failure(self, err: Exception, rank_listed: np.ndarray) -> None:
        bad = find_corrupt(self.view, rank_listed)
        if not bad:
            raise err
        plan = self.view.plan
        if self.cfg.on_corrupt == "error":
            first = min(bad)
            raise CorruptImageError(
                f"{plan.ref_name(first)}: image cannot be decoded ({bad[first]}); "
                f"{len(bad)} such image(s) on rank {self.view.rank}; set data.on_corrupt=skip to skip them"
            ) from err
        plan.excluded.update(bad)
        self.corrupt_skipped += len(bad)

    def epoch(self, epoch: int, start_batch: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches ``start_batch..len-1`` of ``epoch``, identical to an uninterrupted epoch's."""
        task, device, total = self.view.plan.task, self.device, len(self)
        skip = start_batch  # batches to run and drop before yielding
        while True:
            paths, index_paths, listed = self._sources(epoch)
            mine = listed[shard_range(len(listed), self.view.rank, self.view.world_size)]
            position = 0
            try:
                for data in self._iterator(epoch, paths, index_paths):
                    if position >= total:
                        break
                    position += 1
                    if position > skip:
                        images = data[0]["images"].to(device, non_blocking=True)
                        labels = targets_tensor(task, data[0]["labels"].numpy()).to(device, non_blocking=True)
                        yield images, labels
                return
            except RuntimeError as err:
                if isinstance(err, CorruptImageError):
                    raise
                self._handle_failure(err, mine)
                skip = max(skip, position)  # resume where the failed pipeline stopped
