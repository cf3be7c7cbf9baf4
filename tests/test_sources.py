"""Tests for resmlp.data.sources: sklearn digits, the official CIFAR archives (read safely) and their download."""

from __future__ import annotations

import io
import pickle
import tarfile
import urllib.error
from pathlib import Path

import numpy as np
import pytest

from resmlp.data import sources
from resmlp.data.sources import download_cifar, load_cifar, load_digits_arrays

# --------------------------------------------------------------------------- sklearn digits


def test_load_digits_arrays() -> None:
    images, labels, classes = load_digits_arrays()
    assert images.shape == (1797, 8, 8, 3) and images.dtype == np.uint8
    assert images.max() == 255 and images.min() == 0
    assert (images[..., 0] == images[..., 2]).all()
    assert labels.dtype == np.int64 and set(labels.tolist()) == set(range(10))
    assert classes == [str(d) for d in range(10)]


# --------------------------------------------------------------------------- CIFAR archives


def _cifar_rows(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows in the official layout (R plane, G plane, B plane) and the matching NHWC images."""
    images = np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    rows = images.transpose(0, 3, 1, 2).reshape(n, 3072)  # (N, 32, 32, 3) -> (N, 3 * 32 * 32)
    return rows, images


def _pickled(obj: dict, legacy_numpy: bool) -> bytes:
    data = pickle.dumps(obj, protocol=2)
    if legacy_numpy:  # the official files (numpy 1.x, Python 2) name numpy.core.multiarray
        data = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    return data


def _write_tar(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _cifar10_archive(path: Path) -> tuple[Path, list[np.ndarray], np.ndarray, np.ndarray]:
    members, train_images = {}, []
    for i in range(1, 6):
        rows, images = _cifar_rows(2, seed=i)
        train_images.append(images)
        members[f"cifar-10-batches-py/data_batch_{i}"] = _pickled(
            {
                b"batch_label": b"x",
                b"data": rows,
                b"labels": [i % 10, (i + 1) % 10],
                b"filenames": [b"a.png", b"b.png"],
            },
            legacy_numpy=True,
        )
    rows, test_images = _cifar_rows(3, seed=9)
    members["cifar-10-batches-py/test_batch"] = _pickled({b"data": rows, b"labels": [9, 0, 1]}, True)
    names = [
        n.encode() for n in ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    ]
    members["cifar-10-batches-py/batches.meta"] = _pickled({b"label_names": names, b"num_vis": 3072}, True)
    members["cifar-10-batches-py/readme.html"] = b"<html/>"
    return _write_tar(path, members), train_images, np.concatenate(train_images), test_images


def test_load_cifar10_official_layout(tmp_path: Path) -> None:
    archive, _, train_expected, test_expected = _cifar10_archive(tmp_path / "cifar-10-python.tar.gz")
    images, labels, classes = load_cifar(archive, train=True)
    assert images.dtype == np.uint8 and images.shape == (10, 32, 32, 3)
    np.testing.assert_array_equal(images, train_expected)
    assert labels.dtype == np.int64 and labels.tolist() == [1, 2, 2, 3, 3, 4, 4, 5, 5, 6]
    assert classes[0] == "airplane" and classes[9] == "truck"
    images, labels, _ = load_cifar(archive, train=False)
    np.testing.assert_array_equal(images, test_expected)
    assert labels.tolist() == [9, 0, 1]


def test_load_cifar100_official_layout(tmp_path: Path) -> None:
    train_rows, train_images = _cifar_rows(4, seed=0)
    test_rows, test_images = _cifar_rows(2, seed=1)
    fine = [f"class{i:02d}".encode() for i in range(100)]
    archive = _write_tar(
        tmp_path / "cifar-100-python.tar.gz",
        {
            "cifar-100-python/train": _pickled(
                {b"data": train_rows, b"fine_labels": [0, 99, 5, 5], b"coarse_labels": [0, 1, 2, 3]}, False
            ),
            "cifar-100-python/test": _pickled(
                {b"data": test_rows, b"fine_labels": [42, 7], b"coarse_labels": [0, 1]}, False
            ),
            "cifar-100-python/meta": _pickled({b"fine_label_names": fine, b"coarse_label_names": [b"c"] * 20}, False),
        },
    )
    images, labels, classes = load_cifar(archive, train=True)
    np.testing.assert_array_equal(images, train_images)
    assert labels.tolist() == [0, 99, 5, 5] and len(classes) == 100 and classes[99] == "class99"
    images, labels, _ = load_cifar(archive, train=False)
    np.testing.assert_array_equal(images, test_images)
    assert labels.tolist() == [42, 7]


def test_load_cifar_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        load_cifar(tmp_path / "none.tar.gz", train=True)
    other = _write_tar(tmp_path / "other.tar.gz", {"x/readme.txt": b"hi"})
    with pytest.raises(ValueError, match="not an official CIFAR"):
        load_cifar(other, train=True)
    (tmp_path / "plain.tar.gz").write_bytes(b"not a tar")
    with pytest.raises(ValueError, match="not a readable tar"):
        load_cifar(tmp_path / "plain.tar.gz", train=True)
    rows, _ = _cifar_rows(1, seed=0)
    no_fine = _write_tar(
        tmp_path / "cifar-100-python.tar.gz",
        {
            "cifar-100-python/train": _pickled({b"data": rows, b"coarse_labels": [0]}, False),
            "cifar-100-python/test": _pickled({b"data": rows, b"fine_labels": [0]}, False),
            "cifar-100-python/meta": _pickled({b"fine_label_names": [b"a"]}, False),
        },
    )
    with pytest.raises(ValueError, match="train: missing key b'fine_labels'"):
        load_cifar(no_fine, train=True)
    assert load_cifar(no_fine, train=False)[1].tolist() == [0]


class _Evil:
    def __reduce__(self):  # would run os.system on load with a plain pickle.load
        import os

        return (os.system, ("echo pwned",))


def test_load_cifar_refuses_foreign_pickle_globals(tmp_path: Path) -> None:
    rows, _ = _cifar_rows(1, seed=0)
    archive = _write_tar(
        tmp_path / "cifar-100-python.tar.gz",
        {
            "cifar-100-python/train": pickle.dumps({b"data": rows, b"fine_labels": [_Evil()]}, protocol=2),
            "cifar-100-python/test": _pickled({b"data": rows, b"fine_labels": [0]}, False),
            "cifar-100-python/meta": _pickled({b"fine_label_names": [b"a"]}, False),
        },
    )
    with pytest.raises(ValueError, match=r"train: cannot unpickle.*refusing.*system"):
        load_cifar(archive, train=True)


# --------------------------------------------------------------------------- download (offline)


class _FakeResponse(io.BytesIO):
    headers: dict = {}


def test_download_checks_md5_writes_atomically_and_reuses(tmp_path: Path, monkeypatch) -> None:
    payload = b"fake cifar archive"
    monkeypatch.setattr(sources.urllib.request, "urlopen", lambda url, timeout: _FakeResponse(payload))
    with pytest.raises(ValueError, match="md5"):
        download_cifar("cifar10", tmp_path)
    assert list(tmp_path.iterdir()) == []  # no partial or temp file left behind
    import hashlib

    digest = hashlib.md5(payload).hexdigest()
    monkeypatch.setitem(sources.CIFAR_SOURCES, "cifar10", ("https://example.invalid/c10.tar.gz", digest))
    path = download_cifar("cifar10", tmp_path)
    assert path == tmp_path / "c10.tar.gz" and path.read_bytes() == payload
    assert [p.name for p in tmp_path.iterdir()] == ["c10.tar.gz"]

    def offline(url, timeout):
        raise AssertionError("an archive with the right md5 must be reused")

    monkeypatch.setattr(sources.urllib.request, "urlopen", offline)
    assert download_cifar("cifar10", tmp_path) == path


def test_download_offline_error_is_clear(tmp_path: Path, monkeypatch) -> None:
    def offline(url, timeout):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(sources.urllib.request, "urlopen", offline)
    with pytest.raises(ConnectionError, match=r"cifar-100-python\.tar\.gz.*offline"):
        download_cifar("cifar100", tmp_path)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="unknown CIFAR"):
        download_cifar("cifar1000", tmp_path)
