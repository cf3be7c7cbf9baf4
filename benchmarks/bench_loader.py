"""Data-loader throughput (decode + augment + collate, images/s) for a recipe, to compare with training
throughput: loading must not be the bottleneck.

    python benchmarks/bench_loader.py --recipe cifar10_cpu --data /tmp/cifar10/train --workers 0 1 2 --batches 60

For each (cache, workers) it iterates `--batches` batches of the recipe's training loader (after one warm-up
batch, which includes worker start-up) and reports images/s. Compare with `train_images_per_s` in the run's
summary.json: the ratio loader/train > 1 means the model, not the data, limits training.

    python benchmarks/bench_loader.py --recipe cifar10_cpu --data /tmp/cifar10/train --with-step --workers 0 1

`--with-step` times what the training loop sees instead: the recipe's model and optimizer taking steps on
batches from the loader with each `--workers` count and, as the reference, on one fixed batch, interleaved round by
round (a worker process shares the cores with the step's threads; this shows whether that costs anything).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from resmlp.cli.train import data_overrides
from resmlp.config import load_config
from resmlp.data.build import build_data
from resmlp.models import create_model
from resmlp.optim import build_optimizer
from resmlp.train.wiring import model_arguments


def loader_rate(dataset, batch_size: int, workers: int, batches: int) -> float:
    loader = DataLoader(
        dataset, batch_size=batch_size, shuffle=True, num_workers=workers, drop_last=True, persistent_workers=False
    )
    it = iter(loader)
    next(it)  # warm-up: worker start-up, first decode
    t0 = time.perf_counter()
    n = 0
    for _ in range(batches):
        images, _labels = next(it)
        n += images.shape[0]
    return n / (time.perf_counter() - t0)


def step_rates(cfg, dataset, workers: list[int], rounds: int, steps: int) -> dict[str, float]:
    """Median images/s of loader + forward/backward/optimizer step, per loader (workers, or "fixed batch")."""
    model = create_model(cfg.model.name, **cfg.model.overrides(), num_classes=len(dataset.classes)).train()
    opt = build_optimizer(model, name=cfg.optim.name, lr=1e-3, weight_decay=cfg.optim.weight_decay)
    sources = {
        f"workers={w}": iter(
            DataLoader(
                dataset,
                batch_size=cfg.data.batch_size,
                shuffle=True,
                num_workers=w,
                drop_last=True,
                persistent_workers=w > 0,
            )
        )
        for w in workers
    }
    fixed = next(next(iter(sources.values())))
    sources["fixed batch"] = iter(lambda: fixed, None)

    def run(it, n: int) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            images, labels = next(it)
            F.cross_entropy(model(images), labels, label_smoothing=cfg.data.label_smoothing).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        return n * cfg.data.batch_size / (time.perf_counter() - t0)

    for it in sources.values():
        run(it, 2)  # warm-up: worker start-up, allocator, kernel selection
    rates: dict[str, list[float]] = {name: [] for name in sources}
    for r in range(rounds):
        for name, it in sources.items():
            rates[name].append(run(it, steps))
        print(f"round {r + 1}/{rounds}: " + ", ".join(f"{k} {v[-1]:.0f}" for k, v in rates.items()), flush=True)
    return {name: statistics.median(v) for name, v in rates.items()}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--recipe", default="cifar10_cpu")
    ap.add_argument("--data", required=True)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--batches", type=int, default=60)
    ap.add_argument("--no-cache-too", action="store_true", help="also measure decoding JPEGs every time")
    ap.add_argument("--with-step", action="store_true", help="time loader + training step (see above)")
    ap.add_argument("--rounds", type=int, default=3, help="--with-step: interleaved rounds")
    ap.add_argument("--steps", type=int, default=25, help="--with-step: steps per loader per round")
    ap.add_argument("--set", dest="common", nargs="+", default=[], help="overrides of the recipe (KEY=VALUE)")
    args = ap.parse_args(argv)
    if args.with_step:
        cfg = load_config(args.recipe, [*data_overrides(args.data, None, None), *args.common])
        data = build_data(cfg.data, img_size=model_arguments(cfg.model)["img_size"])
        rates = step_rates(cfg, data.train, args.workers, args.rounds, args.steps)
        print(
            f"recipe {args.recipe}, {cfg.model.name}, batch {cfg.data.batch_size}, torch threads "
            f"{torch.get_num_threads()}, median of {args.rounds} rounds x {args.steps} steps (images/s): "
            + ", ".join(f"{k} {v:.0f}" for k, v in rates.items()),
            flush=True,
        )
        return
    caches = [True, False] if args.no_cache_too else [True]
    for cache in caches:
        cfg = load_config(args.recipe, [*data_overrides(args.data, None, None), *args.common, ("data.cache", cache)])
        data = build_data(cfg.data, img_size=model_arguments(cfg.model)["img_size"])
        for w in args.workers:
            rate = loader_rate(data.train, cfg.data.batch_size, w, args.batches)
            print(
                f"recipe {args.recipe} cache={cache} workers={w}: {rate:,.0f} images/s "
                f"(batch {cfg.data.batch_size}, {args.batches} batches)",
                flush=True,
            )


if __name__ == "__main__":
    main()
