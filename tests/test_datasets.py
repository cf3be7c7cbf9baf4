"""Tests for resmlp.data.datasets: folder and in-memory datasets yield RGB samples, bad files fail loudly or are
skipped (and logged), statistics and splits."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_images import _corrupt_jpg, _rgb_image, _truncated_jpeg
from torch.utils.data import DataLoader

from resmlp.data.datasets import (
    ArrayDataset,
    BadImageWarning,
    ImageDataset,
    cache_decoded,
    dataset_stats,
    read_bad_log,
    scan_image_folder,
    stratified_split,
    typical_image_size,
)
from resmlp.data.images import BadImageError


def _to_tensor(image: Image.Image) -> torch.Tensor:
    """A module-level (picklable) transform for DataLoader workers: HWC uint8 -> CHW uint8."""
    return torch.from_numpy(np.array(image)).permute(2, 0, 1)  # (H, W, 3) -> (3, H, W)


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
    with pytest.raises(ValueError, match=r"b\.png.*set data\.cache_size=N .* or data\.cache=false"):
        cache_decoded(ImageDataset.from_folder(tmp_path), progress=False)


def test_cache_size_keeps_the_centre_square_of_mixed_sizes(tmp_path: Path) -> None:
    (tmp_path / "c").mkdir()
    wide = np.zeros((20, 40, 3), dtype=np.uint8)  # 40 x 20: red left quarter, green middle, blue right quarter
    wide[:, :10] = (255, 0, 0)
    wide[:, 10:30] = (0, 255, 0)
    wide[:, 30:] = (0, 0, 255)
    Image.fromarray(wide).save(tmp_path / "c" / "wide.png")
    Image.fromarray(np.full((30, 15, 3), 200, dtype=np.uint8)).save(tmp_path / "c" / "tall.png")
    dataset = ImageDataset.from_folder(tmp_path)
    cached = cache_decoded(dataset, size=10, progress=False)
    assert cached.images.shape == (2, 10, 10, 3)
    tall, wide = (cached.images[[p.name for p, _ in dataset.samples].index(name)] for name in ("tall.png", "wide.png"))
    # shorter side 20 -> 10: the image is 20 x 10, its centre 10 x 10 is the green middle only
    assert (np.abs(wide.astype(int) - (0, 255, 0)).max(axis=-1) < 40).all()
    assert (tall == 200).all()


def test_typical_image_size_is_the_median_of_the_headers(tmp_path: Path) -> None:
    for i, size in enumerate([(500, 333), (768, 512), (640, 480)]):
        (tmp_path / f"k{i}").mkdir()
        Image.new("RGB", size).save(tmp_path / f"k{i}" / "x.jpg")
    (tmp_path / "k0" / "broken.jpg").write_bytes(b"not an image")
    assert typical_image_size(tmp_path) == (640, 480)


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
