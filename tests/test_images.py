"""Tests for resmlp.data.images: every PIL mode decodes to 8-bit RGB of the same size, bad files are named."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from resmlp.data.images import load_rgb, to_rgb, verify_images


def _rgb_image(seed: int, size: tuple[int, int] = (6, 5)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def _truncated_jpeg(path: Path, seed: int) -> Path:
    buffer = io.BytesIO()
    _rgb_image(seed, (64, 64)).save(buffer, format="JPEG", quality=90)
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    return path


def _corrupt_jpg(path: Path, seed: int) -> Path:
    path.write_bytes(np.random.default_rng(seed).integers(0, 256, 300, dtype=np.uint8).tobytes())
    return path


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


def test_a_photo_folder_s_gif_and_tiff_files_are_read_not_skipped(tmp_path: Path) -> None:
    from resmlp.data.datasets import scan_image_folder

    for cls, ext in (("cat", ".jpg"), ("cat", ".gif"), ("dog", ".tif"), ("dog", ".tiff")):
        (tmp_path / cls).mkdir(exist_ok=True)
        _rgb_image(len(ext), (12, 9)).save(tmp_path / cls / f"a{ext}")
    frames = [Image.new("RGB", (12, 9), c) for c in ((200, 10, 10), (10, 200, 10))]
    frames[0].save(tmp_path / "dog" / "anim.gif", save_all=True, append_images=frames[1:])  # animated: frame 0
    paths, labels, classes = scan_image_folder(tmp_path)
    assert sorted(p.name for p in paths) == ["a.gif", "a.jpg", "a.tif", "a.tiff", "anim.gif"]
    assert classes == ["cat", "dog"] and sorted(labels) == [0, 0, 1, 1, 1]
    for path in paths:
        image = load_rgb(path)
        assert (image.mode, image.size) == ("RGB", (12, 9))
    assert load_rgb(tmp_path / "dog" / "anim.gif").getpixel((0, 0))[0] > 150  # the first frame, red


# --------------------------------------------------------------------------- bad files


def test_verify_images_reports_only_bad_files(tmp_path: Path) -> None:
    _rgb_image(1).save(tmp_path / "0_good.png")
    paths = [
        tmp_path / "0_good.png",
        _corrupt_jpg(tmp_path / "1_random.jpg", 2),
        _truncated_jpeg(tmp_path / "2_truncated.jpg", 3),
    ]
    for workers in (0, 2):
        bad = verify_images(paths, workers)
        assert sorted(p.name for p in bad) == ["1_random.jpg", "2_truncated.jpg"]
        assert all(bad.values())
