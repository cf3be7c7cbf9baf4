"""`resmlp eval`: a checkpoint on an image folder -> top-1/top-5, per-class accuracy, confusion matrix PNG."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch.utils.data import DataLoader

from ..analysis.report import plot_confusion
from ..checkpoint import model_from_checkpoint, read_checkpoint
from ..data.datasets import ImageDataset, scan_image_folder
from ..data.transforms import build_eval_transform
from .engine import evaluate
from .run import resolve_device


def evaluate_checkpoint(checkpoint: str | Path, data: str | Path, *, out: str | Path | None = None,
                        batch_size: int = 256, workers: int = 2, device: str = "auto", ema: bool = False) -> dict[str, Any]:
    ckpt = read_checkpoint(checkpoint)
    model = model_from_checkpoint(ckpt, weights="ema" if ema else "model")
    classes = list(ckpt.get("classes") or [f"class_{i}" for i in range(model.num_classes)])
    paths, labels, folder_classes = scan_image_folder(data)
    unknown = [c for c in folder_classes if c not in classes]
    if unknown:
        raise ValueError(f"{data}: class folders {', '.join(unknown[:5])} are not among the checkpoint's classes "
                         f"({', '.join(classes[:10])}{'...' if len(classes) > 10 else ''})")
    remap = [classes.index(c) for c in folder_classes]  # folder label -> model label
    p = model.preprocess
    tf = build_eval_transform(p.img_size, mean=p.mean, std=p.std, crop_pct=p.crop_pct, interpolation=p.interpolation)
    ds = ImageDataset([(path, remap[y]) for path, y in zip(paths, labels)], transform=tf, on_bad="skip",
                      classes=classes)
    dev = resolve_device(device)
    loader = DataLoader(ds, batch_size=batch_size, num_workers=workers, pin_memory=dev.type == "cuda")
    res = evaluate(model.to(dev), loader, dev, num_classes=len(classes), progress=True)
    confusion = res["confusion"].numpy()
    present = confusion.sum(1) > 0
    per_class = {c: 100.0 * confusion[i, i] / confusion[i].sum() for i, c in enumerate(classes) if present[i]}
    ckpt_path = Path(ckpt["path"])
    out_dir = Path(out) if out else (ckpt_path.parent.parent if ckpt_path.parent.name == "checkpoints" else ckpt_path.parent)
    out_dir.mkdir(parents=True, exist_ok=True)
    png = out_dir / "confusion.png"
    plot_confusion(confusion, classes, png, f"{ckpt.get('model_name')} on {Path(data).name}: top-1 {res['top1']:.2f}%")
    result = {"checkpoint": str(ckpt_path), "data": str(data), "top1": res["top1"], "top5": res["top5"],
              "loss": res["loss"], "count": res["count"], "classes": classes, "per_class_top1": per_class,
              "confusion": confusion.tolist(), "bad_files": {str(k): v for k, v in ds.bad_files.items()}}
    (out_dir / "eval.json").write_text(json.dumps(result, indent=1))
    return {**result, "eval_json": str(out_dir / "eval.json"), "confusion_png": str(png)}
