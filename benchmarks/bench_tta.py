"""Test-time augmentation on a finished run: its validation split scored with each TTA setting.

    python benchmarks/bench_tta.py RUN_DIR [--weights model|ema] [--views none flip flip+shift1]

The validation split is rebuilt from the run's own config (same data, seed and split), so the numbers are
comparable with the run's val_top1; TTA costs no training time, only evaluation time (reported).
"""

from __future__ import annotations

import argparse
import json
import time

from common import run_data

from resmlp.models.tta import with_tta


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir")
    ap.add_argument("--weights", default="model", choices=("model", "ema"))
    ap.add_argument("--views", nargs="+", default=["none", "flip", "flip+shift1"])
    args = ap.parse_args(argv)
    run = run_data(args.run_dir, weights=args.weights)
    results = {}
    for views in args.views:
        t0 = time.perf_counter()
        ev = run.evaluate(with_tta(run.loaded.model, views))
        results[views] = {"top1": ev.top1, "top5": ev.top5, "eval_s": time.perf_counter() - t0}
        print(
            f"{views:>12}: top-1 {ev.top1:.2f}%  top-5 {ev.top5:.2f}%  ({results[views]['eval_s']:.1f} s for "
            f"{ev.count} images)",
            flush=True,
        )
    print(json.dumps({"run": args.run_dir, "weights": args.weights, "results": results}))


if __name__ == "__main__":
    main()
