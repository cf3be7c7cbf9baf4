"""Batch augmentation (data/batch_augment.py, `data.batch_augment`): the same pad-crop / flip / normalise
draws as the per-image pipeline, the progressive output sizes, the config rules and a run that uses it."""

import dataclasses
import json
import random

import numpy as np
import pytest
import torch
from PIL import Image

from resmlp.checkpoint import read_checkpoint
from resmlp.cli import main
from resmlp.config import ConfigError, load_config
from resmlp.data.batch_augment import BatchAugment, ToUint8Tensor
from resmlp.data.transforms import ToTensorNormalize, build_train_transform
from resmlp.train.run import train

MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


def batch(b=8, h=8, w=8, seed=0):
    return torch.randint(0, 256, (b, 3, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def normalised(images):
    """What ToTensorNormalize makes of each uint8 (3, H, W) image."""
    norm = ToTensorNormalize(MEAN, STD)
    return torch.stack([norm(Image.fromarray(x.permute(1, 2, 0).numpy())) for x in images])


def windows(images, padding, size):
    """Every (top, left, flipped) window of the zero-padded (black), normalised images: (B, K, 3, h, w) and
    the keys."""
    padded = normalised(torch.nn.functional.pad(images, (padding,) * 4))
    h, w = size
    keys, views = [], []
    for top in range(padded.shape[2] - h + 1):
        for left in range(padded.shape[3] - w + 1):
            view = padded[:, :, top : top + h, left : left + w]
            keys += [(top, left, False), (top, left, True)]
            views += [view, view.flip(-1)]
    return torch.stack(views, 1), keys


def matched_windows(out, images, padding):
    """For each output image, the (top, left, flipped) window of its padded input that it equals."""
    views, keys = windows(images, padding, out.shape[-2:])
    err = (views - out[:, None]).abs().flatten(2).amax(2)  # (B, K)
    best = err.argmin(1)
    assert (err[torch.arange(len(out)), best] < 1e-4).all(), "an output is no window of its padded input"
    return [keys[k] for k in best]


def test_without_padding_or_flip_it_is_the_per_image_normalisation():
    images = batch()
    out = BatchAugment(mean=MEAN, std=STD, padding=0, hflip=0.0)(images)
    torch.testing.assert_close(out, normalised(images), atol=1e-5, rtol=1e-5)
    assert out.dtype == torch.float32 and out.shape == (8, 3, 8, 8)


def test_every_output_is_a_padded_window_and_the_draws_cover_all_offsets_and_flips():
    images = batch(b=400, h=6, w=6)
    out = BatchAugment(mean=MEAN, std=STD, padding=2, hflip=0.5, generator=torch.Generator().manual_seed(0))(images)
    keys = matched_windows(out, images, padding=2)
    assert {(t, l) for t, l, _ in keys} == {(t, l) for t in range(5) for l in range(5)}  # 0..2p both ways
    assert 0.4 < np.mean([f for _, _, f in keys]) < 0.6


def test_the_generator_decides_the_draws():
    images = batch(b=16)
    make = lambda seed: BatchAugment(mean=MEAN, std=STD, generator=torch.Generator().manual_seed(seed))  # noqa: E731
    assert torch.equal(make(1)(images), make(1)(images))
    assert not torch.equal(make(1)(images), make(2)(images))


def test_crop_mode_cuts_a_smaller_window_with_the_per_image_offset_range():
    images = batch(b=300, h=8, w=8)
    aug = BatchAugment(mean=MEAN, std=STD, padding=1, hflip=0.0, generator=torch.Generator().manual_seed(0))
    out = aug.with_output_size(4, "crop")(images)
    assert out.shape == (300, 3, 4, 4)
    keys = matched_windows(out, images, padding=1)
    tops = [t for t, _, _ in keys]
    assert min(tops) == 0 and max(tops) == 2 + 4  # pad-crop offset 0..2p plus the window's 0..(8 - 4)
    # the per-image pipeline draws the two offsets separately too: the sum is not uniform
    assert np.bincount(tops).argmax() in (2, 3, 4)


def test_views_give_the_full_crop_each_window_was_cut_from():
    images = batch(b=200, h=8, w=8)
    aug = BatchAugment(mean=MEAN, std=STD, padding=2, hflip=0.5, generator=torch.Generator().manual_seed(0))
    windowed = aug.with_output_size(5, "crop")
    out, full = windowed.views(images)
    assert out.shape == (200, 3, 5, 5) and full.shape == (200, 3, 8, 8)
    for i in range(len(images)):  # each window is a window of its own full crop, mirrored alike
        hits = [(t, l) for t in range(4) for l in range(4) if torch.equal(full[i, :, t : t + 5, l : l + 5], out[i])]
        assert hits, f"window {i} is not inside its full-size view"
    flips = [f for _, _, f in matched_windows(full, images, padding=2)]  # the full views are pad-crops
    assert 0.35 < np.mean(flips) < 0.65
    # the same draws as the call: the student's batch does not change when the teacher's view is asked for
    again = dataclasses.replace(windowed, generator=torch.Generator().manual_seed(0))
    assert torch.equal(again(images), out)
    same, same_full = aug.views(images)  # at full size the two views are one
    assert same is same_full


def test_resize_mode_shrinks_the_augmented_image_and_sizes_may_be_non_square():
    images = batch(b=4, h=8, w=12)
    aug = BatchAugment(mean=MEAN, std=STD, padding=0, hflip=0.0).with_output_size((4, 6), "resize")
    out = aug(images)
    want = torch.nn.functional.interpolate(
        normalised(images), size=(4, 6), mode="bilinear", align_corners=False, antialias=True
    )
    torch.testing.assert_close(out, want, atol=1e-4, rtol=1e-4)
    assert aug.with_output_size(None)(images).shape == (4, 3, 8, 12)


def test_bad_batches_and_settings_are_refused():
    aug = BatchAugment(mean=MEAN, std=STD)
    with pytest.raises(ValueError, match="expected a uint8"):
        aug(torch.zeros(2, 3, 8, 8))
    with pytest.raises(ValueError, match="cannot crop 10x10 out of 8x8"):
        aug.with_output_size(10, "crop")(batch())
    with pytest.raises(ValueError, match="unknown mode"):
        BatchAugment(mean=MEAN, std=STD, mode="zoom")
    with pytest.raises(ValueError, match="hflip"):
        BatchAugment(mean=MEAN, std=STD, hflip=1.5)


def test_to_uint8_tensor_resizes_other_sizes_and_keeps_the_pixels_otherwise():
    pixels = np.random.default_rng(0).integers(0, 256, (6, 5, 3), dtype=np.uint8)
    x = ToUint8Tensor((6, 5))(Image.fromarray(pixels))
    assert x.dtype == torch.uint8 and torch.equal(x, torch.from_numpy(pixels).permute(2, 0, 1))
    assert ToUint8Tensor(8)(Image.fromarray(pixels).convert("L")).shape == (3, 8, 8)


def test_batch_and_per_image_pipelines_draw_the_same_distribution_of_mean_pixels():
    """Per pixel position, the mean over many draws agrees between the two pipelines (padding shows as a
    darker border in both)."""
    image = np.random.default_rng(1).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    per_image = build_train_transform(8, mean=MEAN, std=STD, crop="pad", padding=2, auto_augment=None, re_prob=0.0)
    random.seed(0)  # RandomCropPad and RandomHorizontalFlip draw from `random`
    a = torch.stack([per_image(Image.fromarray(image)) for _ in range(3000)]).mean(0)
    images = torch.from_numpy(image).permute(2, 0, 1)[None].repeat(3000, 1, 1, 1)
    b = BatchAugment(mean=MEAN, std=STD, padding=2, generator=torch.Generator().manual_seed(0))(images).mean(0)
    assert (a - b).abs().max() < 0.15, (a - b).abs().max()


@pytest.mark.parametrize(
    "override, key",
    [
        ("data.crop=rrc", "data.crop"),
        ("data.auto_augment=rand-m9", "data.auto_augment"),
        ("data.re_prob=0.25", "data.re_prob"),
    ],
)
def test_config_refuses_per_image_steps_naming_the_key(override, key):
    with pytest.raises(ConfigError, match=f"data.batch_augment: .*{key}"):
        load_config("digits", ["data.batch_augment=true", override])


def test_config_keeps_the_alternating_flip_at_half_the_images():
    with pytest.raises(ConfigError, match="data.hflip_alternate.*data.hflip must be 0.5, got 0.3"):
        load_config("digits", ["data.hflip_alternate=true", "data.hflip=0.3"])
    data = load_config("digits", ["data.hflip_alternate=true", "data.hflip=0.5"]).data
    assert data.random_hflip == 0.0 and load_config("digits", ["data.hflip=0.5"]).data.random_hflip == data.hflip


TINY = [
    "model.embed_dim=16",
    "model.depth=1",
    "data.batch_size=64",
    "data.workers=0",
    "optim.warmup_epochs=1",
    "run.progress=false",
    "run.tensorboard=false",
    "data.hflip=0.5",
    "data.batch_augment=true",
]


@pytest.mark.slow
def test_a_progressive_run_with_batch_augmentation_resumes_exactly_across_the_switch(tmp_path):
    """k epochs + resume + k epochs == 2k epochs with batches augmented from the checkpointed generator,
    across a progressive switch, with the stem whitened through the batch augmentation."""
    common = TINY + [
        "optim.epochs=2",
        "model.stem_init=pca",
        "model.stem_init_samples=200",
        "progressive.mode=crop",
        "progressive.sizes=[[0, 4], [1, 8]]",
    ]
    train(load_config("digits", common), out=tmp_path / "full")
    train(load_config("digits", common + ["budget.time_limit_min=0"]), out=tmp_path / "split")
    assert main(["train", "--resume", str(tmp_path / "split"), "--set", "budget.time_limit_min=null"]) == 0
    a = read_checkpoint(tmp_path / "full" / "checkpoints" / "last.pt")["model"]
    b = read_checkpoint(tmp_path / "split" / "checkpoints" / "last.pt")["model"]
    for k in a:
        assert torch.equal(a[k], b[k]), k
    rows = [json.loads(x) for x in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert [r["img_size"] for r in rows] == [4, 8]


def test_an_alternating_flip_run_shows_each_image_both_ways_in_two_epochs(tmp_path):
    from resmlp.train.run import build

    run = build(load_config("digits", TINY + ["data.hflip_alternate=true"]), tmp_path / "run", torch.device("cpu"))
    assert run.ctx.augment.hflip == 0.0  # no random flip on top of the alternating one
    flipped = [{}, {}]
    for epoch in (0, 1):
        run.sampler.set_epoch(epoch)
        order = [index for index, _, _ in run.sampler]
        for index, image in zip(order, torch.cat([images for images, _ in run.train_loader])):
            original = run.data.train[index][0]
            if not torch.equal(original, original.flip(-1)):  # a mirror-symmetric image says nothing
                assert torch.equal(image, original) or torch.equal(image, original.flip(-1))
                flipped[epoch][index] = torch.equal(image, original.flip(-1))
    both = flipped[0].keys() & flipped[1].keys()
    assert len(both) > 500 and all(flipped[0][i] != flipped[1][i] for i in both)
    assert 0.4 < sum(flipped[0][i] for i in both) / len(both) < 0.6


@pytest.mark.slow
def test_a_run_with_batch_augmentation_learns_as_the_per_image_pipeline_does(tmp_path):
    common = TINY[:-2] + ["optim.epochs=3"]
    top1 = {}
    for batch in ("true", "false"):
        train(load_config("digits", common + [f"data.batch_augment={batch}"]), out=tmp_path / batch)
        top1[batch] = json.loads((tmp_path / batch / "summary.json").read_text())["final_val_top1"]
    assert top1["true"] > 18 and abs(top1["true"] - top1["false"]) < 8, top1  # chance is 10%
