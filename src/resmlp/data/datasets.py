"""Dataset sources: image folders, CIFAR archives, sklearn digits, and an in-memory cache.

Every source yields ``(transform(PIL RGB image), label)`` so one transform pipeline serves all of
them. Folder datasets decode lazily; corrupt files are either fatal (``on_bad="fail"``) or replaced by
the next decodable sample (``on_bad="skip"``), so one bad JPEG cannot kill a DataLoader worker
hours into a run.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import re
import tarfile
import tempfile
import urllib.error
import urllib.request
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Hashable, Iterable, Iterator, Sequence

import numpy as np
from PIL import Image
from torch.utils.data import Dataset
from tqdm import tqdm

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
ON_BAD_CHOICES = ("skip", "fail")

Transform = Callable[[Image.Image], Any]
Loader = Callable[[Any], Image.Image]


class BadImageError(ValueError):
    """An image that cannot be decoded; ``path`` and ``reason`` say which and why."""

    def __init__(self, path: Any, reason: str) -> None:
        super().__init__(f"{path}: cannot decode image ({reason})")
        self.path = path
        self.reason = reason


class BadImageWarning(UserWarning):
    """Emitted once per process for each bad image that ``on_bad="skip"`` replaced."""


# --------------------------------------------------------------------------- decoding


def _sixteen_bit_to_rgb(image: Image.Image) -> Image.Image:
    """Scale a 16-bit (or 32-bit integer) grayscale image to 8 bits; PIL's convert would clip at 255."""
    values = np.asarray(image, dtype=np.float64)
    if image.mode == "F":  # float images have no natural range; clip like PIL does
        gray = np.clip(values, 0, 255)
    else:  # 'I;16*' and PNG's 16-bit 'I': full scale is 65535, and 65535 / 257 == 255
        gray = np.clip(values / 257.0, 0, 255)
    return Image.fromarray(np.rint(gray).astype(np.uint8)).convert("RGB")


def _composite_on_black(image: Image.Image) -> Image.Image:
    """Drop transparency by compositing on black, so invisible pixels' colours cannot leak in."""
    rgba = image.convert("RGBA")
    background = Image.new("RGB", rgba.size, (0, 0, 0))
    background.paste(rgba, mask=rgba.getchannel("A"))
    return background


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode (L, LA, P, RGBA, I;16, CMYK, ...) to 8-bit RGB of the same size."""
    if image.mode == "RGB":
        return image
    if image.mode.startswith("I") or image.mode == "F":
        return _sixteen_bit_to_rgb(image)
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
    if has_alpha:
        return _composite_on_black(image)
    return image.convert("RGB")


# The largest image decoded by default: 100 Mpx (10,000 x 10,000) is far above any training or photo input,
# and far below what a "decompression bomb" claims (a 30,000 x 30,000 PNG of a few KB would need 2.7 GB as RGB).
# `data.max_image_pixels` / `resmlp predict --max-image-pixels` raise it (null / 0: no limit).
MAX_IMAGE_PIXELS = 100_000_000


def _allow_pixels(max_pixels: int | None) -> None:
    """Keep Pillow's own bomb check (an error above 2 x Image.MAX_IMAGE_PIXELS) from undercutting ours."""
    pil_limit = Image.MAX_IMAGE_PIXELS
    if pil_limit is not None and (max_pixels is None or max_pixels > 2 * pil_limit):
        Image.MAX_IMAGE_PIXELS = None if max_pixels is None else max_pixels


def _too_large(size: Any, max_pixels: int | None) -> str:
    if isinstance(size, re.Match):
        size = f"{int(size.group(1)) / 1e6:.0f} Mpx"
    return (
        f"{size or 'the image'} is above the limit of {(max_pixels or 0) / 1e6:g} Mpx (a decompression bomb?); "
        "raise data.max_image_pixels (--max-image-pixels) to read it"
    )


def load_rgb(path: str | Path, *, max_pixels: int | None = MAX_IMAGE_PIXELS) -> Image.Image:
    """Open and fully decode an image file as RGB; decoding errors surface here, not later. An image of
    more than `max_pixels` pixels (None: no limit) is refused from its header, before any decoding."""
    _allow_pixels(max_pixels)
    with open(path, "rb") as handle:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our limit decides
            try:
                image = Image.open(handle)
            except Image.DecompressionBombError as err:  # Pillow's limit, above ours (see _allow_pixels)
                raise BadImageError(path, _too_large(re.search(r"\((\d+) pixels\)", str(err)), max_pixels)) from None
        pixels = image.width * image.height
        if max_pixels is not None and pixels > max_pixels:
            raise BadImageError(path, _too_large(f"{image.width}x{image.height} = {pixels / 1e6:.0f} Mpx", max_pixels))
        image.load()  # force the decode while the file is open (truncation raises OSError here)
    return to_rgb(image)


def _decode(loader: Loader, key: Any) -> Image.Image:
    """Run ``loader(key)``, turning whatever the decoder raises into a BadImageError."""
    try:
        return to_rgb(loader(key))
    except BadImageError:
        raise
    except Exception as err:  # PIL raises OSError, SyntaxError, ValueError, struct.error, MemoryError, ...
        raise BadImageError(key, f"{type(err).__name__}: {err}") from err


def verify_images(
    paths: Sequence[Any], workers: int = 0, *, loader: Loader = load_rgb, progress: bool = False
) -> dict[Any, str]:
    """Fully decode every image (opt-in scan); return ``{path: reason}`` for the ones that fail.

    ``workers > 0`` decodes in that many threads (PIL releases the GIL while decoding).
    """

    def check(key: Any) -> str | None:
        try:
            _decode(loader, key)
        except BadImageError as err:
            return err.reason
        return None

    reasons: list[str | None]
    if workers > 0:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            mapped = pool.map(check, paths)
            reasons = list(tqdm(mapped, total=len(paths), desc="verify", disable=not progress))
    else:
        reasons = [check(p) for p in tqdm(paths, desc="verify", disable=not progress)]
    return {key: reason for key, reason in zip(paths, reasons) if reason is not None}


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
                return _decode(self.loader, key), label
            except BadImageError as err:
                if self.on_bad == "fail":
                    raise
                self._record_bad(err)
        raise BadImageError(self.samples[index][0], f"no decodable image among all {n} samples")

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image, label = self.load(index)
        return (self.transform(image) if self.transform is not None else image), label


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
        return _decode(dataset.loader, key)
    except BadImageError as err:
        if dataset.on_bad == "fail":
            raise
        dataset._record_bad(err)
        return None


def _iter_decoded(dataset: ImageDataset, workers: int) -> Iterator[Image.Image | None]:
    keys = [key for key, _ in dataset.samples]
    if workers > 0:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            yield from pool.map(lambda key: _decode_or_none(dataset, key), keys)
    else:
        yield from (_decode_or_none(dataset, key) for key in keys)


def cache_decoded(dataset: ImageDataset, workers: int = 0, *, progress: bool = True) -> ArrayDataset:
    """Decode every image of ``dataset`` once into memory (same transform, classes and labels).

    Meant for small images (CIFAR-sized), where JPEG decoding dominates the input pipeline. All images
    must share one size. Bad files are dropped under ``on_bad="skip"`` and raise under ``"fail"``.
    """
    images: np.ndarray | None = None
    keep: list[int] = []
    first_key = None
    decoded = _iter_decoded(dataset, workers)
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
                f"{images.shape[1]} of {first_key}; the in-memory cache needs one image size: "
                "disable the cache or resize the images first"
            )
        images[len(keep)] = np.asarray(image)
        keep.append(index)
    if images is None:
        raise BadImageError(dataset.samples[0][0] if len(dataset) else "<empty>", "no decodable image")
    labels = [dataset.labels[i] for i in keep]
    return ArrayDataset(images[: len(keep)], labels, transform=dataset.transform, classes=dataset.classes)


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


# --------------------------------------------------------------------------- sklearn digits


def load_digits_arrays() -> tuple[np.ndarray, np.ndarray, list[str]]:
    """sklearn's 8x8 digits as uint8 RGB ``(1797, 8, 8, 3)``, int64 labels and classes "0".."9".

    Pixel values 0..16 are scaled to 0..255 and replicated to three channels so the RGB pipeline
    (and the CIFAR-style recipes) apply unchanged; the tiny set makes a CPU demo run in seconds.
    """
    from sklearn.datasets import load_digits  # imported here: only this source needs sklearn

    digits = load_digits()
    gray = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)  # (N, 8, 8)
    images = np.repeat(gray[..., None], 3, axis=-1)  # (N, 8, 8) -> (N, 8, 8, 3)
    return images, digits.target.astype(np.int64), [str(d) for d in range(10)]


# --------------------------------------------------------------------------- CIFAR archives

CIFAR_SOURCES = {
    "cifar10": ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a"),
    "cifar100": ("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85"),
}
# Member basenames of the official python-version archives: (train members, test members, meta).
_CIFAR_LAYOUTS = {
    "cifar10": ([f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "batches.meta"),
    "cifar100": (["train"], ["test"], "meta"),
}
_CIFAR_KEYS = {"cifar10": (b"labels", b"label_names"), "cifar100": (b"fine_labels", b"fine_label_names")}

# The only globals a CIFAR pickle needs: numpy's array reconstruction (under its numpy 1 and 2 module
# names) and the codec Python 3 uses for bytes in protocol-2 pickles. Anything else is refused, so a
# tampered archive cannot run code while it is being read.
_CIFAR_PICKLE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class _CifarUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _CIFAR_PICKLE_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name} from a CIFAR pickle")
        return super().find_class(module, name)


def _unpickle_cifar_member(data: bytes, member: str) -> dict:
    """Unpickle one CIFAR batch/meta member.

    The official archives store pickled dicts (written by Python 2, hence ``encoding="bytes"``), so a
    pickle load is inherent to the format. It is only applied to the known member names, and through an
    unpickler that accepts nothing but numpy arrays, lists, dicts, numbers and strings.
    """
    try:
        loaded = _CifarUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as err:
        raise ValueError(f"CIFAR member {member}: cannot unpickle ({type(err).__name__}: {err})") from err
    if not isinstance(loaded, dict):
        raise ValueError(f"CIFAR member {member}: expected a pickled dict, got {type(loaded).__name__}")
    return loaded


def _read_archive_members(archive: Path, *, train: bool) -> tuple[set[str], dict[str, bytes]]:
    """Basenames of the known CIFAR members in a tar archive, and the bytes of the ones ``train`` needs.

    Only the requested split and the meta members are kept in memory.
    """
    known = {name for tr, te, meta in _CIFAR_LAYOUTS.values() for name in (*tr, *te, meta)}
    wanted = {name for tr, te, meta in _CIFAR_LAYOUTS.values() for name in (*(tr if train else te), meta)}
    present: set[str] = set()
    data: dict[str, bytes] = {}
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                base = member.name.rsplit("/", 1)[-1]
                if not member.isfile() or base not in known:
                    continue
                present.add(base)
                handle = tar.extractfile(member) if base in wanted else None
                if handle is not None:
                    data[base] = handle.read()
    except (tarfile.TarError, OSError) as err:
        raise ValueError(f"{archive}: not a readable tar archive ({err})") from err
    return present, data


def _cifar_layout(present: set[str], archive: Path) -> str:
    for name, (train, test, meta) in _CIFAR_LAYOUTS.items():
        if all(m in present for m in (*train, *test, meta)):
            return name
    raise ValueError(
        f"{archive}: not an official CIFAR python archive; expected cifar-10-python.tar.gz "
        "(data_batch_1..5, test_batch, batches.meta) or cifar-100-python.tar.gz "
        f"(train, test, meta); found CIFAR members {sorted(present)}"
    )


def _member_field(content: dict, key: bytes, member: str) -> Any:
    if key not in content:
        raise ValueError(f"CIFAR member {member}: missing key {key!r}; found {sorted(content)}")
    return content[key]


def _cifar_batch(data: bytes, member: str, label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    batch = _unpickle_cifar_member(data, member)
    rows = np.asarray(_member_field(batch, b"data", member), dtype=np.uint8)
    labels = np.asarray(_member_field(batch, label_key, member), dtype=np.int64)
    if rows.ndim != 2 or rows.shape[1] != 3 * 32 * 32 or len(labels) != len(rows):
        raise ValueError(
            f"CIFAR member {member}: expected data (N, 3072) and N labels, got {rows.shape} and {len(labels)}"
        )
    # Each row is the red plane, then green, then blue, each 32x32 row-major.
    images = rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # (N, 3, 32, 32) -> (N, 32, 32, 3)
    return np.ascontiguousarray(images), labels


def load_cifar(archive: str | Path, *, train: bool) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Read an official CIFAR-10 or CIFAR-100 python archive: uint8 ``(N, 32, 32, 3)``, int64 labels, classes.

    Which dataset it is follows from the members present; CIFAR-100 uses the 100 fine labels.
    """
    archive = Path(archive)
    if not archive.is_file():
        raise ValueError(f"CIFAR archive {archive} does not exist; see download_cifar")
    present, data = _read_archive_members(archive, train=train)
    name = _cifar_layout(present, archive)
    train_members, test_members, meta_member = _CIFAR_LAYOUTS[name]
    label_key, names_key = _CIFAR_KEYS[name]
    batches = [_cifar_batch(data[m], m, label_key) for m in (train_members if train else test_members)]
    images = np.concatenate([b[0] for b in batches])
    labels = np.concatenate([b[1] for b in batches])
    meta = _unpickle_cifar_member(data[meta_member], meta_member)
    names = _member_field(meta, names_key, meta_member)
    classes = [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names]
    if len(labels) and not 0 <= labels.min() <= labels.max() < len(classes):
        raise ValueError(f"{archive}: labels outside 0..{len(classes) - 1}")
    return images, labels, classes


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download_cifar(name: str, dest_dir: str | Path, *, timeout: float = 60.0) -> Path:
    """Download an official CIFAR python archive into ``dest_dir`` (md5-checked, atomic); return its path.

    An existing file with the right checksum is reused without touching the network.
    """
    if name not in CIFAR_SOURCES:
        raise ValueError(f"unknown CIFAR dataset {name!r}; expected one of {sorted(CIFAR_SOURCES)}")
    url, md5 = CIFAR_SOURCES[name]
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / url.rsplit("/", 1)[-1]
    if dest.is_file() and _md5(dest) == md5:
        return dest
    fd, tmp_name = tempfile.mkstemp(dir=dest_dir, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                with urllib.request.urlopen(url, timeout=timeout) as response:
                    size = response.headers.get("Content-Length")
                    with tqdm(total=int(size) if size else None, unit="B", unit_scale=True, desc=dest.name) as bar:
                        for block in iter(lambda: response.read(1 << 20), b""):
                            out.write(block)
                            bar.update(len(block))
            except (urllib.error.URLError, OSError) as err:
                raise ConnectionError(
                    f"could not download {url} ({err}); if this machine is offline, fetch the file "
                    f"elsewhere and place it at {dest}"
                ) from err
        got = _md5(tmp)
        if got != md5:
            raise ValueError(f"{url}: md5 {got} does not match the official {md5}; download again")
        os.replace(tmp, dest)  # atomic: a reader never sees a half-written archive
    finally:
        tmp.unlink(missing_ok=True)
    return dest


__all__ = [
    "ArrayDataset",
    "BadImageError",
    "BadImageWarning",
    "CIFAR_SOURCES",
    "IMAGE_EXTENSIONS",
    "ImageDataset",
    "cache_decoded",
    "dataset_stats",
    "download_cifar",
    "load_cifar",
    "load_digits_arrays",
    "load_rgb",
    "read_bad_log",
    "scan_image_folder",
    "stratified_split",
    "to_rgb",
    "verify_images",
]
