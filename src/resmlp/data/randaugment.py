"""RandAugment (Cubuk et al. 2020) configured by timm-style strings.

ResMLP (Sec. 3, "Training paradigm") trains with the DeiT recipe, whose RandAugment setting is
``rand-m9-mstd0.5-inc1``: ``n=2`` ops drawn uniformly with replacement per image, magnitude 9 (out
of 10) perturbed per op by Gaussian noise of std 0.5, the "increasing" op set (a larger magnitude is
always a stronger distortion), each op applied with probability ``p=0.5``.

Config string: ``rand`` followed by ``-``-separated ``<key><number>`` sections:

- ``m``: magnitude in [0, 10] (default 10)
- ``n``: number of ops per image (default 2)
- ``mstd``: std of the Gaussian noise added to the magnitude per op (default 0; > 100 means
  "uniform in [0, m]")
- ``mmax``: upper clip for the noisy magnitude, in (0, 10] (default 10)
- ``inc``: 1 selects the increasing op set (default 0)
- ``p``: probability of applying each chosen op (default 0.5)

Randomness: op choice from ``np.random``; probability, magnitude noise and signs from ``random``.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

Fill = tuple[int, int, int]

LEVEL_DENOM = 10.0  # magnitudes live in [0, LEVEL_DENOM]; every op scales by magnitude / LEVEL_DENOM
MAX_ROTATE_DEG = 30.0
MAX_SHEAR = 0.3
MAX_TRANSLATE_FRACTION = 0.45  # of the image width (x) or height (y)
MAX_SOLARIZE_ADD = 110
MAX_ENHANCE_DELTA = 0.9  # increasing enhance ops use a factor 1 +/- 0.9 * m / 10

# Pillow's affine transform and rotate accept only these three filters.
RESAMPLE_FILTERS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
}


def _signed(value: float) -> float:
    """Return ``value`` with a random sign (each sign with probability 1/2)."""
    return -value if random.random() > 0.5 else value


def _affine(img: Image.Image, coeffs: tuple[float, ...], fill: Fill, resample: int) -> Image.Image:
    # coeffs (a, b, c, d, e, f) map each output pixel (x, y) to input (a x + b y + c, d x + e y + f).
    return img.transform(img.size, Image.Transform.AFFINE, coeffs, resample=resample, fillcolor=fill)


def _posterize_bits(img: Image.Image, bits: int) -> Image.Image:
    # Own LUT rather than ImageOps.posterize, which rejects bits=0 (reached at m=10, e.g. m9 + noise).
    if bits >= 8:
        return img
    mask = 0xFF & ~(2 ** (8 - bits) - 1)  # keep the ``bits`` most significant bits
    return img.point([v & mask for v in range(256)] * len(img.getbands()))


def _solarize_add(img: Image.Image, add: int, threshold: int = 128) -> Image.Image:
    lut = [min(255, v + add) if v < threshold else v for v in range(256)]
    return img.point(lut * len(img.getbands()))


# Each op takes (img, magnitude in [0, 10], fill, resample); ``f`` below is magnitude / 10.
def _auto_contrast(img, m, fill, resample):
    return ImageOps.autocontrast(img)


def _equalize(img, m, fill, resample):
    return ImageOps.equalize(img)


def _invert(img, m, fill, resample):
    return ImageOps.invert(img)


def _rotate(img, m, fill, resample):
    return img.rotate(_signed(m / LEVEL_DENOM * MAX_ROTATE_DEG), resample=resample, fillcolor=fill)


def _shear_x(img, m, fill, resample):
    return _affine(img, (1, _signed(m / LEVEL_DENOM * MAX_SHEAR), 0, 0, 1, 0), fill, resample)


def _shear_y(img, m, fill, resample):
    return _affine(img, (1, 0, 0, _signed(m / LEVEL_DENOM * MAX_SHEAR), 1, 0), fill, resample)


def _translate_x_rel(img, m, fill, resample):
    pixels = _signed(m / LEVEL_DENOM * MAX_TRANSLATE_FRACTION) * img.size[0]
    return _affine(img, (1, 0, pixels, 0, 1, 0), fill, resample)


def _translate_y_rel(img, m, fill, resample):
    pixels = _signed(m / LEVEL_DENOM * MAX_TRANSLATE_FRACTION) * img.size[1]
    return _affine(img, (1, 0, 0, 0, 1, pixels), fill, resample)


def _posterize(img, m, fill, resample):
    # Original RandAugment: keeps int(4 f) bits, so severity *decreases* with magnitude.
    return _posterize_bits(img, int(m / LEVEL_DENOM * 4))


def _posterize_increasing(img, m, fill, resample):
    return _posterize_bits(img, 4 - int(m / LEVEL_DENOM * 4))  # 4 bits at m=0 ... 0 bits at m=10


def _solarize(img, m, fill, resample):
    return ImageOps.solarize(img, int(m / LEVEL_DENOM * 256))  # threshold 0 (full invert) at m=0


def _solarize_increasing(img, m, fill, resample):
    return ImageOps.solarize(img, 256 - int(m / LEVEL_DENOM * 256))  # identity at m=0


def _solarize_add_op(img, m, fill, resample):
    return _solarize_add(img, int(m / LEVEL_DENOM * MAX_SOLARIZE_ADD))


def _enhance_op(enhancer: type, increasing: bool) -> Callable:
    def op(img, m, fill, resample):
        if increasing:  # factor 1 +/- 0.9 f: 1 (identity) at m=0
            factor = max(0.1, 1.0 + _signed(m / LEVEL_DENOM * MAX_ENHANCE_DELTA))
        else:  # factor in [0.1, 1.9] growing with m; 1.0 (identity) at m=5
            factor = m / LEVEL_DENOM * 1.8 + 0.1
        return enhancer(img).enhance(factor)

    return op


OPS: dict[str, Callable[[Image.Image, float, Fill, int], Image.Image]] = {
    "AutoContrast": _auto_contrast,
    "Equalize": _equalize,
    "Invert": _invert,
    "Rotate": _rotate,
    "Posterize": _posterize,
    "PosterizeIncreasing": _posterize_increasing,
    "Solarize": _solarize,
    "SolarizeIncreasing": _solarize_increasing,
    "SolarizeAdd": _solarize_add_op,
    "Color": _enhance_op(ImageEnhance.Color, increasing=False),
    "ColorIncreasing": _enhance_op(ImageEnhance.Color, increasing=True),
    "Contrast": _enhance_op(ImageEnhance.Contrast, increasing=False),
    "ContrastIncreasing": _enhance_op(ImageEnhance.Contrast, increasing=True),
    "Brightness": _enhance_op(ImageEnhance.Brightness, increasing=False),
    "BrightnessIncreasing": _enhance_op(ImageEnhance.Brightness, increasing=True),
    "Sharpness": _enhance_op(ImageEnhance.Sharpness, increasing=False),
    "SharpnessIncreasing": _enhance_op(ImageEnhance.Sharpness, increasing=True),
    "ShearX": _shear_x,
    "ShearY": _shear_y,
    "TranslateXRel": _translate_x_rel,
    "TranslateYRel": _translate_y_rel,
}

_SHARED_OPS = ("AutoContrast", "Equalize", "Invert", "Rotate")
_GEOMETRIC_OPS = ("ShearX", "ShearY", "TranslateXRel", "TranslateYRel")
RAND_OPS = (
    _SHARED_OPS
    + (
        "Posterize",
        "Solarize",
        "SolarizeAdd",
        "Color",
        "Contrast",
        "Brightness",
        "Sharpness",
    )
    + _GEOMETRIC_OPS
)
RAND_INCREASING_OPS = (
    _SHARED_OPS
    + (
        "PosterizeIncreasing",
        "SolarizeIncreasing",
        "SolarizeAdd",
        "ColorIncreasing",
        "ContrastIncreasing",
        "BrightnessIncreasing",
        "SharpnessIncreasing",
    )
    + _GEOMETRIC_OPS
)


@dataclass(frozen=True)
class AugmentOp:
    """One RandAugment op with its magnitude, application probability and magnitude noise."""

    name: str
    magnitude: float
    prob: float = 0.5
    magnitude_std: float = 0.0  # math.inf: magnitude ~ U(0, magnitude)
    magnitude_max: float = LEVEL_DENOM
    fill: Fill = (128, 128, 128)
    resample: int = Image.Resampling.BILINEAR

    def __post_init__(self) -> None:
        if self.name not in OPS:
            raise ValueError(f"unknown RandAugment op {self.name!r}; valid ops: {sorted(OPS)}")

    def sample_magnitude(self) -> float:
        """Noisy magnitude for one application, clipped to [0, magnitude_max]."""
        magnitude = self.magnitude
        if math.isinf(self.magnitude_std):
            magnitude = random.uniform(0.0, magnitude)
        elif self.magnitude_std > 0:
            magnitude = random.gauss(magnitude, self.magnitude_std)
        return min(max(magnitude, 0.0), self.magnitude_max)

    def __call__(self, img: Image.Image) -> Image.Image:
        if self.prob < 1.0 and random.random() > self.prob:
            return img
        return OPS[self.name](img, self.sample_magnitude(), self.fill, self.resample)


class RandAugment:
    """Apply ``num_ops`` ops chosen uniformly with replacement from ``ops``, in sequence."""

    def __init__(self, ops: Sequence[AugmentOp], num_ops: int = 2) -> None:
        if not ops:
            raise ValueError("RandAugment needs at least one op")
        if num_ops < 0:
            raise ValueError(f"num_ops must be >= 0, got {num_ops}")
        self.ops = tuple(ops)
        self.num_ops = num_ops

    def __call__(self, img: Image.Image) -> Image.Image:
        for index in np.random.choice(len(self.ops), self.num_ops, replace=True):
            img = self.ops[index](img)
        return img

    def __repr__(self) -> str:
        return f"RandAugment(num_ops={self.num_ops}, ops={[op.name for op in self.ops]})"


_SECTION = re.compile(r"([a-z]+)(\d+(?:\.\d*)?)")
_KEYS = ("m", "n", "mstd", "mmax", "inc", "p")


def parse_rand_augment_config(config: str) -> dict[str, float]:
    """Parse ``rand-m9-mstd0.5-inc1`` into ``{"m", "n", "mstd", "mmax", "inc", "p"}`` (defaults filled)."""
    sections = config.split("-")
    if sections[0] != "rand":
        raise ValueError(f"RandAugment config must start with 'rand', got {config!r}")
    params: dict[str, float] = {"m": 10.0, "n": 2, "mstd": 0.0, "mmax": LEVEL_DENOM, "inc": 0, "p": 0.5}
    for section in sections[1:]:
        match = _SECTION.fullmatch(section)
        if match is None:
            raise ValueError(f"malformed RandAugment section {section!r} in {config!r}; expected <key><number>")
        key, value = match.groups()
        if key not in _KEYS:
            raise ValueError(f"unknown RandAugment config key {key!r} in {config!r}; valid keys: {list(_KEYS)}")
        if key in ("n", "inc") and not value.isdigit():
            raise ValueError(f"RandAugment key {key!r} needs an integer, got {value!r}")
        params[key] = int(value) if key in ("n", "inc") else float(value)
    if params["mstd"] > 100:
        params["mstd"] = math.inf
    _check_params(params, config)
    return params


def _check_params(params: dict[str, float], config: str) -> None:
    if not 0 < params["mmax"] <= LEVEL_DENOM:
        raise ValueError(f"mmax must be in (0, {LEVEL_DENOM:g}], got {params['mmax']:g} in {config!r}")
    if not 0 <= params["m"] <= params["mmax"]:
        raise ValueError(f"m must be in [0, mmax={params['mmax']:g}], got {params['m']:g} in {config!r}")
    if params["inc"] not in (0, 1):
        raise ValueError(f"inc must be 0 or 1, got {params['inc']} in {config!r}")
    if not 0 <= params["p"] <= 1:
        raise ValueError(f"p must be in [0, 1], got {params['p']:g} in {config!r}")


def rand_augment_from_string(config: str, *, fill: Fill, interpolation: str = "bilinear") -> RandAugment:
    """Build RandAugment from a timm-style config string, e.g. ``rand-m9-mstd0.5-inc1``.

    ``fill`` is the RGB colour of pixels uncovered by geometric ops (DeiT uses the dataset mean).
    ``interpolation`` is the resampling filter of the geometric ops: nearest, bilinear or bicubic.
    """
    if interpolation not in RESAMPLE_FILTERS:
        raise ValueError(f"unknown RandAugment interpolation {interpolation!r}; valid: {sorted(RESAMPLE_FILTERS)}")
    if len(fill) != 3:
        raise ValueError(f"fill must be an RGB triple, got {fill!r}")
    params = parse_rand_augment_config(config)
    names = RAND_INCREASING_OPS if params["inc"] else RAND_OPS
    ops = [
        AugmentOp(
            name,
            magnitude=params["m"],
            prob=params["p"],
            magnitude_std=params["mstd"],
            magnitude_max=params["mmax"],
            fill=tuple(int(c) for c in fill),
            resample=RESAMPLE_FILTERS[interpolation],
        )
        for name in names
    ]
    return RandAugment(ops, num_ops=int(params["n"]))
