"""Classify image files in batches: files, folders (recursive) and glob patterns in, top-k rows out.

A file that cannot be read or decoded becomes a row with an `error` and the batch goes on.
"""

from __future__ import annotations

import csv
import glob
import io
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import torch
from PIL import UnidentifiedImageError
from torch import nn

from ..data.images import IMAGE_EXTENSIONS, MAX_IMAGE_PIXELS, BadImageError, load_rgb
from ..data.transforms import eval_transform_from
from ..models import Preprocess

FORMATS = ("table", "json", "csv")


@dataclass
class Prediction:
    path: str
    topk: list[tuple[str, int, float]] = field(default_factory=list)  # (class name, index, probability)
    error: str | None = None


def expand_inputs(inputs: Sequence[str], extensions: Sequence[str] = IMAGE_EXTENSIONS) -> tuple[list[str], list[str]]:
    """(image paths, problems) from files, folders (recursed, image extensions only) and glob patterns.

    Globs are expanded here, so a quoted pattern works the same as one the shell expanded. A named
    file is kept whatever its extension (the decoder decides); an input that matches nothing is a problem.
    """
    exts = {e.lower() for e in extensions}
    paths: list[str] = []
    problems: list[str] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(
                str(f) for f in p.rglob("*") if f.is_file() and f.suffix.lower() in exts and not f.name.startswith(".")
            )
            if not found:
                problems.append(f"{item}: folder has no images ({', '.join(sorted(exts))})")
            paths += found
        elif p.is_file():
            paths.append(item)
        elif glob.has_magic(item):
            found = sorted(f for f in glob.glob(item, recursive=True) if os.path.isfile(f))
            if not found:
                problems.append(f"{item}: pattern matches no files")
            paths += found
        else:
            problems.append(f"{item}: no such file or folder")
    seen: set[str] = set()
    unique = [x for x in paths if not (x in seen or seen.add(x))]  # keep order, drop repeats
    return unique, problems


def _load(path: str, transform: Callable, max_pixels: int | None = MAX_IMAGE_PIXELS) -> torch.Tensor | str:
    try:
        return transform(load_rgb(path, max_pixels=max_pixels))
    except BadImageError as e:
        return e.reason
    except UnidentifiedImageError:
        return "not an image format Pillow can decode"
    except Exception as e:  # noqa: BLE001 - PIL raises many types; each is reported for that one file
        return f"cannot read image ({type(e).__name__}: {e})"


def calibration_images(
    paths: Sequence[str], preprocess: Preprocess, *, limit: int = 256, workers: int = 2
) -> torch.Tensor:
    """Up to `limit` readable images of `paths`, evenly spread over the list, preprocessed for the model:
    the calibration batch int8 smoothing needs (unreadable files are skipped)."""
    step = max(1, len(paths) // max(1, limit))
    chosen = list(paths)[::step][:limit]
    transform = eval_transform_from(preprocess)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        images = [x for x in pool.map(lambda p: _load(p, transform), chosen) if isinstance(x, torch.Tensor)]
    if not images:
        raise ValueError(f"none of the {len(chosen)} calibration files could be read as an image")
    return torch.stack(images)


def calibration_batch(
    pattern: str | None, preprocess: Preprocess, *, default: Sequence[str] = (), workers: int = 2
) -> torch.Tensor:
    """The int8 calibration batch of the CLI's --calibration FOLDER|GLOB (else the `default` paths)."""
    paths, problems = expand_inputs([pattern]) if pattern else (list(default), [])
    if not paths:
        raise ValueError(f"--calibration {pattern}: {'; '.join(problems) or 'no images'}")
    return calibration_images(paths, preprocess, workers=workers)


def _batches(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def predict_files(
    model: nn.Module,
    paths: Sequence[str],
    *,
    preprocess: Preprocess,
    classes: Sequence[str],
    topk: int = 5,
    batch_size: int = 32,
    workers: int = 2,
    pad_batches: bool = False,
    progress: Callable[[int], None] | None = None,
    max_pixels: int | None = MAX_IMAGE_PIXELS,
) -> Iterator[Prediction]:
    """Yield one Prediction per path, in order. `model` maps float32 images to logits.

    `pad_batches` repeats the last image so every batch has `batch_size` images (a compiled model then
    never sees a new shape and does not recompile); the padding rows are dropped. Images above
    `max_pixels` (None: no limit) are error rows, refused before decoding.
    """
    transform = eval_transform_from(preprocess)
    k = max(1, min(topk, len(classes)))
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:  # PIL decodes and resizes without the GIL
        for chunk in _batches(list(paths), batch_size):
            loaded = list(pool.map(lambda p: _load(p, transform, max_pixels), chunk))
            good = [i for i, x in enumerate(loaded) if isinstance(x, torch.Tensor)]
            results: dict[int, list[tuple[str, int, float]]] = {}
            if good:
                images = torch.stack([loaded[i] for i in good])
                if pad_batches and len(good) < batch_size:
                    images = torch.cat([images, images[-1:].expand(batch_size - len(good), *images.shape[1:])])
                with torch.inference_mode():
                    probs = model(images)[: len(good)].float().softmax(-1)
                top_p, top_i = probs.topk(k, dim=-1)
                for row, i in enumerate(good):
                    results[i] = [(classes[j], j, p) for j, p in zip(top_i[row].tolist(), top_p[row].tolist())]
            for i, path in enumerate(chunk):
                if i in results:
                    yield Prediction(path, topk=results[i])
                else:
                    yield Prediction(path, error=loaded[i])
            if progress is not None:
                progress(len(chunk))


def format_predictions(predictions: Iterable[Prediction], fmt: str) -> str:
    """Render as an aligned table, a JSON list, or CSV (one row per path and rank; errors get one row)."""
    predictions = list(predictions)
    if fmt == "json":
        return json.dumps(
            [
                {
                    "path": p.path,
                    "error": p.error,
                    "predictions": [{"class": c, "index": i, "probability": round(pr, 6)} for c, i, pr in p.topk],
                }
                for p in predictions
            ],
            indent=2,
        )
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["path", "rank", "class", "index", "probability", "error"])
        for p in predictions:
            if p.error is not None:
                writer.writerow([p.path, "", "", "", "", p.error])
            for rank, (c, i, pr) in enumerate(p.topk, 1):
                writer.writerow([p.path, rank, c, i, f"{pr:.6f}", ""])
        return buf.getvalue().rstrip("\n")
    if fmt != "table":
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    width = max([len("path")] + [len(p.path) for p in predictions])
    lines = [f"{'path':<{width}}  {'top-1':<20}{'prob':>7}  others"]
    for p in predictions:
        if p.error is not None:
            lines.append(f"{p.path:<{width}}  ERROR: {p.error}")
            continue
        (c, _, pr), rest = p.topk[0], p.topk[1:]
        others = ", ".join(f"{c2} {pr2:.3f}" for c2, _, pr2 in rest)
        lines.append(f"{p.path:<{width}}  {c:<20}{pr:>7.3f}  {others}")
    return "\n".join(lines)
