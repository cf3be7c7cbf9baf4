"""Datasets: image folders (decoded lazily, bad files skipped and logged) and decoded images held in memory,
with their statistics and a stratified train/val split.

Every dataset yields ``(transform(PIL RGB image), label)`` so one transform pipeline serves all sources
(`images` decodes, `sources` gives the CIFAR and digits arrays). Folder datasets decode lazily; corrupt files
are either fatal (``on_bad="fail"``) or replaced by the next decodable sample (``on_bad="skip"``), so one bad
JPEG cannot kill a DataLoader worker hours into a run.
"""

from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Hashable, Iterable, Iterator, Sequence

import numpy as np
from PIL import Image
from torch.utils.data import Dataset
from tqdm import tqdm

from .images import IMAGE_EXTENSIONS, BadImageError, Loader, decode, load_rgb

ON_BAD_CHOICES = ("skip", "fail")

Transform = Callable[[Image.Image], Any]


class BadImageWarning(UserWarning):
    """Emitted once per process for each bad image that ``on_bad="skip"`` replaced."""


# --------------------------------------------------------------------------- folders


def _normalise_extensions(extensions: Iterable[str]) -> frozenset[str]:
    return frozenset(e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions)


def _class_images(class_dir: Path, extensions: frozenset[str]) -> list[Path]:
    """All image files under ``class_dir`` (recursively), sorted, skipping hidden files and folders."""
    found = []
    for dirpath, dirnames, filenames in os.walk(class_dir):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]  # prune hidden folders in place
        for name in filenames:
            if not name.startswith(".") and os.path.splitext(name)[1].lower() in extensions:
                found.append(Path(dirpath) / name)
    return sorted(found)


def _is_utf8(name: str) -> bool:
    """False for a name the OS handed over as undecodable bytes (Python keeps them as lone surrogates)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def scan_image_folder(
    root: str | Path, *, extensions: Sequence[str] = IMAGE_EXTENSIONS
) -> tuple[list[Path], list[int], list[str]]:
    """List ``root/<class>/**/<image>`` files: ``(paths, labels, classes)``.

    ``classes`` are the sorted class-folder names and a label is the index into it, so two folders
    with the same class names (train/ and val/) agree on labels. Extensions match case-insensitively;
    names starting with "." are ignored. An empty class keeps its label (with a warning) so labels do
    not shift; no images at all is an error.
    """
    root = Path(root)
    if not root.is_dir():
        what = (
            "is not a directory"
            if root.exists()
            else "is a broken symbolic link or a symbolic-link loop"
            if root.is_symlink()
            else "does not exist"
        )
        raise ValueError(f"image folder {root} {what}; expected root/<class_name>/<image files>")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    undecodable = [name for name in classes if not _is_utf8(name)]
    if undecodable:
        raise ValueError(
            f"{root}: class folder name {os.fsencode(undecodable[0])!r} is not valid UTF-8; rename it "
            "(class names are stored as text in checkpoints and reports)"
        )
    if not classes:
        raise ValueError(f"{root}: no class folders found; expected root/<class_name>/<image files>")
    exts = _normalise_extensions(extensions)
    per_class = [_class_images(root / name, exts) for name in classes]
    if not any(per_class):
        raise ValueError(f"{root}: no images with extensions {sorted(exts)} in any of the {len(classes)} class folders")
    paths: list[Path] = []
    labels: list[int] = []
    for label, (name, images) in enumerate(zip(classes, per_class)):
        if not images:
            warnings.warn(
                f"{root / name}: class folder has no images with extensions "
                f"{sorted(exts)}; label {label} will have no samples",
                stacklevel=2,
            )
        paths.extend(images)
        labels.extend([label] * len(images))
    return paths, labels, classes


def typical_image_size(root: str | Path, *, count: int = 32) -> tuple[int, int] | None:
    """The median (width, height) of up to `count` images of folder `root` spread over its classes, read from
    the files' headers (nothing is decoded); None when no image can be read."""
    paths = scan_image_folder(root)[0]
    step = max(1, len(paths) // count)
    sizes = []
    for path in paths[::step][:count]:
        try:
            with Image.open(path) as image:
                sizes.append(image.size)
        except (OSError, ValueError, Image.DecompressionBombError):
            continue
    if not sizes:
        return None
    widths, heights = zip(*sizes)
    return int(np.median(widths)), int(np.median(heights))


class ImageDataset(Dataset):
    """Lazily decoded images: ``samples`` is a list of ``(key, label)``; ``loader(key)`` gives a PIL image.

    With ``on_bad="fail"`` an undecodable sample raises BadImageError. With ``on_bad="skip"`` it is
    replaced by the next decodable sample (index + 1, wrapping), recorded in ``bad_files`` (per
    process: DataLoader workers keep their own copy), warned about once per process, and, if
    ``bad_log`` is given, appended to that file as ``key<TAB>reason`` so the main process can collect
    what every worker saw (see ``read_bad_log``).
    """

    def __init__(
        self,
        samples: Sequence[tuple[Any, int]],
        *,
        transform: Transform | None = None,
        loader: Loader = load_rgb,
        on_bad: str = "skip",
        classes: Sequence[str] | None = None,
        bad_log: str | Path | None = None,
    ) -> None:
        if on_bad not in ON_BAD_CHOICES:
            raise ValueError(f"on_bad must be one of {ON_BAD_CHOICES}, got {on_bad!r}")
        self.samples = list(samples)
        self.labels = [int(label) for _, label in self.samples]
        self.transform = transform
        self.loader = loader
        self.on_bad = on_bad
        self.classes = list(classes) if classes is not None else None
        self.bad_log = Path(bad_log) if bad_log is not None else None
        self.bad_files: dict[Hashable, str] = {}

    @classmethod
    def from_folder(
        cls,
        root: str | Path,
        *,
        transform: Transform | None = None,
        on_bad: str = "skip",
        extensions: Sequence[str] = IMAGE_EXTENSIONS,
        bad_log: str | Path | None = None,
    ) -> ImageDataset:
        """Build from ``root/<class>/**/<image>`` (see ``scan_image_folder``)."""
        paths, labels, classes = scan_image_folder(root, extensions=extensions)
        return cls(list(zip(paths, labels)), transform=transform, on_bad=on_bad, classes=classes, bad_log=bad_log)

    def __len__(self) -> int:
        return len(self.samples)

    def _record_bad(self, err: BadImageError) -> None:
        self.bad_files[err.path] = err.reason
        warnings.warn(f"skipping bad image {err}", BadImageWarning, stacklevel=3)
        if self.bad_log is not None:  # one short append per bad file; O_APPEND keeps lines whole
            # surrogateescape: a file name that is not UTF-8 is written back as the bytes it was
            with open(self.bad_log, "a", encoding="utf-8", errors="surrogateescape") as handle:
                handle.write(f"{err.path}\t{err.reason}\n")

    def load(self, index: int) -> tuple[Image.Image, int]:
        """Decoded RGB image and label of ``index`` before the transform, applying ``on_bad``."""
        n = len(self.samples)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for dataset of {n} samples")
        for step in range(n):
            key, label = self.samples[(index + step) % n]
            if key in self.bad_files:
                continue
            try:
                return decode(self.loader, key), label
            except BadImageError as err:
                if self.on_bad == "fail":
                    raise
                self._record_bad(err)
        raise BadImageError(self.samples[index][0], f"no decodable image among all {n} samples")

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image, label = self.load(index)
        return (self.transform(image) if self.transform is not None else image), label


def read_bad_log(path: str | Path) -> dict[str, str]:
    """Read the ``bad_log`` file written by ImageDataset workers: ``{path: reason}``, deduplicated."""
    path = Path(path)
    if not path.exists():
        return {}
    entries = {}
    for line in path.read_text(encoding="utf-8", errors="surrogateescape").splitlines():
        key, _, reason = line.partition("\t")
        entries[key] = reason
    return entries


# --------------------------------------------------------------------------- in-memory arrays


class ArrayDataset(Dataset):
    """Decoded images held in memory as one uint8 ``(N, H, W, 3)`` array, plus labels."""

    def __init__(
        self,
        images: np.ndarray,
        labels: Sequence[int] | np.ndarray,
        *,
        transform: Transform | None = None,
        classes: Sequence[str] | None = None,
    ) -> None:
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"images must be uint8 (N, H, W, 3), got {images.dtype} {images.shape}")
        if len(labels) != len(images):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images = images
        self.labels = np.asarray(labels, dtype=np.int64)
        self.transform = transform
        self.classes = list(classes) if classes is not None else None

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image = Image.fromarray(self.images[index])  # (H, W, 3) uint8 -> RGB
        return (self.transform(image) if self.transform is not None else image), int(self.labels[index])


def _decode_or_none(dataset: ImageDataset, key: Any) -> Image.Image | None:
    """Decode one sample for the cache: None for a bad file under ``on_bad="skip"``."""
    try:
        return decode(dataset.loader, key)
    except BadImageError as err:
        if dataset.on_bad == "fail":
            raise
        dataset._record_bad(err)
        return None


def _iter_decoded(dataset: ImageDataset, workers: int, size: int | None) -> Iterator[Image.Image | None]:
    keys = [key for key, _ in dataset.samples]

    def one(key: Any) -> Image.Image | None:
        image = _decode_or_none(dataset, key)
        return image if image is None or size is None else centre_square(image, size)

    if workers > 0:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            yield from pool.map(one, keys)
    else:
        yield from (one(key) for key in keys)


def cache_decoded(
    dataset: ImageDataset, workers: int = 0, *, size: int | None = None, progress: bool = True
) -> ArrayDataset:
    """Decode every image of ``dataset`` once into memory (same transform, classes and labels).

    Meant for small images (CIFAR-sized), where JPEG decoding dominates the input pipeline. All images
    must share one size, unless ``size`` is given: then each image is resized (shorter side to ``size``,
    bicubic) and its centre ``size`` x ``size`` square kept, so photos of mixed sizes fit one array. Bad
    files are dropped under ``on_bad="skip"`` and raise under ``"fail"``.
    """
    images: np.ndarray | None = None
    keep: list[int] = []
    first_key = None
    decoded = _iter_decoded(dataset, workers, size)
    for index, image in enumerate(tqdm(decoded, total=len(dataset), desc="cache", disable=not progress)):
        if image is None:
            continue
        key = dataset.samples[index][0]
        if images is None:  # allocate once the first size is known
            images = np.empty((len(dataset), image.height, image.width, 3), dtype=np.uint8)
            first_key = key
        elif image.size != (images.shape[2], images.shape[1]):
            raise ValueError(
                f"{key}: size {image.width}x{image.height} differs from {images.shape[2]}x"
                f"{images.shape[1]} of {first_key}; the in-memory cache needs one image size: set "
                "data.cache_size=N (each image resized to an N x N centre square as it is cached) or data.cache=false"
            )
        images[len(keep)] = np.asarray(image)
        keep.append(index)
    if images is None:
        raise BadImageError(dataset.samples[0][0] if len(dataset) else "<empty>", "no decodable image")
    labels = [dataset.labels[i] for i in keep]
    return ArrayDataset(images[: len(keep)], labels, transform=dataset.transform, classes=dataset.classes)


def centre_square(image: Image.Image, size: int) -> Image.Image:
    """`image` resized so its shorter side is `size` (bicubic), then its centre `size` x `size` square."""
    scale = size / min(image.size)
    width, height = max(size, round(image.width * scale)), max(size, round(image.height * scale))
    if (width, height) != image.size:
        image = image.resize((width, height), Image.Resampling.BICUBIC, reducing_gap=3.0)
    left, top = (width - size) // 2, (height - size) // 2
    return image.crop((left, top, left + size, top + size))


def dataset_stats(images: np.ndarray, *, chunk: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) std of uint8 NHWC images, in [0, 1] units."""
    if images.dtype != np.uint8 or images.ndim != 4 or len(images) == 0:
        raise ValueError(f"images must be non-empty uint8 (N, H, W, C), got {images.dtype} {images.shape}")
    channels = images.shape[-1]
    total = np.zeros(channels)
    total_sq = np.zeros(channels)
    for start in range(0, len(images), chunk):  # float64 in chunks: exact enough, bounded memory
        block = images[start : start + chunk].reshape(-1, channels).astype(np.float64) / 255.0
        total += block.sum(axis=0)
        total_sq += np.square(block).sum(axis=0)
    count = images.size // channels
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - np.square(mean), 0.0))
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


# --------------------------------------------------------------------------- splits


def stratified_split(labels: Sequence[int], val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Seeded per-class split: ``(train_indices, val_indices)``, each sorted, disjoint, covering all.

    A class of ``n_c`` samples gives ``round(n_c * val_fraction)`` to validation, at least 1 and at
    most ``n_c - 1`` when ``n_c >= 2``; a single-sample class stays in training.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    labels_arr = np.asarray(labels)
    rng = np.random.default_rng(seed)
    val: list[int] = []
    for label in np.unique(labels_arr):  # sorted, so the rng stream is consumed in a fixed order
        members = np.flatnonzero(labels_arr == label)
        n_val = round(len(members) * val_fraction)
        n_val = min(max(n_val, 1), len(members) - 1) if len(members) >= 2 else 0
        val.extend(int(i) for i in rng.permutation(members)[:n_val])
    val_set = set(val)
    train = [i for i in range(len(labels_arr)) if i not in val_set]
    return train, sorted(val)


__all__ = [
    "ArrayDataset",
    "BadImageWarning",
    "ImageDataset",
    "cache_decoded",
    "dataset_stats",
    "read_bad_log",
    "scan_image_folder",
    "stratified_split",
]
