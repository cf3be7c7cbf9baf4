"""Image transforms of the ResMLP/DeiT training recipe (PIL in, normalised CHW float tensor out).

Train (ResMLP Sec. 3, following DeiT): crop (Inception random-resized crop, or CIFAR pad-and-crop
for small images) -> horizontal flip -> RandAugment (PIL) -> to tensor + normalise -> Random Erasing.
Eval: resize the shorter side to ``floor(size / crop_pct)`` -> centre crop ``size``.

Randomness comes from Python's ``random`` (crops, flips), ``np.random`` (RandAugment op choice) and
the default torch generator (erasing noise), so seeding all three makes a transform deterministic.
"""

from __future__ import annotations

import math
import random
from typing import TYPE_CHECKING, Callable, Sequence, Union

import numpy as np
import torch
from PIL import Image, ImageOps

from .randaugment import rand_augment_from_string
from .random_erasing import MODES as ERASING_MODES
from .random_erasing import RandomErasing

if TYPE_CHECKING:  # the metadata record only; data does not depend on the models
    from ..models import Preprocess

INTERPOLATIONS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}
CROPS = ("rrc", "pad")
Size = Union[int, Sequence[int]]  # an int (square) or (height, width)


def resolve_interpolation(name: str) -> Image.Resampling:
    """Map an interpolation name to Pillow's filter; ValueError lists the valid names."""
    if name not in INTERPOLATIONS:
        raise ValueError(f"unknown interpolation {name!r}; valid: {sorted(INTERPOLATIONS)}")
    return INTERPOLATIONS[name]


def _check_size(size: Size) -> tuple[int, int]:
    """`size` (an int for a square, or (height, width)) as (h, w); ValueError unless positive ints."""
    pair = (size, size) if isinstance(size, int) else tuple(size) if isinstance(size, (tuple, list)) else ()
    if len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in pair):
        raise ValueError(f"size must be a positive int or (height, width), got {size!r}")
    return pair


class Compose:
    """Apply transforms in order."""

    def __init__(self, transforms: Sequence[Callable]) -> None:
        self.transforms = list(transforms)

    def __call__(self, x):
        for transform in self.transforms:
            x = transform(x)
        return x

    def __repr__(self) -> str:
        return "Compose(\n" + "".join(f"    {t!r},\n" for t in self.transforms) + ")"


class RandomResizedCrop:
    """Inception-style crop (Szegedy et al. 2015): random area fraction and aspect, resized to `size`."""

    def __init__(
        self,
        size: Size,
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        interpolation: str = "bicubic",
    ) -> None:
        self.height, self.width = _check_size(size)
        if not 0 < scale[0] <= scale[1] <= 1:
            raise ValueError(f"scale must satisfy 0 < min <= max <= 1, got {tuple(scale)}")
        if not 0 < ratio[0] <= ratio[1]:
            raise ValueError(f"ratio must satisfy 0 < min <= max, got {tuple(ratio)}")
        self.size = size
        self.scale = tuple(scale)
        self.ratio = tuple(ratio)
        self.interpolation = interpolation
        self.resample = resolve_interpolation(interpolation)

    @staticmethod
    def get_params(
        height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float]
    ) -> tuple[int, int, int, int]:
        """Crop box ``(top, left, h, w)``: 10 tries of area ~ U(scale), log-uniform w/h ~ ratio.

        If no try fits, fall back to the largest centred crop whose aspect is clamped to ``ratio``.
        """
        area = height * width
        log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
        for _ in range(10):
            target_area = area * random.uniform(*scale)
            aspect = math.exp(random.uniform(*log_ratio))  # w / h
            w = int(round(math.sqrt(target_area * aspect)))
            h = int(round(math.sqrt(target_area / aspect)))
            if 0 < w <= width and 0 < h <= height:
                return random.randint(0, height - h), random.randint(0, width - w), h, w
        in_ratio = width / height
        if in_ratio < ratio[0]:
            w, h = width, int(round(width / ratio[0]))
        elif in_ratio > ratio[1]:
            w, h = int(round(height * ratio[1])), height
        else:
            w, h = width, height
        return (height - h) // 2, (width - w) // 2, h, w

    def __call__(self, img: Image.Image) -> Image.Image:
        top, left, h, w = self.get_params(img.height, img.width, self.scale, self.ratio)
        return img.crop((left, top, left + w, top + h)).resize((self.width, self.height), self.resample)

    def __repr__(self) -> str:
        return (
            f"RandomResizedCrop(size={self.size}, scale={self.scale}, ratio={self.ratio}, "
            f"interpolation={self.interpolation!r})"
        )


class RandomCropPad:
    """CIFAR-style augmentation: zero-pad ``padding`` pixels on every side, then a random size x size crop.

    Zero (black) padding, as in DeiT's small-image crop (``RandomCrop(size, padding=4)``). An image of
    another size is first resized to `size` (e.g. 32 px CIFAR for a model run at 24 px), so the crop
    keeps the whole scene rather than a window of it.
    """

    def __init__(self, size: Size, padding: int = 4, interpolation: str = "bicubic") -> None:
        self.height, self.width = _check_size(size)
        self.resample = resolve_interpolation(interpolation)
        if padding < 0:
            raise ValueError(f"padding must be >= 0, got {padding}")
        self.size = size
        self.padding = padding

    def __call__(self, img: Image.Image) -> Image.Image:
        if img.size != (self.width, self.height):
            img = img.resize((self.width, self.height), self.resample)
        padded = ImageOps.expand(img, border=self.padding, fill=0) if self.padding else img
        top = random.randint(0, padded.height - self.height)
        left = random.randint(0, padded.width - self.width)
        return padded.crop((left, top, left + self.width, top + self.height))

    def __repr__(self) -> str:
        return f"RandomCropPad(size={self.size}, padding={self.padding})"


class RandomHorizontalFlip:
    """Mirror left-right with probability ``p``."""

    def __init__(self, p: float = 0.5) -> None:
        if not 0 <= p <= 1:
            raise ValueError(f"flip probability must be in [0, 1], got {p}")
        self.p = p

    def __call__(self, img: Image.Image) -> Image.Image:
        return img.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if random.random() < self.p else img

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(p={self.p})"


class ResizeCenterCrop:
    """Eval crop: resize the shorter side to ``floor(size / crop_pct)`` (aspect kept), centre-crop size x size.
    For a (height, width) size the image is resized (aspect kept) to cover ``floor(height / crop_pct)`` x
    ``floor(width / crop_pct)``, then centre-cropped to height x width."""

    def __init__(self, size: Size, crop_pct: float = 0.9, interpolation: str = "bicubic") -> None:
        self.height, self.width = _check_size(size)
        if not 0 < crop_pct <= 1:
            raise ValueError(f"crop_pct must be in (0, 1], got {crop_pct}")
        self.size = size
        self.crop_pct = crop_pct
        self.interpolation = interpolation
        self.resample = resolve_interpolation(interpolation)
        self.resize_hw = math.floor(self.height / crop_pct), math.floor(self.width / crop_pct)
        self.resize_to = self.resize_hw[0]  # the shorter side's target (square sizes)

    def __call__(self, img: Image.Image) -> Image.Image:
        width, height = img.size
        if self.height == self.width:
            short, long = min(width, height), max(width, height)
            new_long = int(self.resize_to * long / short)
            new_size = (self.resize_to, new_long) if width <= height else (new_long, self.resize_to)
        else:  # cover both target sides, aspect kept
            scale = max(self.resize_hw[0] / height, self.resize_hw[1] / width)
            new_size = (max(self.resize_hw[1], round(width * scale)), max(self.resize_hw[0], round(height * scale)))
        img = img.resize(new_size, self.resample)
        top = int(round((img.height - self.height) / 2))
        left = int(round((img.width - self.width) / 2))
        return img.crop((left, top, left + self.width, top + self.height))

    def __repr__(self) -> str:
        return f"ResizeCenterCrop(size={self.size}, crop_pct={self.crop_pct}, interpolation={self.interpolation!r})"


class ToTensorNormalize:
    """PIL image -> float32 (3, H, W) in [0, 1] -> ``(x - mean) / std`` per channel (non-RGB is converted)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        if len(mean) != 3 or len(std) != 3:
            raise ValueError(f"mean and std need 3 (RGB) values, got mean={tuple(mean)}, std={tuple(std)}")
        if min(std) <= 0:
            raise ValueError(f"std must be positive, got {tuple(std)}")
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)

    def __call__(self, img: Image.Image) -> torch.Tensor:
        array = np.array(img.convert("RGB") if img.mode != "RGB" else img, dtype=np.uint8)
        x = torch.from_numpy(array).permute(2, 0, 1).float().div_(255.0)  # (H, W, 3) -> (3, H, W)
        return (x - self.mean) / self.std

    def __repr__(self) -> str:
        return f"ToTensorNormalize(mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()})"


def build_train_transform(
    img_size: Size,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    crop: str = "rrc",
    scale: tuple[float, float] = (0.08, 1.0),
    hflip: float = 0.5,
    auto_augment: str | None = "rand-m9-mstd0.5-inc1",
    re_prob: float = 0.25,
    re_mode: str = "pixel",
    interpolation: str = "bicubic",
    padding: int = 4,
) -> Callable[[Image.Image], torch.Tensor]:
    """Training pipeline: crop -> flip -> RandAugment -> tensor + normalise -> Random Erasing.

    ``crop="rrc"``: RandomResizedCrop with ``scale``; ``crop="pad"``: resize to ``img_size`` when the
    image has another size, zero-pad ``padding`` + random crop. RandAugment fills with the mean colour and
    uses ``interpolation`` for its geometric ops (nearest/bilinear/bicubic only), as DeiT does.
    ``auto_augment`` None/"" and ``hflip``/``re_prob`` 0 skip those steps.
    """
    for name, value in (("hflip", hflip), ("re_prob", re_prob)):
        if not 0 <= value <= 1:
            raise ValueError(f"{name} must be in [0, 1], got {value}")
    if crop == "rrc":
        steps: list[Callable] = [RandomResizedCrop(img_size, scale=scale, interpolation=interpolation)]
    elif crop == "pad":
        steps = [RandomCropPad(img_size, padding=padding, interpolation=interpolation)]
    else:
        raise ValueError(f"unknown crop {crop!r}; valid: {list(CROPS)}")
    if re_mode not in ERASING_MODES:  # checked even when erasing is off, so a typo never hides
        raise ValueError(f"unknown re_mode {re_mode!r}; valid: {list(ERASING_MODES)}")
    if hflip > 0:
        steps.append(RandomHorizontalFlip(hflip))
    if auto_augment:
        fill = tuple(min(255, round(255 * m)) for m in mean)
        steps.append(rand_augment_from_string(auto_augment, fill=fill, interpolation=interpolation))
    steps.append(ToTensorNormalize(mean, std))
    if re_prob > 0:
        steps.append(RandomErasing(probability=re_prob, mode=re_mode))
    return Compose(steps)


def build_eval_transform(
    img_size: Size,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    crop_pct: float = 0.9,
    interpolation: str = "bicubic",
) -> Callable[[Image.Image], torch.Tensor]:
    """Eval pipeline: resize shorter side to ``floor(img_size / crop_pct)`` -> centre crop -> tensor + normalise."""
    return Compose([ResizeCenterCrop(img_size, crop_pct, interpolation), ToTensorNormalize(mean, std)])


def eval_transform_from(preprocess: "Preprocess") -> Callable[[Image.Image], torch.Tensor]:
    """The eval pipeline a model's preprocessing metadata (`model.spec.preprocess`) describes."""
    return build_eval_transform(
        preprocess.img_size,
        mean=preprocess.mean,
        std=preprocess.std,
        crop_pct=preprocess.crop_pct,
        interpolation=preprocess.interpolation,
    )


class ResizeTensor:
    """Resize a (C, H, W) tensor to `size` (bilinear, antialiased when shrinking): the last step of a
    pipeline whose output size changes during training (progressive resizing) while the steps before it
    (crop, augmentation) keep working at the recipe's size."""

    def __init__(self, size: Size) -> None:
        self.height, self.width = _check_size(size)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) == (self.height, self.width):
            return x
        return torch.nn.functional.interpolate(
            x[None], size=(self.height, self.width), mode="bilinear", align_corners=False, antialias=True
        )[0]

    def __repr__(self) -> str:
        return f"ResizeTensor(size=({self.height}, {self.width}))"


OUTPUT_MODES = ("resize", "crop")  # how `with_output_size` reaches a smaller size (progressive.mode)


class CropTensor:
    """Cut a `size` window out of a (C, H, W) tensor at full scale: a random one (`train=True`) or the centre
    one (`train=False`, validation). The last step of a pipeline in progressive resizing's "crop" mode."""

    def __init__(self, size: Size, *, train: bool) -> None:
        self.height, self.width = _check_size(size)
        self.train = train

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if (h, w) == (self.height, self.width):
            return x
        if h < self.height or w < self.width:
            raise ValueError(f"cannot crop {self.height}x{self.width} out of a {h}x{w} image")
        if self.train:
            top, left = random.randint(0, h - self.height), random.randint(0, w - self.width)
        else:
            top, left = (h - self.height) // 2, (w - self.width) // 2
        return x[..., top : top + self.height, left : left + self.width]

    def __repr__(self) -> str:
        return f"CropTensor(size=({self.height}, {self.width}), train={self.train})"


def with_output_size(transform: Compose, size: Size | None, *, mode: str = "resize", train: bool = True) -> Compose:
    """`transform` (a Compose) ending in a step that brings its output to `size` (replacing one it ended with
    before): `ResizeTensor` (mode "resize") or a window at full scale, `CropTensor` (mode "crop", random when
    `train`, else central). `size=None` removes it again."""
    if mode not in OUTPUT_MODES:
        raise ValueError(f"unknown mode {mode!r}; valid: {list(OUTPUT_MODES)}")
    steps = [t for t in transform.transforms if not isinstance(t, (ResizeTensor, CropTensor))]
    if size is None:
        return Compose(steps)
    return Compose(steps + [ResizeTensor(size) if mode == "resize" else CropTensor(size, train=train)])
