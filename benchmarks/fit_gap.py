"""How well finished runs fit their own training images: top-1 on a sample of the training split against the
validation split, both without augmentation (the run's checkpoints/best.pt, else last.pt).

    python benchmarks/fit_gap.py RUN_DIR [RUN_DIR ...] [--train-images 5000] [--weights model|ema]

The splits are rebuilt from each run's own config (same data, seed and split) and the training images get the
validation transform, so the two numbers differ only in which images they score. A large gap says the run
overfits (regularise: augmentation, mixing, a teacher); a small one with a low training score says it underfits
(more epochs or capacity).
"""

from __future__ import annotations

import argparse
import json

import torch
from common import run_data
from torch.utils.data import Subset


def fit_gap(run_dir: str, *, train_images: int, weights: str) -> dict:
    run = run_data(run_dir, weights=weights)
    data = run.data
    data.train.transform = data.val.transform
    count = min(train_images, len(data.train))
    sample = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(0))[:count].tolist()
    scores = {}
    for name, ds in (("train", Subset(data.train, sample)), ("val", data.val)):
        ev = run.evaluate(dataset=ds)
        scores[name] = {"top1": ev.top1, "loss": ev.loss, "images": ev.count}
    return {"run": run_dir, "weights": weights, **scores, "gap": scores["train"]["top1"] - scores["val"]["top1"]}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dirs", nargs="+")
    ap.add_argument("--train-images", type=int, default=5000, help="training images scored (a seeded sample)")
    ap.add_argument("--weights", default="model", choices=("model", "ema"))
    args = ap.parse_args(argv)
    if args.train_images < 1:
        ap.error(f"--train-images: expected at least 1 image, got {args.train_images}")
    for run_dir in args.run_dirs:
        r = fit_gap(run_dir, train_images=args.train_images, weights=args.weights)
        print(
            f"{run_dir}: train top-1 {r['train']['top1']:.2f}% ({r['train']['images']} images), "
            f"val top-1 {r['val']['top1']:.2f}%, gap {r['gap']:.2f}",
            flush=True,
        )
        print(json.dumps(r))


if __name__ == "__main__":
    main()
