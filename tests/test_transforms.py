import random

import numpy as np
import pytest
import torch
from PIL import Image

from resmlp.data.randaugment import RandAugment
from resmlp.data.random_erasing import RandomErasing
from resmlp.data.transforms import (
    Compose,
    RandomCropPad,
    RandomHorizontalFlip,
    RandomResizedCrop,
    ResizeCenterCrop,
    ToTensorNormalize,
    build_eval_transform,
    build_train_transform,
    resolve_interpolation,
)

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _image(height: int, width: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@pytest.mark.parametrize("scale", [(0.08, 1.0), (0.25, 0.5)])
def test_rrc_box_area_and_aspect_within_bounds(scale):
    height, width = 240, 320
    random.seed(0)
    for _ in range(300):
        top, left, h, w = RandomResizedCrop.get_params(height, width, scale, (3 / 4, 4 / 3))
        assert 0 <= top <= height - h and 0 <= left <= width - w
        slack = (h + w) / 2 + 0.25  # rounding h and w to ints
        assert scale[0] * height * width - slack <= h * w <= scale[1] * height * width + slack
        assert 3 / 4 - 2 / h <= w / h <= 4 / 3 + 2 / h  # rounding slack


def test_rrc_fallback_is_centred_crop_clamped_to_ratio():
    # A 4:1 strip with scale 1 never fits in 10 tries: fall back to the widest 4/3 centred crop.
    assert RandomResizedCrop.get_params(100, 400, (1.0, 1.0), (3 / 4, 4 / 3)) == (0, 133, 100, 133)
    assert RandomResizedCrop.get_params(400, 100, (1.0, 1.0), (3 / 4, 4 / 3)) == (133, 0, 133, 100)


def test_rrc_call_crops_the_sampled_box():
    img = _image(60, 80)
    random.seed(3)
    top, left, h, w = RandomResizedCrop.get_params(60, 80, (0.08, 1.0), (3 / 4, 4 / 3))
    expected = img.crop((left, top, left + w, top + h)).resize((32, 32), Image.Resampling.BICUBIC)
    random.seed(3)
    out = RandomResizedCrop(32)(img)
    assert out.size == (32, 32) and out.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(out), np.asarray(expected))


def test_crop_pad_is_a_window_of_the_zero_padded_image():
    img = _image(32, 32)
    padded = np.pad(np.asarray(img), ((4, 4), (4, 4), (0, 0)))  # zero padding
    random.seed(0)
    offsets = set()
    for _ in range(50):
        out = np.asarray(RandomCropPad(32, padding=4)(img))
        assert out.shape == (32, 32, 3)
        matches = [(t, l) for t in range(9) for l in range(9) if np.array_equal(padded[t : t + 32, l : l + 32], out)]
        assert len(matches) == 1
        offsets.add(matches[0])
    assert len(offsets) > 20  # offsets vary over the 9 x 9 grid


def test_horizontal_flip():
    img = _image(5, 7)
    flipped = np.asarray(RandomHorizontalFlip(p=1.0)(img))
    np.testing.assert_array_equal(flipped, np.asarray(img)[:, ::-1])
    assert RandomHorizontalFlip(p=0.0)(img) is img
    random.seed(0)
    count = sum(RandomHorizontalFlip(0.5)(img) is not img for _ in range(400))
    assert 150 < count < 250


def test_center_crop_exact_window_without_resize():
    # crop_pct 0.5: shorter side resized to 16 == its size, so only the centre crop acts.
    img = _image(24, 16)
    out = np.asarray(ResizeCenterCrop(8, crop_pct=0.5)(img))
    np.testing.assert_array_equal(out, np.asarray(img)[8:16, 4:12])


def test_eval_transform_size_and_centre():
    # Black 300x400 image with a white 40x40 square at its centre.
    array = np.zeros((300, 400, 3), dtype=np.uint8)
    array[130:170, 180:220] = 255
    x = build_eval_transform(224, mean=(0, 0, 0), std=(1, 1, 1), crop_pct=0.875)(Image.fromarray(array))
    assert x.shape == (3, 224, 224) and x.dtype == torch.float32
    # Resized by 256 / 300: the square is ~34 px wide, centred at (111.5, 111.5) in the crop.
    white = (x[0] > 0.5).nonzero().float()
    torch.testing.assert_close(white.mean(0), torch.tensor([111.5, 111.5]), atol=0.6, rtol=0)
    assert 32 <= int((x[0, 112] > 0.5).sum()) <= 36
    assert float(x[:, :20, :20].abs().max()) < 0.01  # corners stay black


def test_resize_keeps_aspect_of_shorter_side():
    resize = ResizeCenterCrop(224, crop_pct=0.9)
    assert resize.resize_to == 248  # floor(224 / 0.9)
    assert resize(_image(100, 50)).size == (224, 224)


def test_to_tensor_normalize_values():
    img = _image(4, 6)
    x = ToTensorNormalize(MEAN, STD)(img)
    assert x.shape == (3, 4, 6) and x.dtype == torch.float32
    raw = torch.from_numpy(np.array(img)).permute(2, 0, 1).float() / 255
    torch.testing.assert_close(x, (raw - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1))
    gray = ToTensorNormalize((0, 0, 0), (1, 1, 1))(Image.new("L", (2, 2), 255))
    torch.testing.assert_close(gray, torch.ones(3, 2, 2))


def test_train_transform_order_and_output():
    transform = build_train_transform(32, mean=MEAN, std=STD)
    kinds = [type(t) for t in transform.transforms]
    assert kinds == [RandomResizedCrop, RandomHorizontalFlip, RandAugment, ToTensorNormalize, RandomErasing]
    assert transform.transforms[2].ops[0].fill == (124, 116, 104)  # mean * 255
    assert transform.transforms[2].ops[0].resample == Image.Resampling.BICUBIC
    x = transform(_image(48, 40))
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and torch.isfinite(x).all()


def test_train_transform_seeded_determinism():
    transform = build_train_transform(32, mean=MEAN, std=STD, re_prob=1.0)
    img = _image(48, 40)
    _seed_all(11)
    first = transform(img)
    _seed_all(11)
    torch.testing.assert_close(transform(img), first, rtol=0, atol=0)
    _seed_all(12)
    assert not torch.equal(transform(img), first)


def test_train_transform_optional_steps_skip():
    transform = build_train_transform(
        32, mean=MEAN, std=STD, crop="pad", padding=0, hflip=0.0, auto_augment=None, re_prob=0.0
    )
    assert [type(t) for t in transform.transforms] == [RandomCropPad, ToTensorNormalize]
    img = _image(32, 32)
    torch.testing.assert_close(transform(img), ToTensorNormalize(MEAN, STD)(img))
    assert build_train_transform(32, mean=MEAN, std=STD, crop="pad")(img).shape == (3, 32, 32)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: resolve_interpolation("cubic"), "valid: .*bicubic"),
        (lambda: RandomResizedCrop(32, interpolation="area"), "unknown interpolation 'area'"),
        (lambda: RandomResizedCrop(32, scale=(0.5, 0.1)), "scale"),
        (lambda: RandomResizedCrop(0), "size"),
        (lambda: ResizeCenterCrop(32, crop_pct=1.5), "crop_pct"),
        (lambda: ToTensorNormalize((0.5,), (0.5,)), "3 \\(RGB\\)"),
        (lambda: ToTensorNormalize(MEAN, (1, 0, 1)), "std must be positive"),
        (lambda: build_train_transform(32, mean=MEAN, std=STD, crop="center"), "unknown crop 'center'"),
        (lambda: build_train_transform(32, mean=MEAN, std=STD, hflip=2.0), "hflip"),
        (lambda: build_train_transform(32, mean=MEAN, std=STD, re_prob=0.0, re_mode="noise"), "re_mode"),
        (lambda: build_train_transform(32, mean=MEAN, std=STD, auto_augment="rand-q3"), "'q'"),
    ],
)
def test_bad_arguments_raise(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_crop_pad_resizes_images_of_another_size_first():
    """A 32 px image for a model run at 16 px: the crop sees the whole (downscaled) scene, not a window."""
    _seed_all(0)
    img = Image.new("RGB", (32, 32), (255, 255, 255))
    img.paste((0, 0, 0), (0, 0, 16, 32))  # left half black, right half white
    out = np.asarray(RandomCropPad(16, padding=0)(img))
    assert out.shape == (16, 16, 3)
    assert out[:, :6].max() < 30 and out[:, 10:].min() > 225  # both halves, each 8 px wide
    assert RandomCropPad(32, padding=2)(_image(20, 20)).size == (32, 32)


def test_compose_applies_in_order():
    assert Compose([lambda v: v + 1, lambda v: v * 3])(1) == 6


def test_non_square_sizes_crop_and_resize_to_height_by_width():
    _seed_all(0)
    img = _image(40, 50)
    assert RandomResizedCrop((24, 32))(img).size == (32, 24)  # PIL sizes are (width, height)
    assert RandomCropPad((24, 32), padding=2)(_image(24, 32)).size == (32, 24)
    assert ResizeCenterCrop((24, 32), crop_pct=1.0)(img).size == (32, 24)
    assert ResizeCenterCrop((32, 24), crop_pct=0.875)(_image(100, 50)).size == (24, 32)
    assert ResizeCenterCrop(32, crop_pct=1.0)(img).size == (32, 32)
    x = build_eval_transform([24, 32], mean=MEAN, std=STD, crop_pct=1.0)(img)
    assert x.shape == (3, 24, 32)
    with pytest.raises(ValueError, match=r"positive int or \(height, width\)"):
        ResizeCenterCrop((24, 32, 3))


def test_output_size_can_change_after_the_pipeline_is_built():
    from resmlp.data.transforms import ResizeTensor, with_output_size

    base = build_train_transform(32, mean=MEAN, std=STD, crop="pad", auto_augment=None, re_prob=0.0)
    small = with_output_size(base, 16)
    assert small(_image(32, 32)).shape == (3, 16, 16)
    again = with_output_size(small, (8, 12))
    assert sum(isinstance(t, ResizeTensor) for t in again.transforms) == 1
    assert again(_image(32, 32)).shape == (3, 8, 12)
    assert with_output_size(again, None)(_image(32, 32)).shape == (3, 32, 32)


def test_crop_mode_cuts_windows_at_full_scale():
    """Progressive resizing's "crop" mode: a random window in training, the central one in validation, the
    pixels untouched (same scale), and one size-changing step at a time whatever the mode."""
    from resmlp.data.transforms import CropTensor, ResizeTensor, with_output_size

    x = torch.arange(3 * 8 * 10, dtype=torch.float32).view(3, 8, 10)
    assert torch.equal(CropTensor((4, 6), train=False)(x), x[:, 2:6, 2:8])
    random.seed(0)
    windows = {tuple(CropTensor(4, train=True)(x)[0, 0, :1].tolist()) for _ in range(50)}
    assert len(windows) > 5  # random positions
    for _ in range(20):
        w = CropTensor(4, train=True)(x)
        top, left = divmod(int(w[0, 0, 0]), 10)
        assert torch.equal(w, x[:, top : top + 4, left : left + 4])  # a window of the input, not a resize
    with pytest.raises(ValueError, match="cannot crop 9x9 out of a 8x10 image"):
        CropTensor(9, train=True)(x)
    base = build_train_transform(32, mean=MEAN, std=STD, crop="pad", auto_augment=None, re_prob=0.0)
    cropped = with_output_size(with_output_size(base, 16), 16, mode="crop", train=True)
    assert [type(t) for t in cropped.transforms[-1:]] == [CropTensor]
    assert not any(isinstance(t, ResizeTensor) for t in cropped.transforms)
    assert cropped(_image(32, 32)).shape == (3, 16, 16)
    with pytest.raises(ValueError, match="unknown mode 'zoom'"):
        with_output_size(base, 16, mode="zoom")
