"""data/build.py: from a DataConfig to the train/val splits, their transforms and normalisation."""
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from resmlp.config import DataConfig
from resmlp.data.build import build_data
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


@pytest.mark.parametrize("mean, std", [("dataset", "dataset"), ("imagenet", "imagenet"),
                                       ([0.5, 0.4, 0.3], [0.2, 0.25, 0.3]), ("imagenet", [0.1, 0.2, 0.3])])
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
