"""Which test-time views to average, on a finished run: every view's logits are computed once, then each
named set of views is scored from them (so 20 sets cost the forward passes of their distinct views only).

    python benchmarks/bench_tta_views.py RUN_DIR [--weights model|ema] [--sets flip+diag1 flip+antidiag1 ...]

A view is (mirrored, dy, dx): the image, optionally flipped, translated by (dy, dx) px with a reflected
border, as `resmlp.models.tta.TestTimeAugment` does; `flip+diag1` is the trainer's `flip+shift1`. The
validation split is rebuilt from the run's own config, so the numbers compare with the run's val_top1.
Each set is scored twice: mean of logits (what `TestTimeAugment` does) and mean of softmax probabilities.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from common import run_data

from resmlp.models.tta import shift_image

View = tuple[bool, int, int]


def with_flips(offsets: list[tuple[int, int]]) -> list[View]:
    return [(f, dy, dx) for f in (False, True) for dy, dx in offsets]


VIEW_SETS: dict[str, list[View]] = {
    "none": [(False, 0, 0)],
    "flip": with_flips([(0, 0)]),
    "flip+diag1": with_flips([(0, 0), (1, 1), (-1, -1)]),  # = the trainer's flip+shift1
    "flip+diag2": with_flips([(0, 0), (2, 2), (-2, -2)]),
    "flip+antidiag1": with_flips([(0, 0), (1, -1), (-1, 1)]),
    "flip+diags1": with_flips([(0, 0), (1, 1), (-1, -1), (1, -1), (-1, 1)]),
    "flip+cross1": with_flips([(0, 0), (1, 0), (-1, 0), (0, 1), (0, -1)]),
    "flip+3x3": with_flips([(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]),
    "flip+diag1+diag2": with_flips([(0, 0), (1, 1), (-1, -1), (2, 2), (-2, -2)]),
}


@torch.no_grad()
def view_logits(model: torch.nn.Module, images: torch.Tensor, view: View, batch: int) -> torch.Tensor:
    flip, dy, dx = view
    out = []
    for i in range(0, len(images), batch):
        x = images[i : i + batch]
        out.append(model(shift_image(x.flip(-1) if flip else x, dy, dx)).float())
    return torch.cat(out)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir")
    ap.add_argument("--weights", default="model", choices=("model", "ema"))
    ap.add_argument("--sets", nargs="+", default=list(VIEW_SETS), choices=list(VIEW_SETS))
    args = ap.parse_args(argv)
    run = run_data(args.run_dir, weights=args.weights)
    model, batch = run.loaded.model.eval(), run.cfg.data.eval_batch_size
    batches = list(run.loader(run.data.val))
    images, labels = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
    cache: dict[View, torch.Tensor] = {}
    results = {}
    for name in args.sets:
        t0 = time.perf_counter()
        for v in VIEW_SETS[name]:
            if v not in cache:
                cache[v] = view_logits(model, images, v, batch)
        logits = torch.stack([cache[v] for v in VIEW_SETS[name]])  # (views, images, classes)
        top1 = {
            how: 100.0 * (agg.argmax(-1) == labels).float().mean().item()
            for how, agg in (("logits", logits.mean(0)), ("probs", logits.softmax(-1).mean(0)))
        }
        results[name] = {"views": len(VIEW_SETS[name]), **top1}
        print(
            f"{name:>18}: {len(VIEW_SETS[name]):2d} views  top-1 {top1['logits']:.2f}% (mean logits)  "
            f"{top1['probs']:.2f}% (mean probabilities)  [{time.perf_counter() - t0:.0f} s]",
            flush=True,
        )
    print(json.dumps({"run": args.run_dir, "weights": args.weights, "images": len(labels), "results": results}))


if __name__ == "__main__":
    main()
