"""data/build.py: from a DataConfig to the train/val splits, their transforms and normalisation."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from resmlp.config import DataConfig
from resmlp.data import build as build_module
from resmlp.data.build import build_data, share_decoded
from resmlp.data.datasets import dataset_stats
from resmlp.models.registry import IMAGENET_MEAN, IMAGENET_STD

DIGITS = DataConfig(source="digits", val_split=0.2, workers=0, auto_augment=None, crop="pad", padding=1)


def test_digits_split_sizes_per_class_and_transforms():
    data = build_data(DIGITS, img_size=8)
    assert len(data.train) + len(data.val) == 1797 and data.classes == [str(d) for d in range(10)]
    val_labels = np.asarray(data.val.labels)
    all_labels = np.concatenate([data.train_labels, val_labels])
    for c in range(10):  # stratified: round(20%) of every class
        assert (val_labels == c).sum() == round(0.2 * (all_labels == c).sum())
    image, label = data.val[0]
    assert image.shape == (3, 8, 8) and image.dtype == torch.float32 and label == data.val.labels[0]
    assert data.train[0][0].shape == (3, 8, 8)


def test_split_is_reproducible_for_a_seed_and_changes_with_it():
    a, b = build_data(DIGITS, img_size=8), build_data(DIGITS, img_size=8)
    c = build_data(replace(DIGITS, split_seed=1), img_size=8)
    assert np.array_equal(a.val.images, b.val.images) and np.array_equal(a.val.labels, b.val.labels)
    assert not np.array_equal(a.val.images, c.val.images)


@pytest.mark.parametrize(
    "mean, std",
    [
        ("dataset", "dataset"),
        ("imagenet", "imagenet"),
        ([0.5, 0.4, 0.3], [0.2, 0.25, 0.3]),
        ("imagenet", [0.1, 0.2, 0.3]),
    ],
)
def test_mean_and_std_choices(mean, std):
    data = build_data(replace(DIGITS, mean=mean, std=std), img_size=8)
    stats = dataset_stats(data.train.images)
    expect = {"dataset": stats, "imagenet": (IMAGENET_MEAN, IMAGENET_STD)}
    want_mean = expect[mean][0] if isinstance(mean, str) else tuple(mean)
    want_std = expect[std][1] if isinstance(std, str) else tuple(std)
    np.testing.assert_allclose(data.mean, want_mean)
    np.testing.assert_allclose(data.std, want_std)


def test_bad_inputs_name_the_key(tmp_path):
    with pytest.raises(ValueError, match="data.mean: expected 'dataset', 'imagenet' or three numbers"):
        build_data(replace(DIGITS, mean=[0.5, 0.5]), img_size=8)
    with pytest.raises(ValueError, match="data.path: give the cifar10 python archive"):
        build_data(DataConfig(source="cifar10"), img_size=8)
    for root, classes in [(tmp_path / "train", ["cat", "dog"]), (tmp_path / "val", ["cat", "owl"])]:
        for c in classes:
            (root / c).mkdir(parents=True)
            Image.new("RGB", (4, 4)).save(root / c / "0.png")
    folder = DataConfig(source="folder", path=str(tmp_path / "train"), val_path=str(tmp_path / "val"), workers=0)
    with pytest.raises(ValueError, match=r"data.val_path .*val: classes \['cat', 'owl'\] differ"):
        build_data(folder, img_size=4)


def test_runs_inside_share_decoded_decode_a_folder_once(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    for c in ["cat", "dog"]:
        (tmp_path / c).mkdir()
        for i in range(5):
            Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)).save(tmp_path / c / f"{i}.png")
    calls = []
    decode = build_module.cache_decoded
    monkeypatch.setattr(build_module, "cache_decoded", lambda *a, **k: calls.append(1) or decode(*a, **k))
    folder = DataConfig(
        source="folder",
        path=str(tmp_path),
        val_split=0.4,
        cache=True,
        workers=0,
        crop="pad",
        auto_augment=None,
        re_prob=0.0,
        mixup_alpha=0.0,
        cutmix_alpha=0.0,
        repeated_aug=False,
    )
    with share_decoded():
        first = build_data(folder, img_size=4)
        second = build_data(replace(folder, batch_augment=True, padding=2), img_size=4)  # another run's transforms
        other_split = build_data(replace(folder, split_seed=1), img_size=4)
    assert len(calls) == 4  # train and val once for each split, not again for the second run
    assert second.train.images is first.train.images and second.val.images is first.val.images
    assert second.train.transform is not first.train.transform  # each run keeps its own transforms
    assert not np.array_equal(other_split.val.images, first.val.images)
    build_data(folder, img_size=4)  # outside the block nothing is kept
    assert len(calls) == 6


def test_a_run_reusing_decoded_splits_gets_the_bad_file_log_of_the_run_that_decoded_them(tmp_path):
    root = tmp_path / "images"
    rng = np.random.default_rng(0)
    for c in ["cat", "dog"]:
        (root / c).mkdir(parents=True)
        for i in range(5):
            Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)).save(root / c / f"{i}.png")
    (root / "dog" / "broken.png").write_bytes(b"not a png")
    folder = DataConfig(
        source="folder",
        path=str(root),
        val_split=0.4,
        cache=True,
        workers=0,
        crop="pad",
        auto_augment=None,
        re_prob=0.0,
        mixup_alpha=0.0,
        cutmix_alpha=0.0,
        repeated_aug=False,
    )
    teacher_log, student_log = tmp_path / "teacher" / "bad.tsv", tmp_path / "student" / "bad.tsv"
    teacher_log.parent.mkdir()
    with pytest.warns(Warning, match="broken.png"), share_decoded():
        build_data(folder, img_size=4, bad_log=teacher_log)
        build_data(folder, img_size=4, bad_log=student_log)
    assert "broken.png" in teacher_log.read_text()
    assert student_log.read_text() == teacher_log.read_text()
