"""`resmlp eval`: a checkpoint on an image folder -> top-1/top-5, per-class accuracy, confusion matrix PNG."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from ..deploy.optimize import build_runtime
from ..deploy.predict import calibration_batch
from ..device import resolve_device
from ..figures import plot_confusion
from ..files import write_text_atomic
from ..loading import folder_dataset, load_model
from ..models.resample import DEFAULT_METHOD
from ..models.tta import with_tta
from .engine import evaluate


def evaluate_checkpoint(
    checkpoint: str | Path,
    data: str | Path,
    *,
    out: str | Path | None = None,
    batch_size: int = 256,
    workers: int = 2,
    device: str = "auto",
    ema: bool = False,
    tta: str = "none",
    img_size: int | tuple[int, int] | None = None,
    resample: str = DEFAULT_METHOD,
    precision: str = "fp32",
    runtime: str = "eager",
    calibration: str | None = None,
) -> dict[str, Any]:
    """Evaluate any weights `load_model` reads on the image folder `data`; writes eval.json and
    confusion.png into `out` (default: the run directory, else beside the weights). `tta` ("flip",
    "flip+shift1") averages the logits over those views of each image. `img_size` runs the model at another
    input size (token mixing resampled with method `resample`; images prepared at that size). Another `precision`
    or `runtime` than fp32 eager evaluates the deployed model (`resmlp.deploy.build_runtime`, on CPU; int8
    calibrated on the images of folder/glob `calibration`)."""
    loaded = load_model(checkpoint, weights="ema" if ema else "model", img_size=img_size, resample=resample)
    spec = loaded.spec
    ds = folder_dataset(data, spec)
    classes = list(ds.classes)
    dev = resolve_device(device)
    loader = DataLoader(ds, batch_size=batch_size, num_workers=workers, pin_memory=dev.type == "cuda")
    model = loaded.model.to(dev)
    if (precision, runtime) != ("fp32", "eager"):
        images = calibration_batch(calibration, spec.preprocess, workers=workers) if precision == "int8" else None
        model = build_runtime(model.cpu(), precision=precision, runtime=runtime, calibration=images)
        dev = torch.device("cpu")
    res = evaluate(with_tta(model, tta), loader, dev, num_classes=len(classes), progress=True)
    confusion = res.confusion.numpy()
    present = confusion.sum(1) > 0
    per_class = {c: 100.0 * confusion[i, i] / confusion[i].sum() for i, c in enumerate(classes) if present[i]}
    out_dir = Path(out) if out else (loaded.run_dir or loaded.path.parent)
    out_dir.mkdir(parents=True, exist_ok=True)
    png = out_dir / "confusion.png"
    plot_confusion(confusion, classes, png, f"{spec.name} on {Path(data).name}: top-1 {res.top1:.2f}%")
    result = {
        "checkpoint": str(loaded.path),
        "data": str(data),
        "top1": res.top1,
        "top5": res.top5,
        "loss": res.loss,
        "count": res.count,
        "tta": tta,
        "precision": precision,
        "runtime": runtime,
        "img_size": spec.preprocess.img_size,
        "resample": resample if img_size is not None else None,
        "classes": classes,
        "per_class_top1": per_class,
        "confusion": confusion.tolist(),
        "bad_files": {str(k): v for k, v in ds.bad_files.items()},
    }
    write_text_atomic(out_dir / "eval.json", json.dumps(result, indent=1))
    return {**result, "eval_json": str(out_dir / "eval.json"), "confusion_png": str(png)}
