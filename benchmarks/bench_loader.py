"""Data-loader throughput (decode + augment + collate, images/s) for a recipe, to compare with training
throughput: loading must not be the bottleneck.

    python benchmarks/bench_loader.py --recipe cifar10_cpu --data /tmp/cifar10/train --workers 0 1 2 --batches 60

For each (cache, workers) it iterates `--batches` batches of the recipe's training loader (after one warm-up
batch, which includes worker start-up) and reports images/s. Compare with `train_images_per_s` in the run's
summary.json: the ratio loader/train > 1 means the model, not the data, limits training.
"""
from __future__ import annotations

import argparse
import time

from torch.utils.data import DataLoader

from resmlp.cli.train import data_overrides
from resmlp.config import load_config
from resmlp.data.build import build_data
from resmlp.train.run import model_arguments


def loader_rate(dataset, batch_size: int, workers: int, batches: int) -> float:
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers, drop_last=True,
                        persistent_workers=False)
    it = iter(loader)
    next(it)  # warm-up: worker start-up, first decode
    t0 = time.perf_counter()
    n = 0
    for _ in range(batches):
        images, _labels = next(it)
        n += images.shape[0]
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--recipe", default="cifar10_cpu")
    ap.add_argument("--data", required=True)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--batches", type=int, default=60)
    ap.add_argument("--no-cache-too", action="store_true", help="also measure decoding JPEGs every time")
    args = ap.parse_args()
    caches = [True, False] if args.no_cache_too else [True]
    for cache in caches:
        cfg = load_config(args.recipe, data_overrides(args.data, None, None) + [f"data.cache={str(cache).lower()}"])
        data = build_data(cfg.data, img_size=model_arguments(cfg.model)["img_size"])
        for w in args.workers:
            rate = loader_rate(data.train, cfg.data.batch_size, w, args.batches)
            print(f"recipe {args.recipe} cache={cache} workers={w}: {rate:,.0f} images/s "
                  f"(batch {cfg.data.batch_size}, {args.batches} batches)", flush=True)


if __name__ == "__main__":
    main()
