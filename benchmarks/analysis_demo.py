"""Train a small ResMLP on MNIST in a few CPU minutes and write a run directory in the training contract's
format (config.yaml, metrics.jsonl, checkpoints/{best,last}.pt, eval.json), so that `resmlp analyze` has a
trained model with an 8x8 patch grid to look at. This produced the numbers in docs/analysis.md:

    tar xzf mnist-png.tar.gz -C /tmp                      # mnist/{train,test}/<digit>/*.png
    python benchmarks/analysis_demo.py --data /tmp/mnist --out /tmp/mnist16_run
    resmlp analyze /tmp/mnist16_run --out /tmp/mnist16_report --prune 0.5,0.8,0.9,0.95 --data /tmp/mnist/test

MNIST digits are resized to 16x16 and cut into 2x2 patches (resmlp_micro16, embed_dim 64): a 8x8 patch grid,
big enough for "local" to mean something. A plain AdamW + cosine loop without augmentation: the point is
a trained model to analyse, not the best accuracy (`resmlp train` is the real trainer).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml

from resmlp import Preprocess, create_model
from resmlp.checkpoint import atomic_save, model_from_checkpoint, model_record, read_checkpoint
from resmlp.data.datasets import scan_image_folder
from resmlp.data.images import load_rgb
from resmlp.data.transforms import build_eval_transform
from resmlp.rundir import RunDir
from resmlp.train.engine import evaluate

MNIST_MEAN, MNIST_STD = (0.1307,) * 3, (0.3081,) * 3


def load_split(root: Path, per_class: int | None, pre: Preprocess) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """The first `per_class` images of each class (sorted file order), preprocessed once into one tensor."""
    paths, labels, classes = scan_image_folder(root)
    taken: dict[int, int] = {}
    keep = []
    for p, y in zip(paths, labels):
        if per_class is None or taken.get(y, 0) < per_class:
            taken[y] = taken.get(y, 0) + 1
            keep.append((p, y))
    tf = build_eval_transform(
        pre.img_size, mean=pre.mean, std=pre.std, crop_pct=pre.crop_pct, interpolation=pre.interpolation
    )
    x = torch.stack([tf(load_rgb(p)) for p, _ in keep])
    return x, torch.tensor([y for _, y in keep]), classes


def batches(x: torch.Tensor, y: torch.Tensor, size: int, shuffle: torch.Generator | None = None):
    order = torch.randperm(len(x), generator=shuffle) if shuffle is not None else torch.arange(len(x))
    for i in range(0, len(x), size):
        idx = order[i : i + size]
        yield x[idx], y[idx]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="MNIST root holding train/ and test/ class folders")
    ap.add_argument("--out", required=True, help="run directory to write")
    ap.add_argument("--model", default="resmlp_micro16")
    ap.add_argument("--embed-dim", type=int, default=64)
    ap.add_argument("--train-per-class", type=int, default=1500)
    ap.add_argument("--val-per-class", type=int, default=200, help="per-epoch validation subset of test/")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--weight-decay", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.manual_seed(args.seed)
    data, run = Path(args.data), RunDir(args.out)
    pre = Preprocess(img_size=16, crop_pct=1.0, interpolation="bicubic", mean=MNIST_MEAN, std=MNIST_STD)
    x_tr, y_tr, classes = load_split(data / "train", args.train_per_class, pre)
    x_val, y_val, _ = load_split(data / "test", args.val_per_class, pre)
    model = create_model(args.model, img_size=16, num_classes=len(classes), embed_dim=args.embed_dim)
    model.spec = model.spec.replace(preprocess=pre, classes=classes)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    steps = args.epochs * math.ceil(len(x_tr) / args.batch_size)
    warm = steps // args.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm else 0.5 * (1 + math.cos(math.pi * (s - warm) / max(1, steps - warm)))
    )
    run.root.mkdir(parents=True, exist_ok=True)
    run.config.write_text(yaml.safe_dump(vars(args), sort_keys=False))
    run.metrics.write_text("")
    gen, best, start = torch.Generator().manual_seed(args.seed), -1.0, time.perf_counter()
    cpu = torch.device("cpu")
    for epoch in range(args.epochs):
        model.train()
        t0, total, seen = time.perf_counter(), 0.0, 0
        for xb, yb in batches(x_tr, y_tr, args.batch_size, gen):
            loss = F.cross_entropy(model(xb), yb, label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total, seen = total + float(loss.detach()) * len(xb), seen + len(xb)
        ips = seen / (time.perf_counter() - t0)
        val = evaluate(model, batches(x_val, y_val, 512), cpu, num_classes=len(classes))
        rec = {
            "epoch": epoch,
            "train_loss": total / seen,
            "val_loss": val.loss,
            "val_top1": val.top1,
            "val_top5": val.top5,
            "lr": opt.param_groups[0]["lr"],
            "images_per_s": ips,
            "wall_time_s": time.perf_counter() - start,
        }
        run.append_metrics(rec)
        print(f"epoch {epoch}: loss {rec['train_loss']:.3f} val top-1 {val.top1:.2f}% ({ips:.0f} img/s)")
        ckpt = {**model_record(model, classes=classes, preprocess=pre), "config": vars(args), "epoch": epoch}
        atomic_save(ckpt, run.last)
        if val.top1 > best:
            best = val.top1
            atomic_save(ckpt, run.best)
    # eval.json as `resmlp eval` writes it: the best checkpoint (what `resmlp analyze RUN` reads), whole test split.
    model = model_from_checkpoint(read_checkpoint(run.best))
    x_te, y_te, _ = load_split(data / "test", None, pre)
    ev = evaluate(model, batches(x_te, y_te, 512), cpu, num_classes=len(classes))
    conf = ev.confusion
    per_class = {c: 100.0 * float(conf[i, i]) / max(1, int(conf[i].sum())) for i, c in enumerate(classes)}
    run.eval.write_text(
        json.dumps(
            {
                "top1": ev.top1,
                "top5": ev.top5,
                "classes": classes,
                "per_class_top1": per_class,
                "confusion": conf.tolist(),
            }
        )
    )
    run.write_summary({"best_val_top1": best, "test_top1": ev.top1, "epochs": args.epochs})
    print(f"test top-1 {ev.top1:.2f}% on {len(x_te)} images; run directory {run.root}")


if __name__ == "__main__":
    main()
