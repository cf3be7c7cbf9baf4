import math
import random

import numpy as np
import pytest
from PIL import Image

from resmlp.data.randaugment import (
    OPS,
    RAND_INCREASING_OPS,
    RAND_OPS,
    AugmentOp,
    RandAugment,
    parse_rand_augment_config,
    rand_augment_from_string,
)

FILL = (124, 116, 104)
MAGNITUDE_FREE = {"AutoContrast", "Equalize", "Invert"}


def _image(size: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))


def _smooth_image(size: int = 32) -> Image.Image:
    # A gradient with a bright square: geometric ops move structure instead of shuffling noise.
    rows, cols = np.mgrid[0:size, 0:size].astype(np.float32) * (200 / size)
    array = np.stack([cols, rows, np.full_like(rows, 80)], axis=-1)
    array[size // 4 : size // 2, size // 4 : size // 2] = 255
    return Image.fromarray(array.astype(np.uint8))


def _apply(name: str, img: Image.Image, magnitude: float, seed: int = 0) -> np.ndarray:
    random.seed(seed)
    return np.asarray(AugmentOp(name, magnitude, prob=1.0, fill=FILL)(img)).astype(np.int64)


def test_parse_deit_config():
    params = parse_rand_augment_config("rand-m9-mstd0.5-inc1")
    assert params == {"m": 9.0, "n": 2, "mstd": 0.5, "mmax": 10.0, "inc": 1, "p": 0.5}


def test_parse_all_keys_and_uniform_noise():
    params = parse_rand_augment_config("rand-n3-m5.5-mmax8-p1-inc0-mstd101")
    assert (params["n"], params["m"], params["mmax"], params["p"], params["inc"]) == (3, 5.5, 8.0, 1.0, 0)
    assert math.isinf(params["mstd"])  # > 100 means "magnitude ~ U(0, m)"


@pytest.mark.parametrize(
    "config, message",
    [
        ("rnd-m9", "start with 'rand'"),
        ("rand-x3", "unknown RandAugment config key 'x'"),
        ("rand-w0", "unknown RandAugment config key 'w'"),
        ("rand-m", "malformed"),
        ("rand-m9-", "malformed"),
        ("rand-m11", "m must be in"),
        ("rand-m9-mmax12", "mmax must be in"),
        ("rand-n2.5", "integer"),
        ("rand-inc2", "inc must be 0 or 1"),
        ("rand-p1.5", "p must be in"),
    ],
)
def test_bad_configs_raise(config, message):
    with pytest.raises(ValueError, match=message):
        parse_rand_augment_config(config)


def test_from_string_builds_increasing_op_set():
    ra = rand_augment_from_string("rand-m9-mstd0.5-inc1", fill=FILL)
    assert ra.num_ops == 2
    assert [op.name for op in ra.ops] == list(RAND_INCREASING_OPS) and len(ra.ops) == 15
    assert all((op.magnitude, op.magnitude_std, op.prob, op.fill) == (9.0, 0.5, 0.5, FILL) for op in ra.ops)
    assert all(op.resample == Image.Resampling.BILINEAR for op in ra.ops)
    plain = rand_augment_from_string("rand-m9-n1", fill=FILL, interpolation="bicubic")
    assert [op.name for op in plain.ops] == list(RAND_OPS) and plain.num_ops == 1
    assert plain.ops[0].resample == Image.Resampling.BICUBIC


def test_from_string_rejects_bad_interpolation_and_fill():
    with pytest.raises(ValueError, match="bilinear"):
        rand_augment_from_string("rand-m9", fill=FILL, interpolation="lanczos")
    with pytest.raises(ValueError, match="RGB triple"):
        rand_augment_from_string("rand-m9", fill=(1, 2))
    with pytest.raises(ValueError, match="unknown RandAugment op"):
        AugmentOp("Cutout", 9.0)


@pytest.mark.parametrize("size", [8, 32, 224])
@pytest.mark.parametrize("name", sorted(OPS))
def test_every_op_keeps_size_and_mode(name, size):
    img = _image(size)
    out = AugmentOp(name, 9.0, prob=1.0, magnitude_std=0.5, fill=FILL)(img)
    assert out.size == (size, size) and out.mode == "RGB"


@pytest.mark.parametrize("name", [n for n in RAND_INCREASING_OPS if n not in MAGNITUDE_FREE | {"PosterizeIncreasing"}])
def test_increasing_ops_are_identity_at_magnitude_zero(name):
    img = _image(32)
    np.testing.assert_array_equal(_apply(name, img, 0.0), np.asarray(img))


def test_posterize_and_solarize_increasing_endpoints():
    img = _image(32)
    array = np.asarray(img).astype(np.int64)
    np.testing.assert_array_equal(_apply("PosterizeIncreasing", img, 0.0), array & 0xF0)  # keeps 4 bits
    np.testing.assert_array_equal(_apply("PosterizeIncreasing", img, 10.0), np.zeros_like(array))  # 0 bits
    np.testing.assert_array_equal(_apply("SolarizeIncreasing", img, 10.0), 255 - array)  # threshold 0
    np.testing.assert_array_equal(_apply("Solarize", img, 0.0), 255 - array)  # original op: strongest at m=0


@pytest.mark.parametrize("name", [n for n in RAND_INCREASING_OPS if n not in MAGNITUDE_FREE])
def test_increasing_ops_get_stronger_with_magnitude(name):
    img = _smooth_image()
    array = np.asarray(img).astype(np.int64)
    for seed in range(3):  # same seed -> same random sign at both magnitudes
        weak = np.abs(_apply(name, img, 3.0, seed) - array).mean()
        strong = np.abs(_apply(name, img, 9.0, seed) - array).mean()
        assert strong > weak, (name, seed, weak, strong)


def test_solarize_add_only_brightens_dark_pixels():
    img = _image(32)
    array = np.asarray(img).astype(np.int64)
    out = _apply("SolarizeAdd", img, 10.0)  # adds int(110) below threshold 128
    dark = array < 128
    np.testing.assert_array_equal(out[dark], np.minimum(array[dark] + 110, 255))
    np.testing.assert_array_equal(out[~dark], array[~dark])


def test_translate_uncovers_fill_colour():
    img = Image.new("RGB", (32, 32), (255, 255, 255))
    out = _apply("TranslateXRel", img, 10.0)  # shift by 0.45 * 32 = 14.4 pixels, either way
    left, right = out[:, :14], out[:, -14:]
    assert (left == FILL).all() or (right == FILL).all()


def test_magnitude_noise_is_clipped():
    random.seed(0)
    gauss = AugmentOp("Rotate", 10.0, magnitude_std=5.0, magnitude_max=10.0)
    samples = [gauss.sample_magnitude() for _ in range(500)]
    assert min(samples) >= 0.0 and max(samples) == 10.0 and np.mean(samples) < 10.0
    uniform = AugmentOp("Rotate", 6.0, magnitude_std=math.inf)
    samples = [uniform.sample_magnitude() for _ in range(500)]
    assert 0.0 <= min(samples) < 1.0 and 5.0 < max(samples) <= 6.0


def test_op_probability():
    img = _image(8)
    random.seed(0)
    assert AugmentOp("Invert", 9.0, prob=0.0)(img) is img
    applied = sum(AugmentOp("Invert", 9.0, prob=0.5)(img) is not img for _ in range(400))
    assert 150 < applied < 250


def test_ops_are_chosen_with_replacement():
    img = _image(8)
    np.random.seed(0)
    # A single op, chosen twice: inverting twice is the identity.
    out = RandAugment([AugmentOp("Invert", 0.0, prob=1.0)], num_ops=2)(img)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(img))
    assert RandAugment([AugmentOp("Invert", 0.0, prob=1.0)], num_ops=0)(img) is img


def _seeded_run(ra: RandAugment, img: Image.Image, seed: int) -> np.ndarray:
    random.seed(seed)
    np.random.seed(seed)
    return np.asarray(ra(img))


def test_seeded_determinism():
    ra = rand_augment_from_string("rand-m9-mstd0.5-inc1-p1", fill=FILL)
    img = _image(64)
    np.testing.assert_array_equal(_seeded_run(ra, img, 3), _seeded_run(ra, img, 3))
    assert not np.array_equal(_seeded_run(ra, img, 3), _seeded_run(ra, img, 4))


SIGNED_OPS = {
    "Rotate",
    "ShearX",
    "ShearY",
    "TranslateXRel",
    "TranslateYRel",
    "ColorIncreasing",
    "ContrastIncreasing",
    "BrightnessIncreasing",
    "SharpnessIncreasing",
}


@pytest.mark.parametrize("name", [n for n in RAND_INCREASING_OPS if n not in MAGNITUDE_FREE])
def test_signed_ops_draw_a_random_sign(name):
    img = _smooth_image()
    outputs = {_apply(name, img, 6.0, seed).tobytes() for seed in range(20)}
    assert len(outputs) == (2 if name in SIGNED_OPS else 1)
