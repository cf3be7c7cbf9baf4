"""From a DataConfig to train/val datasets with the recipe's transforms (the one place that wires data)."""

from __future__ import annotations

import contextlib
import functools
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np
from torch.utils.data import Dataset

from ..config import DataConfig, Normalization, Source
from ..files import write_atomic
from ..models.layers import to_pair
from ..models.registry import IMAGENET_MEAN, IMAGENET_STD
from .batch_augment import ToUint8Tensor
from .datasets import ArrayDataset, ImageDataset, cache_decoded, dataset_stats, scan_image_folder, stratified_split
from .images import load_rgb
from .sources import download_cifar, load_cifar, load_digits_arrays
from .transforms import build_eval_transform, build_train_transform, resolve_interpolation

SOURCES = typing.get_args(Source)


@dataclass
class DataSplits:
    train: Dataset
    val: Dataset
    classes: list[str]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    train_labels: np.ndarray  # for samplers and per-class reporting


def _subset_array(ds: ArrayDataset, idx: Sequence[int]) -> ArrayDataset:
    idx = np.asarray(idx, dtype=np.int64)
    return ArrayDataset(ds.images[idx], ds.labels[idx], classes=ds.classes)


def _subset_images(ds: ImageDataset, idx: Sequence[int], bad_log: Path | None) -> ImageDataset:
    return ImageDataset(
        [ds.samples[i] for i in idx], loader=ds.loader, on_bad=ds.on_bad, classes=ds.classes, bad_log=bad_log
    )


def _splits(cfg: DataConfig, bad_log: Path | None) -> tuple[Dataset, Dataset, list[str]]:
    """Train and validation datasets without transforms (decoded into memory with `cache`)."""
    key = (
        cfg.source, cfg.path, cfg.val_path, cfg.val_split, cfg.split_seed, cfg.on_bad, cfg.max_image_pixels,
        cfg.cache_size,
    )  # fmt: skip
    shared = _shared_splits if cfg.cache else None
    if shared is not None and key in shared:
        train, val, classes, first_log = shared[key]
        _copy_bad_log(first_log, bad_log)
        return (
            ArrayDataset(train.images, train.labels, classes=train.classes),
            ArrayDataset(val.images, val.labels, classes=val.classes),
            classes,
        )
    train, val, classes = _load_raw(cfg, bad_log)
    if val is None:
        tr_idx, va_idx = stratified_split(_labels(train), cfg.val_split, cfg.split_seed)
        if isinstance(train, ArrayDataset):
            train, val = _subset_array(train, tr_idx), _subset_array(train, va_idx)
        else:
            train, val = _subset_images(train, tr_idx, bad_log), _subset_images(train, va_idx, bad_log)
    if cfg.cache:
        size = cfg.cache_size
        train = train if isinstance(train, ArrayDataset) else cache_decoded(train, workers=cfg.workers, size=size)
        val = val if isinstance(val, ArrayDataset) else cache_decoded(val, workers=cfg.workers, size=size)
        if shared is not None:
            shared[key] = (train, val, classes, bad_log)
    return train, val, classes


def _copy_bad_log(source: Path | None, dest: Path | None) -> None:
    """A run that reuses decoded splits reports the bad files of the run that decoded them."""
    if source is None or dest is None or source == dest or not source.is_file():
        return
    data = source.read_bytes()
    write_atomic(dest, lambda tmp: tmp.write_bytes(data))


def _load_raw(cfg: DataConfig, bad_log: Path | None) -> tuple[Dataset, Dataset | None, list[str]]:
    """Undecorated train and (optional) val datasets, and the class names."""
    if cfg.source == "digits":
        images, labels, classes = load_digits_arrays()
        return ArrayDataset(images, labels, classes=classes), None, classes
    if cfg.source in ("cifar10", "cifar100"):
        if cfg.path is None:
            raise ValueError(f"data.path: give the {cfg.source} python archive (.tar.gz) or a folder to download into")
        archive = Path(cfg.path)
        if archive.is_dir():
            archive = download_cifar(cfg.source, archive)
        tr = load_cifar(archive, train=True)
        te = load_cifar(archive, train=False)  # the official test split is the validation set
        return ArrayDataset(tr[0], tr[1], classes=tr[2]), ArrayDataset(te[0], te[1], classes=te[2]), tr[2]
    if cfg.source == "folder":
        if cfg.path is None:
            raise ValueError("data.path: give the image folder (root/<class>/*.jpg)")
        paths, labels, classes = scan_image_folder(cfg.path)
        loader = functools.partial(load_rgb, max_pixels=cfg.max_image_pixels)
        train = ImageDataset(
            list(zip(paths, labels)), loader=loader, on_bad=cfg.on_bad, classes=classes, bad_log=bad_log
        )
        val = None
        if cfg.val_path:
            vpaths, vlabels, vclasses = scan_image_folder(cfg.val_path)
            if vclasses != classes:
                raise ValueError(
                    f"data.val_path {cfg.val_path}: classes {vclasses} differ from the train folder's {classes}"
                )
            val = ImageDataset(
                list(zip(vpaths, vlabels)), loader=loader, on_bad=cfg.on_bad, classes=classes, bad_log=bad_log
            )
        return train, val, classes
    raise ValueError(f"data.source: unknown {cfg.source!r}; expected one of {', '.join(SOURCES)}")


def _labels(ds: Dataset) -> np.ndarray:
    return np.asarray(ds.labels, dtype=np.int64)


def _stats_images(ds: Dataset, img_size, limit: int = 2000) -> np.ndarray:
    """uint8 images for normalisation statistics: the whole cache, or up to `limit` decoded files."""
    if isinstance(ds, ArrayDataset):
        return ds.images
    rng = np.random.default_rng(0)
    idx = rng.choice(len(ds), size=min(limit, len(ds)), replace=False)
    return np.stack([np.asarray(ds.load(int(i))[0].resize(to_pair(img_size)[::-1])) for i in idx])


def _norm_stats(cfg: DataConfig, train: Dataset, img_size: int) -> tuple[tuple, tuple]:
    def pick(value: Normalization, imagenet: tuple, key: str, computed: tuple | None) -> tuple:
        if value == "imagenet":
            return imagenet
        if value == "dataset":
            return computed
        if isinstance(value, list) and len(value) == 3:
            return tuple(float(v) for v in value)
        raise ValueError(f"data.{key}: expected 'dataset', 'imagenet' or three numbers, got {value!r}")

    computed = dataset_stats(_stats_images(train, img_size)) if "dataset" in (cfg.mean, cfg.std) else (None, None)
    return pick(cfg.mean, IMAGENET_MEAN, "mean", computed[0]), pick(cfg.std, IMAGENET_STD, "std", computed[1])


# While `share_decoded` is active: the decoded (cached) splits of each data source, so that the runs of one
# command that read the same images with the same split (a run and the teacher it trains first) decode them once.
_shared_splits: Optional[dict[tuple, tuple[ArrayDataset, ArrayDataset, list[str], Optional[Path]]]] = None


@contextlib.contextmanager
def share_decoded() -> Iterator[None]:
    """Within this block, `build_data` with `cache` decodes each source and split once; later runs get the
    same arrays, and a copy of the bad-file log of the run that decoded them."""
    global _shared_splits
    outer = _shared_splits
    _shared_splits = {} if outer is None else outer
    try:
        yield
    finally:
        _shared_splits = outer


def build_data(cfg: DataConfig, *, img_size: int, bad_log: Path | None = None) -> DataSplits:
    """Datasets for a run: validation from `val_path`/the official test split, else a seeded stratified
    `val_split` of train; optional decoded cache; transforms from the recipe (with `batch_augment`, the
    training images come out as uint8 tensors for `BatchAugment`); normalisation statistics."""
    train, val, classes = _splits(cfg, bad_log)
    mean, std = _norm_stats(cfg, train, img_size)
    if cfg.batch_augment:  # the loader only gathers uint8 images; the run augments whole batches
        train.transform = ToUint8Tensor(img_size, resolve_interpolation(cfg.interpolation))
    else:
        train.transform = build_train_transform(
            img_size,
            mean=mean,
            std=std,
            crop=cfg.crop,
            scale=tuple(cfg.scale),
            hflip=cfg.random_hflip,
            auto_augment=cfg.auto_augment or None,
            re_prob=cfg.re_prob,
            interpolation=cfg.interpolation,
            padding=cfg.padding,
        )
    val.transform = build_eval_transform(
        img_size, mean=mean, std=std, crop_pct=cfg.crop_pct, interpolation=cfg.interpolation
    )
    return DataSplits(train, val, list(classes), tuple(mean), tuple(std), _labels(train))
