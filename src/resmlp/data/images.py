"""Decoding one image: any file Pillow opens (or any loader's result) -> 8-bit RGB, with a bound on its size.

Every dataset source hands its transform a PIL RGB image; this is where that image is made, and where a file
that cannot be made into one becomes a `BadImageError` naming it.
"""

from __future__ import annotations

import re
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image
from tqdm import tqdm

# What a folder of images is read for. GIF and TIFF decode to their first frame / page (Pillow's default).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")

Loader = Callable[[Any], Image.Image]


class BadImageError(ValueError):
    """An image that cannot be decoded; ``path`` and ``reason`` say which and why."""

    def __init__(self, path: Any, reason: str) -> None:
        super().__init__(f"{path}: cannot decode image ({reason})")
        self.path = path
        self.reason = reason


def _sixteen_bit_to_rgb(image: Image.Image) -> Image.Image:
    """Scale a 16-bit (or 32-bit integer) grayscale image to 8 bits; PIL's convert would clip at 255."""
    values = np.asarray(image, dtype=np.float64)
    if image.mode == "F":  # float images have no natural range; clip like PIL does
        gray = np.clip(values, 0, 255)
    else:  # 'I;16*' and PNG's 16-bit 'I': full scale is 65535, and 65535 / 257 == 255
        gray = np.clip(values / 257.0, 0, 255)
    return Image.fromarray(np.rint(gray).astype(np.uint8)).convert("RGB")


def _composite_on_black(image: Image.Image) -> Image.Image:
    """Drop transparency by compositing on black, so invisible pixels' colours cannot leak in."""
    rgba = image.convert("RGBA")
    background = Image.new("RGB", rgba.size, (0, 0, 0))
    background.paste(rgba, mask=rgba.getchannel("A"))
    return background


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode (L, LA, P, RGBA, I;16, CMYK, ...) to 8-bit RGB of the same size."""
    if image.mode == "RGB":
        return image
    if image.mode.startswith("I") or image.mode == "F":
        return _sixteen_bit_to_rgb(image)
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
    if has_alpha:
        return _composite_on_black(image)
    return image.convert("RGB")


# The largest image decoded by default: 100 Mpx (10,000 x 10,000) is far above any training or photo input,
# and far below what a "decompression bomb" claims (a 30,000 x 30,000 PNG of a few KB would need 2.7 GB as RGB).
# `data.max_image_pixels` / `resmlp predict --max-image-pixels` raise it (null / 0: no limit).
MAX_IMAGE_PIXELS = 100_000_000


def _allow_pixels(max_pixels: int | None) -> None:
    """Keep Pillow's own bomb check (an error above 2 x Image.MAX_IMAGE_PIXELS) from undercutting ours."""
    pil_limit = Image.MAX_IMAGE_PIXELS
    if pil_limit is not None and (max_pixels is None or max_pixels > 2 * pil_limit):
        Image.MAX_IMAGE_PIXELS = None if max_pixels is None else max_pixels


def _too_large(size: Any, max_pixels: int | None) -> str:
    if isinstance(size, re.Match):
        size = f"{int(size.group(1)) / 1e6:.0f} Mpx"
    return (
        f"{size or 'the image'} is above the limit of {(max_pixels or 0) / 1e6:g} Mpx (a decompression bomb?); "
        "raise data.max_image_pixels (--max-image-pixels) to read it"
    )


def load_rgb(path: str | Path, *, max_pixels: int | None = MAX_IMAGE_PIXELS) -> Image.Image:
    """Open and fully decode an image file as RGB; decoding errors surface here, not later. An image of
    more than `max_pixels` pixels (None: no limit) is refused from its header, before any decoding."""
    _allow_pixels(max_pixels)
    with open(path, "rb") as handle:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our limit decides
            try:
                image = Image.open(handle)
            except Image.DecompressionBombError as err:  # Pillow's limit, above ours (see _allow_pixels)
                raise BadImageError(path, _too_large(re.search(r"\((\d+) pixels\)", str(err)), max_pixels)) from None
        pixels = image.width * image.height
        if max_pixels is not None and pixels > max_pixels:
            raise BadImageError(path, _too_large(f"{image.width}x{image.height} = {pixels / 1e6:.0f} Mpx", max_pixels))
        image.load()  # force the decode while the file is open (truncation raises OSError here)
    return to_rgb(image)


def decode(loader: Loader, key: Any) -> Image.Image:
    """Run ``loader(key)``, turning whatever the decoder raises into a BadImageError."""
    try:
        return to_rgb(loader(key))
    except BadImageError:
        raise
    except Exception as err:  # PIL raises OSError, SyntaxError, ValueError, struct.error, MemoryError, ...
        raise BadImageError(key, f"{type(err).__name__}: {err}") from err


def verify_images(
    paths: Sequence[Any], workers: int = 0, *, loader: Loader = load_rgb, progress: bool = False
) -> dict[Any, str]:
    """Fully decode every image (opt-in scan); return ``{path: reason}`` for the ones that fail.

    ``workers > 0`` decodes in that many threads (PIL releases the GIL while decoding).
    """

    def check(key: Any) -> str | None:
        try:
            decode(loader, key)
        except BadImageError as err:
            return err.reason
        return None

    reasons: list[str | None]
    if workers > 0:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            mapped = pool.map(check, paths)
            reasons = list(tqdm(mapped, total=len(paths), desc="verify", disable=not progress))
    else:
        reasons = [check(p) for p in tqdm(paths, desc="verify", disable=not progress)]
    return {key: reason for key, reason in zip(paths, reasons) if reason is not None}


__all__ = ["BadImageError", "IMAGE_EXTENSIONS", "MAX_IMAGE_PIXELS", "decode", "load_rgb", "to_rgb", "verify_images"]
