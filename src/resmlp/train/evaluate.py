"""`resmlp eval`: a checkpoint on an image folder -> top-1/top-5, per-class accuracy, confusion matrix PNG."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import DataLoader

from ..checkpoint import model_from_checkpoint, read_checkpoint
from ..data.datasets import ImageDataset, scan_image_folder
from ..data.transforms import build_eval_transform
from .engine import evaluate
from .run import resolve_device


def plot_confusion(confusion: np.ndarray, classes: list[str], path: Path, title: str) -> Path:
    """Row-normalised confusion matrix (rows = true class) as a PNG."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    rows = confusion.sum(1, keepdims=True).clip(min=1)
    norm = confusion / rows
    k = len(classes)
    size = min(4 + 0.35 * k, 16)
    fig, ax = plt.subplots(figsize=(size, size * 0.9))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, fraction=0.046, label="fraction of the true class")
    if k <= 40:
        ax.set_xticks(range(k), classes, rotation=90, fontsize=8)
        ax.set_yticks(range(k), classes, fontsize=8)
        if k <= 20:
            for i in range(k):
                for j in range(k):
                    if confusion[i, j]:
                        ax.text(j, i, int(confusion[i, j]), ha="center", va="center", fontsize=7,
                                color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


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
    png = plot_confusion(confusion, classes, out_dir / "confusion.png",
                         f"{ckpt.get('model_name')} on {Path(data).name}: top-1 {res['top1']:.2f}%")
    result = {"checkpoint": str(ckpt_path), "data": str(data), "top1": res["top1"], "top5": res["top5"],
              "loss": res["loss"], "count": res["count"], "classes": classes, "per_class_top1": per_class,
              "confusion": confusion.tolist(), "bad_files": {str(k): v for k, v in ds.bad_files.items()}}
    (out_dir / "eval.json").write_text(json.dumps(result, indent=1))
    return {**result, "eval_json": str(out_dir / "eval.json"), "confusion_png": str(png)}
