"""The datasets that come as arrays: scikit-learn's digits (bundled) and the official CIFAR-10 / CIFAR-100
python archives (read safely, downloaded once). Each gives uint8 ``(N, H, W, 3)`` images, int64 labels and
the class names, for `datasets.ArrayDataset`.
"""

from __future__ import annotations

import io
import pickle
import tarfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from ..files import file_digest, write_atomic

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


def download_cifar(name: str, dest_dir: str | Path, *, timeout: float = 60.0) -> Path:
    """Download an official CIFAR python archive into ``dest_dir`` (md5-checked, atomic); return its path.

    An existing file with the right checksum is reused without touching the network.
    """
    if name not in CIFAR_SOURCES:
        raise ValueError(f"unknown CIFAR dataset {name!r}; expected one of {sorted(CIFAR_SOURCES)}")
    url, md5 = CIFAR_SOURCES[name]
    dest = Path(dest_dir) / url.rsplit("/", 1)[-1]
    if dest.is_file() and file_digest(dest, "md5") == md5:
        return dest

    def fetch(tmp: Path) -> None:  # through the atomic writer: a reader never sees a half-written archive
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as out:
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
        got = file_digest(tmp, "md5")
        if got != md5:
            raise ValueError(f"{url}: md5 {got} does not match the official {md5}; download again")

    return write_atomic(dest, fetch)


__all__ = ["CIFAR_SOURCES", "download_cifar", "load_cifar", "load_digits_arrays"]
