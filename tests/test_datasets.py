"""Tests for resmlp.data.datasets: every source yields RGB samples, bad input fails loudly or is skipped."""

from __future__ import annotations

import io
import pickle
import tarfile
import urllib.error
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from resmlp.data import datasets
from resmlp.data.datasets import (
    ArrayDataset,
    BadImageError,
    BadImageWarning,
    ImageDataset,
    cache_decoded,
    dataset_stats,
    download_cifar,
    load_cifar,
    load_digits_arrays,
    load_rgb,
    read_bad_log,
    scan_image_folder,
    stratified_split,
    to_rgb,
    verify_images,
)


def _rgb_image(seed: int, size: tuple[int, int] = (6, 5)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def _to_tensor(image: Image.Image) -> torch.Tensor:
    """A module-level (picklable) transform for DataLoader workers: HWC uint8 -> CHW uint8."""
    return torch.from_numpy(np.array(image)).permute(2, 0, 1)  # (H, W, 3) -> (3, H, W)


def _truncated_jpeg(path: Path, seed: int) -> Path:
    buffer = io.BytesIO()
    _rgb_image(seed, (64, 64)).save(buffer, format="JPEG", quality=90)
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    return path


def _corrupt_jpg(path: Path, seed: int) -> Path:
    path.write_bytes(np.random.default_rng(seed).integers(0, 256, 300, dtype=np.uint8).tobytes())
    return path


# --------------------------------------------------------------------------- scan_image_folder


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "train"
    layout = {
        "zebra": ["a.jpg", "b.PNG", "nested/deep/c.JpEg", ".hidden.jpg", "notes.txt"],
        "ant": ["x.webp", "y.bmp", ".cache/z.jpg"],
        "moth": ["m.png"],
    }
    for seed, (cls, names) in enumerate(layout.items()):
        for name in names:
            path = root / cls / name
            path.parent.mkdir(parents=True, exist_ok=True)
            fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP", ".bmp": "BMP"}.get(
                path.suffix.lower()
            )
            if fmt is None:
                path.write_text("not an image")
            else:
                _rgb_image(seed).save(path, format=fmt)
    (root / ".git").mkdir()  # a hidden folder is not a class
    return root


def test_scan_sorts_classes_filters_extensions_and_hidden(folder: Path) -> None:
    paths, labels, classes = scan_image_folder(folder)
    assert classes == ["ant", "moth", "zebra"]
    rel = [p.relative_to(folder).as_posix() for p in paths]
    assert rel == ["ant/x.webp", "ant/y.bmp", "moth/m.png", "zebra/a.jpg", "zebra/b.PNG", "zebra/nested/deep/c.JpEg"]
    assert labels == [0, 0, 1, 2, 2, 2]


def test_scan_extension_filter_is_case_insensitive(folder: Path) -> None:
    with pytest.warns(UserWarning, match="ant: class folder has no images"):
        paths, labels, classes = scan_image_folder(folder, extensions=("PNG", ".JPG"))
    assert [p.name for p in paths] == ["m.png", "a.jpg", "b.PNG"]
    assert labels == [1, 2, 2]


def test_scan_errors_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"missing.*does not exist"):
        scan_image_folder(tmp_path / "missing")
    with pytest.raises(ValueError, match="no class folders"):
        scan_image_folder(tmp_path)
    (tmp_path / "cat").mkdir()
    (tmp_path / "dog").mkdir()
    (tmp_path / "dog" / "readme.txt").write_text("x")
    with pytest.raises(ValueError, match="no images"):
        scan_image_folder(tmp_path)


def test_scan_warns_on_single_empty_class_and_keeps_its_label(tmp_path: Path) -> None:
    (tmp_path / "a_empty").mkdir()
    (tmp_path / "b").mkdir()
    _rgb_image(0).save(tmp_path / "b" / "1.png")
    with pytest.warns(UserWarning, match="a_empty.*no images"):
        paths, labels, classes = scan_image_folder(tmp_path)
    assert classes == ["a_empty", "b"] and labels == [1]


# --------------------------------------------------------------------------- decoding to RGB


def _mode_images() -> dict[str, tuple[Image.Image, str]]:
    rng = np.random.default_rng(0)
    gray = Image.fromarray(rng.integers(0, 256, (5, 7), dtype=np.uint8))
    rgba = Image.fromarray(rng.integers(0, 256, (5, 7, 4), dtype=np.uint8))
    palette = gray.convert("P")
    palette.info["transparency"] = 0
    sixteen = Image.fromarray(rng.integers(0, 65536, (5, 7), dtype=np.uint16))
    return {
        "L": (gray, "png"),
        "LA": (rgba.convert("LA"), "png"),
        "RGBA": (rgba, "png"),
        "P": (palette, "png"),
        "I;16": (sixteen, "png"),
        "CMYK": (rgba.convert("RGB").convert("CMYK"), "jpeg"),
        "1": (gray.convert("1"), "bmp"),
    }


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "P", "I;16", "CMYK", "1"])
def test_every_mode_loads_as_rgb_of_the_same_size(tmp_path: Path, mode: str) -> None:
    image, fmt = _mode_images()[mode]
    path = tmp_path / f"img.{fmt}"
    image.save(path, **({"transparency": 0} if mode == "P" else {}))
    loaded = load_rgb(path)
    assert loaded.mode == "RGB" and loaded.size == (7, 5)


def test_alpha_composites_on_black() -> None:
    rgba = Image.fromarray(np.array([[[200, 100, 50, 0], [200, 100, 50, 255]]], dtype=np.uint8))
    assert np.array(to_rgb(rgba)).tolist() == [[[0, 0, 0], [200, 100, 50]]]


def test_sixteen_bit_scales_full_range_instead_of_clipping() -> None:
    values = np.array([[0, 257, 257 * 128, 65535]], dtype=np.uint16)
    rgb = np.array(to_rgb(Image.fromarray(values)))
    assert rgb[..., 0].tolist() == [[0, 1, 128, 255]]
    assert (rgb[..., 0] == rgb[..., 2]).all()


def test_palette_transparency_becomes_black(tmp_path: Path) -> None:
    palette = Image.new("P", (2, 1))  # pixel 0 uses palette entry 0 (transparent), pixel 1 entry 1
    palette.putpalette([255, 255, 255, 10, 20, 30] + [0] * 762)
    palette.putpixel((1, 0), 1)
    palette.save(tmp_path / "p.png", transparency=0)
    assert np.array(load_rgb(tmp_path / "p.png")).tolist() == [[[0, 0, 0], [10, 20, 30]]]


# --------------------------------------------------------------------------- bad files


@pytest.fixture
def bad_folder(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
    _rgb_image(1).save(root / "a" / "0_good.png")
    _corrupt_jpg(root / "a" / "1_random.jpg", seed=2)
    _truncated_jpeg(root / "a" / "2_truncated.jpg", seed=3)
    _rgb_image(4).save(root / "b" / "3_good.png")
    return root


@pytest.mark.parametrize("name", ["1_random.jpg", "2_truncated.jpg"])
def test_fail_mode_raises_naming_the_path(bad_folder: Path, name: str) -> None:
    dataset = ImageDataset.from_folder(bad_folder, on_bad="fail")
    index = [p.name for p, _ in dataset.samples].index(name)
    with pytest.raises(BadImageError, match=name) as info:
        dataset[index]
    assert isinstance(info.value, ValueError) and info.value.path == dataset.samples[index][0]
    assert info.value.reason


def test_skip_mode_replaces_with_next_sample_and_records(bad_folder: Path, tmp_path: Path) -> None:
    log = tmp_path / "bad.tsv"
    dataset = ImageDataset.from_folder(bad_folder, transform=_to_tensor, bad_log=log)
    with pytest.warns(BadImageWarning) as caught:
        image, label = dataset[1]  # 1 and 2 are bad; index 3 (class b) replaces them
    assert ["1_random.jpg" in str(w.message) for w in caught] == [True, False]
    assert "2_truncated.jpg" in str(caught[1].message)
    torch.testing.assert_close(image, _to_tensor(_rgb_image(4)))
    assert label == 1
    assert sorted(p.name for p in dataset.bad_files) == ["1_random.jpg", "2_truncated.jpg"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # known-bad files are skipped silently the second time
        assert dataset[2][1] == 1
    assert sorted(Path(p).name for p in read_bad_log(log)) == ["1_random.jpg", "2_truncated.jpg"]


def test_skip_mode_survives_dataloader_workers(bad_folder: Path, tmp_path: Path) -> None:
    log = tmp_path / "bad.tsv"
    dataset = ImageDataset.from_folder(bad_folder, transform=_to_tensor, bad_log=log)
    loader = DataLoader(dataset, batch_size=2, num_workers=2, shuffle=False)
    batches = list(loader)
    images = torch.cat([b[0] for b in batches])
    labels = torch.cat([b[1] for b in batches])
    assert images.shape == (4, 3, 5, 6) and labels.tolist() == [0, 1, 1, 1]
    assert sorted(Path(p).name for p in read_bad_log(log)) == ["1_random.jpg", "2_truncated.jpg"]


def test_all_bad_raises_even_when_skipping(tmp_path: Path) -> None:
    dataset = ImageDataset([(_corrupt_jpg(tmp_path / "x.jpg", 0), 0)])
    with pytest.warns(BadImageWarning), pytest.raises(BadImageError, match="no decodable image"):
        dataset[0]


def test_verify_images_reports_only_bad_files(bad_folder: Path) -> None:
    paths, _, _ = scan_image_folder(bad_folder)
    for workers in (0, 2):
        bad = verify_images(paths, workers)
        assert sorted(p.name for p in bad) == ["1_random.jpg", "2_truncated.jpg"]
        assert all(bad.values())


def test_index_keys_with_custom_loader() -> None:
    images = [_rgb_image(i) for i in range(3)]
    dataset = ImageDataset([(i, i % 2) for i in range(3)], loader=images.__getitem__)
    image, label = dataset[2]
    assert label == 0 and np.array_equal(np.array(image), np.array(images[2]))
    with pytest.raises(IndexError):
        dataset[3]


def test_on_bad_is_validated() -> None:
    with pytest.raises(ValueError, match="on_bad"):
        ImageDataset([], on_bad="ignore")


# --------------------------------------------------------------------------- in-memory cache & stats


def test_cache_decoded_equals_per_item_decoding(folder: Path) -> None:
    dataset = ImageDataset.from_folder(folder, transform=_to_tensor)
    cached = cache_decoded(dataset, workers=2, progress=False)
    assert isinstance(cached, ArrayDataset) and len(cached) == len(dataset)
    assert cached.classes == dataset.classes
    for index in range(len(dataset)):
        expected, label = dataset[index]
        got, cached_label = cached[index]
        torch.testing.assert_close(got, expected)
        assert cached_label == label


def test_cache_drops_bad_files_when_skipping(bad_folder: Path) -> None:
    dataset = ImageDataset.from_folder(bad_folder)
    with pytest.warns(BadImageWarning):
        cached = cache_decoded(dataset, progress=False)
    assert len(cached) == 2 and cached.labels.tolist() == [0, 1]


def test_cache_rejects_mixed_sizes(tmp_path: Path) -> None:
    (tmp_path / "c").mkdir()
    _rgb_image(0, (4, 4)).save(tmp_path / "c" / "a.png")
    _rgb_image(1, (5, 4)).save(tmp_path / "c" / "b.png")
    with pytest.raises(ValueError, match=r"b\.png.*disable the cache or resize"):
        cache_decoded(ImageDataset.from_folder(tmp_path), progress=False)


def test_array_dataset_validates_and_yields_pil() -> None:
    images = np.zeros((2, 3, 4, 3), dtype=np.uint8)
    image, label = ArrayDataset(images, [5, 6])[1]
    assert image.mode == "RGB" and image.size == (4, 3) and label == 6
    with pytest.raises(ValueError, match="uint8"):
        ArrayDataset(images.astype(np.float32), [5, 6])
    with pytest.raises(ValueError, match="labels"):
        ArrayDataset(images, [1])


def test_dataset_stats_matches_numpy() -> None:
    images = np.random.default_rng(0).integers(0, 256, (7, 4, 5, 3), dtype=np.uint8)
    mean, std = dataset_stats(images, chunk=3)
    as_float = images.astype(np.float64) / 255.0
    np.testing.assert_allclose(mean, as_float.mean(axis=(0, 1, 2)), rtol=1e-12)
    np.testing.assert_allclose(std, as_float.std(axis=(0, 1, 2)), rtol=1e-9)
    assert dataset_stats(np.full((1, 2, 2, 3), 255, np.uint8)) == ((1.0,) * 3, (0.0,) * 3)


# --------------------------------------------------------------------------- stratified_split


def test_stratified_split_is_disjoint_proportional_and_seeded() -> None:
    labels = [0] * 50 + [1] * 20 + [2] * 3 + [3] * 1
    train, val = stratified_split(labels, 0.2, seed=0)
    assert set(train).isdisjoint(val) and sorted(train + val) == list(range(len(labels)))
    per_class = np.bincount(np.asarray(labels)[val], minlength=4).tolist()
    assert per_class == [10, 4, 1, 0]  # round(n * 0.2), at least 1 for n >= 2, none for n == 1
    assert stratified_split(labels, 0.2, seed=0) == (train, val)
    assert stratified_split(labels, 0.2, seed=1)[1] != val


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_stratified_split_rejects_bad_fraction(fraction: float) -> None:
    with pytest.raises(ValueError, match="val_fraction"):
        stratified_split([0, 1], fraction, seed=0)


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
    monkeypatch.setattr(datasets.urllib.request, "urlopen", lambda url, timeout: _FakeResponse(payload))
    with pytest.raises(ValueError, match="md5"):
        download_cifar("cifar10", tmp_path)
    assert list(tmp_path.iterdir()) == []  # no partial or temp file left behind
    import hashlib

    digest = hashlib.md5(payload).hexdigest()
    monkeypatch.setitem(datasets.CIFAR_SOURCES, "cifar10", ("https://example.invalid/c10.tar.gz", digest))
    path = download_cifar("cifar10", tmp_path)
    assert path == tmp_path / "c10.tar.gz" and path.read_bytes() == payload
    assert [p.name for p in tmp_path.iterdir()] == ["c10.tar.gz"]

    def offline(url, timeout):
        raise AssertionError("an archive with the right md5 must be reused")

    monkeypatch.setattr(datasets.urllib.request, "urlopen", offline)
    assert download_cifar("cifar10", tmp_path) == path


def test_download_offline_error_is_clear(tmp_path: Path, monkeypatch) -> None:
    def offline(url, timeout):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(datasets.urllib.request, "urlopen", offline)
    with pytest.raises(ConnectionError, match=r"cifar-100-python\.tar\.gz.*offline"):
        download_cifar("cifar100", tmp_path)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="unknown CIFAR"):
        download_cifar("cifar1000", tmp_path)
