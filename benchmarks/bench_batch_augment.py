"""Per-image vs batch augmentation (`data.batch_augment`): images/s of the real training loop, interleaved.

    python benchmarks/bench_batch_augment.py --recipe cifar10_cpu --data /tmp/cifar10/train --sizes 32 24 \
        --workers 0 1 --rounds 5 --steps 40

For each variant (per-image pipeline or batch augmentation, each `--workers` count) a run is built exactly as
`resmlp train` builds it (`train.run.build`: loaders with their seeded per-sample draws, the model, LAMB,
the criterion); every round then takes `--steps` optimizer steps of each variant at each `--sizes` entry
(progressive resizing's crop mode below the recipe's size) with `train_one_epoch`, the loop training runs, and
reports the median images/s. A round includes the loader's start-up (worker fork and the first batch), as
every epoch of a real run does. Prints a Markdown table (and writes it to --out when given).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import torch
from common import cpu_model

from resmlp.cli.train import data_overrides
from resmlp.config import Override, load_config
from resmlp.files import write_text_atomic
from resmlp.train.engine import train_one_epoch
from resmlp.train.run import build


def build_variant(recipe: str, data: str, common: list[Override], *, batch: bool, workers: int, run_dir: Path):
    cfg = load_config(
        recipe,
        [
            *data_overrides(data, None, None),
            *common,
            ("data.batch_augment", batch),
            ("data.workers", workers),
            ("progressive.mode", "crop"),
            ("run.tensorboard", False),
        ],
    )
    return build(cfg, run_dir, torch.device("cpu"))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--recipe", default="cifar10_cpu")
    ap.add_argument("--data", required=True)
    ap.add_argument("--sizes", type=int, nargs="+", default=[32, 24])
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--out", type=Path, help="write the Markdown table here")
    ap.add_argument("--set", dest="common", nargs="+", default=[], help="overrides of the recipe (KEY=VALUE)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench_batch_augment_") as tmp:
        table = measure(args, Path(tmp))
    print(table)
    if args.out:
        write_text_atomic(args.out, table + "\n")


def measure(args: argparse.Namespace, tmp: Path) -> str:
    """The interleaved rounds; returns the Markdown table."""
    runs = {
        (kind, w): build_variant(
            args.recipe, args.data, args.common, batch=kind == "batch", workers=w, run_dir=tmp / f"{kind}{w}"
        )
        for kind in ("per-image", "batch")
        for w in args.workers
    }
    rates: dict[tuple, list[float]] = {}
    for r in range(args.rounds):
        for size in args.sizes:
            for key, run in runs.items():
                run.resize(size)
                stats = train_one_epoch(run.ctx, run.train_loader, epoch=r, progress=False, max_steps=args.steps)
                rates.setdefault((size, *key), []).append(stats.images_per_s)
        print(
            f"round {r + 1}/{args.rounds}: "
            + ", ".join(f"{s}px {k} w{w} {v[-1]:.0f}" for (s, k, w), v in rates.items()),
            flush=True,
        )
    lines = [
        f"{args.recipe}, torch {torch.__version__}, {torch.get_num_threads()} threads, {cpu_model()}; "
        f"median images/s of {args.rounds} interleaved rounds x {args.steps} steps",
        "",
        "| size | workers | per-image images/s | batch augment images/s | batch / per-image |",
        "|---|---|---|---|---|",
    ]
    for size in args.sizes:
        for w in args.workers:
            a = statistics.median(rates[(size, "per-image", w)])
            b = statistics.median(rates[(size, "batch", w)])
            lines.append(f"| {size} | {w} | {a:.0f} | {b:.0f} | {b / a:.2f}x |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
