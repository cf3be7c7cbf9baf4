"""Resolution freedom (issue 12): a model trained at one size, run at others.

    # 1. top-1 on the run's held-out split at other sizes: each resampling method vs resizing the images back
    python benchmarks/bench_resample.py eval --run RUN --val-data HELD_OUT --sizes 24 28 32 36 40 48 --out OUT
    # 2. one epoch of fine-tuning after resampling vs the same epoch from scratch at that size
    python benchmarks/bench_resample.py finetune --run RUN --data TRAIN --val-data HELD_OUT --size 24 --out OUT
    # 3. train-step time per image size, interleaved rounds (what progressive resizing saves per epoch)
    python benchmarks/bench_resample.py steps --sizes 16 24 32 --out OUT
    # 4. progressive vs fixed size: minutes until the progressive run reaches the fixed run's final top-1
    python benchmarks/bench_resample.py compare --fixed RUN_A [RUN_A2 ...] --progressive RUN_B --out OUT

HELD_OUT must hold images the run never trained on (e.g. part of the run's own `data.val_split`, linked into a
folder); TRAIN images for fine-tuning should come from the run's training part.
"At size s" means the images are first brought to s x s px (bicubic, as `Preprocess` does); the model is then
resampled to s (each method), or the s px image is resized back to the model's training size ("resize").
Every command writes OUT/<command>.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from common import cpu_model, read_curve
from study import Study, plot_curves
from torch.utils.data import DataLoader

from resmlp.config import config_to_dict
from resmlp.data.datasets import ImageDataset, cache_decoded, scan_image_folder
from resmlp.data.transforms import Compose, ResizeCenterCrop, ToTensorNormalize
from resmlp.loading import load_model
from resmlp.models import RESAMPLE_METHODS, create_model
from resmlp.optim import build_optimizer
from resmlp.rundir import RunDir
from resmlp.train.checkpointing import config_of_run
from resmlp.train.engine import evaluate


def held_out(folder: str):
    """Every image of `folder` (root/<class>/*), decoded once: images the run never trained on."""
    paths, labels, classes = scan_image_folder(folder)
    return cache_decoded(ImageDataset(list(zip(paths, labels)), classes=classes), workers=1, progress=False)


def top1(model, dataset, transform, threads_note: dict) -> float:
    dataset.transform = transform
    loader = DataLoader(dataset, batch_size=500, num_workers=0)
    t0 = time.perf_counter()
    res = evaluate(model, loader, torch.device("cpu"), num_classes=len(dataset.classes))
    threads_note.setdefault("eval_s", []).append(round(time.perf_counter() - t0, 1))
    return res.top1


def run_eval(args) -> dict:
    val = held_out(args.val_data)
    base = load_model(args.run)
    pre = base.spec.preprocess
    train_size = pre.img_size
    norm = ToTensorNormalize(pre.mean, pre.std)
    rows, note = [], {}
    for size in args.sizes:
        at_size = ResizeCenterCrop(size, 1.0, pre.interpolation)  # the images as they come, s x s px
        row = {
            "size": size,
            "resize": top1(
                base.model, val, Compose([at_size, ResizeCenterCrop(train_size, 1.0, pre.interpolation), norm]), note
            ),
        }
        for method in args.methods:  # at the training size every method is the identity: no need to run it
            model = load_model(args.run, img_size=size, resample=method).model
            row[method] = row["resize"] if size == train_size else top1(model, val, Compose([at_size, norm]), note)
        rows.append(row)
        print(json.dumps(row), flush=True)
    return {"run": str(args.run), "train_size": train_size, "count": len(val), "rows": rows, **note}


def run_finetune(args) -> dict:
    common = [
        ("model.img_size", args.size),
        ("optim.epochs", 1),
        ("optim.warmup_epochs", args.warmup),
        ("budget.time_limit_min", None),
        ("budget.fit_to_time_limit", False),
        ("run.progress", False),
        ("run.tensorboard", False),
        ("data.path", args.data),
        ("data.val_path", args.val_data),
        *args.set,
    ]
    study = Study(None, args.out, common, base=config_to_dict(config_of_run(args.run)))
    out = {}
    for name, finetune in (("finetune", RunDir(args.run).best), ("scratch", None)):
        out[name] = study.run(f"{name}{args.size}", title=f"{name} at {args.size} px", finetune=finetune)
        print(name, json.dumps({k: out[name][k] for k in ("final_val_top1", "wall_time_s")}), flush=True)
    return {"run": str(args.run), "size": args.size, **out}


def run_steps(args) -> dict:
    """Median seconds per train step (forward, backward, LAMB) at each size, sizes interleaved per round."""
    torch.manual_seed(0)
    shape = {k: v for k, v in (("embed_dim", args.embed_dim), ("depth", args.depth)) if v is not None}
    models = {s: create_model("resmlp_tiny32", img_size=s, **shape) for s in args.sizes}
    opts = {s: build_optimizer(m, name="lamb", lr=1e-3, weight_decay=0.05) for s, m in models.items()}
    times = {s: [] for s in args.sizes}
    for _ in range(args.rounds):
        for s in args.sizes:
            x, y = torch.randn(128, 3, s, s), torch.randint(0, 10, (128,))
            t0 = time.perf_counter()
            for _ in range(args.steps):
                loss = torch.nn.functional.cross_entropy(models[s](x), y)
                loss.backward()
                opts[s].step()
                opts[s].zero_grad(set_to_none=True)
            times[s].append((time.perf_counter() - t0) / args.steps)
    ref = statistics.median(times[max(args.sizes)])
    rows = [
        {
            "size": s,
            "step_s": statistics.median(times[s]),
            "min_s": min(times[s]),
            "max_s": max(times[s]),
            "vs_largest": statistics.median(times[s]) / ref,
        }
        for s in args.sizes
    ]
    for r in rows:
        print(json.dumps(r), flush=True)
    return {"rows": rows, "rounds": args.rounds, "steps": args.steps, "batch": 128, "model_args": shape}


def run_compare(args) -> dict:
    """Minutes until the progressive run reaches the fixed runs' final top-1 (their mean over seeds), against
    the fixed runs' own minutes; OUT/compare.png draws every run's top-1 against wall-clock minutes."""
    fixed = [RunDir(run).read_metrics() for run in args.fixed]
    prog = RunDir(args.progressive).read_metrics()
    target = statistics.mean(rows[-1]["val_top1"] for rows in fixed)
    fixed_minutes = statistics.mean(rows[-1]["wall_time_s"] for rows in fixed) / 60
    reached = next((r for r in prog if r.get("val_top1", -1) >= target), None)
    out = {
        "fixed": fixed,
        "progressive": prog,
        "target_top1": target,
        "fixed_final_top1": [rows[-1]["val_top1"] for rows in fixed],
        "fixed_minutes": fixed_minutes,
        "progressive_minutes_to_target": reached["wall_time_s"] / 60 if reached else None,
        "progressive_final_top1": prog[-1]["val_top1"],
        "progressive_minutes": prog[-1]["wall_time_s"] / 60,
    }
    if reached:
        out["saving"] = 1 - out["progressive_minutes_to_target"] / fixed_minutes
    # the other way round: when each fixed run first reached the progressive run's final top-1
    out["fixed_minutes_to_progressive_final"] = [
        next((r["wall_time_s"] / 60 for r in rows if r.get("val_top1", -1) >= out["progressive_final_top1"]), None)
        for rows in fixed
    ]
    curves = [{"name": f"fixed {run.name}", "curves": [read_curve(run)]} for run in args.fixed]
    plot_curves(
        [*curves, {"name": f"progressive {args.progressive.name}", "curves": [read_curve(args.progressive)]}],
        args.out / "compare.png",
    )
    print(json.dumps({k: v for k, v in out.items() if k not in ("fixed", "progressive")}), flush=True)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("eval")
    p.add_argument("--run", type=Path, required=True)
    p.add_argument("--val-data", required=True, help="held-out image folder (never trained on)")
    p.add_argument("--sizes", type=int, nargs="+", default=[24, 28, 32, 36, 40, 48])
    p.add_argument("--methods", nargs="+", default=list(RESAMPLE_METHODS), choices=RESAMPLE_METHODS)
    p = sub.add_parser("finetune")
    p.add_argument("--run", type=Path, required=True)
    p.add_argument("--data", required=True, help="training image folder (one epoch of it)")
    p.add_argument("--val-data", required=True, help="held-out image folder (never trained on)")
    p.add_argument("--size", type=int, default=24)
    p.add_argument("--warmup", type=float, default=0.2)
    p.add_argument("--set", nargs="*", default=[])
    p = sub.add_parser("steps")
    p.add_argument("--sizes", type=int, nargs="+", default=[16, 24, 32])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--embed-dim", type=int, default=None, help="narrow resmlp_tiny32 as the trained runs were")
    p.add_argument("--depth", type=int, default=None)
    p = sub.add_parser("compare")
    p.add_argument("--fixed", type=Path, nargs="+", required=True, help="fixed-size runs (seeds)")
    p.add_argument("--progressive", type=Path, required=True)
    for p in sub.choices.values():
        p.add_argument("--out", type=Path, required=True)
        p.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default: 2)")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    t0 = time.time()
    result = {"eval": run_eval, "finetune": run_finetune, "steps": run_steps, "compare": run_compare}[args.command](
        args
    )
    result.update(
        command=args.command,
        cpu=cpu_model(),
        torch=torch.__version__,
        threads=torch.get_num_threads(),
        date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        seconds=round(time.time() - t0),
    )
    name = args.command if args.threads == 2 else f"{args.command}_threads{args.threads}"
    (args.out / f"{name}.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
