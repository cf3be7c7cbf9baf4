"""The distillation teacher's forward pass as the student's steps run it (eval mode, no gradients, the model placed
as training places it, `distill.teacher_precision` as autocast): images/s per model, precision and image size,
interleaved round by round, medians over rounds. What a wider teacher costs the student inside the hour:

    python benchmarks/bench_teacher.py --models convnet_cifar:width=2 convnet_cifar:width=3 \
        convnet_cifar:width=4 --sizes 24 32 --batch 128 --precisions fp32,bf16 --rounds 5
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from bench_train_step import parse_model

from resmlp import create_model
from resmlp.device import place
from resmlp.train.engine import autocast


def forward_time(model: torch.nn.Module, x: torch.Tensor, precision: str, repeats: int) -> float:
    """Seconds per forward pass of batch `x` (after one untimed pass)."""
    device = torch.device("cpu")
    with torch.no_grad(), autocast(device, precision):
        model(x)
        t0 = time.perf_counter()
        for _ in range(repeats):
            model(x)
    return (time.perf_counter() - t0) / repeats


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["convnet_cifar:width=2", "convnet_cifar:width=4"])
    ap.add_argument("--sizes", type=int, nargs="+", default=[24, 32])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--precisions", default="fp32,bf16")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    models = {}
    for spec in args.models:
        name, kwargs = parse_model(spec)
        models[spec] = place(create_model(name, **kwargs), torch.device("cpu")).eval()
    precisions = args.precisions.split(",")
    speeds: dict[tuple[str, int, str], list[float]] = {}
    for _ in range(args.rounds):
        for size in args.sizes:
            x = torch.randn(args.batch, 3, size, size).contiguous(memory_format=torch.channels_last)
            for spec, model in models.items():
                for precision in precisions:
                    seconds = forward_time(model, x, precision, args.repeats)
                    speeds.setdefault((spec, size, precision), []).append(args.batch / seconds)
    print(f"batch {args.batch}, {torch.get_num_threads()} threads, {args.rounds} rounds; images/s, median [min-max]")
    print(f"{'model':32s} {'px':>4s} {'precision':>9s} {'img/s':>8s}  range")
    for (spec, size, precision), v in speeds.items():
        print(f"{spec:32s} {size:4d} {precision:>9s} {statistics.median(v):8.0f}  {min(v):.0f}-{max(v):.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
