"""The distillation teacher's forward pass as the student's steps run it (eval mode, no gradients, the model placed
as training places it, `distill.teacher_precision` as autocast, or compiled by OpenVINO with
`distill.teacher_runtime=openvino`): images/s per model, runtime, precision and image size, interleaved round by
round, medians over rounds. What a wider teacher costs the student inside the hour:

    python benchmarks/bench_teacher.py --models convnet_cifar:width=2 convnet_cifar:width=3 \
        convnet_cifar:width=4 --sizes 24 32 --batch 128 --precisions fp32,bf16 --rounds 5

and what a compress recovery's teacher (the ResMLP itself, at its own size) costs on each runtime:

    python benchmarks/bench_teacher.py --models resmlp_tiny32:embed_dim=128 --sizes 32 --batch 128 \
        --precisions fp32,bf16 --runtimes eager,openvino --rounds 5

OpenVINO compiles the teacher for its own input size, so it runs only at the sizes equal to that.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from bench_train_step import parse_model

from resmlp import create_model
from resmlp.deploy.trace import example_input
from resmlp.device import place
from resmlp.train.distill import openvino_teacher
from resmlp.train.engine import autocast

CPU = torch.device("cpu")


def forward_time(model: torch.nn.Module, x: torch.Tensor, precision: str, repeats: int) -> float:
    """Seconds per forward pass of batch `x` (after one untimed pass); `precision` is the autocast's (fp32 for a
    compiled teacher, which has its own)."""
    with torch.no_grad(), autocast(CPU, precision):
        model(x)
        t0 = time.perf_counter()
        for _ in range(repeats):
            model(x)
    return (time.perf_counter() - t0) / repeats


def teachers(model: torch.nn.Module, spec: str, precisions: list[str], runtimes: list[str]) -> dict:
    """(runtime, precision) -> (the module the trainer would run, the autocast precision around it)."""
    out = {}
    for runtime in runtimes:
        for precision in precisions:
            if runtime == "openvino":
                out[runtime, precision] = (openvino_teacher(model, precision, CPU, spec), "fp32")
            else:
                out[runtime, precision] = (model, precision)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["convnet_cifar:width=2", "convnet_cifar:width=4"])
    ap.add_argument("--sizes", type=int, nargs="+", default=[24, 32])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--precisions", default="fp32,bf16")
    ap.add_argument("--runtimes", default="eager", help="eager and/or openvino (comma-separated)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    models, own_size, runners = {}, {}, {}
    for spec in args.models:
        name, kwargs = parse_model(spec)
        models[spec] = place(create_model(name, **kwargs), CPU).eval()
        own_size[spec] = example_input(models[spec], 1).shape[-1]
        runners[spec] = teachers(models[spec], spec, args.precisions.split(","), args.runtimes.split(","))
    speeds: dict[tuple[str, int, str, str], list[float]] = {}
    for _ in range(args.rounds):
        for size in args.sizes:
            x = torch.randn(args.batch, 3, size, size).contiguous(memory_format=torch.channels_last)
            for spec in models:
                for (runtime, precision), (teacher, autocast_as) in runners[spec].items():
                    if runtime == "openvino" and size != own_size[spec]:
                        continue  # compiled for its own size only
                    seconds = forward_time(teacher, x, autocast_as, args.repeats)
                    speeds.setdefault((spec, size, runtime, precision), []).append(args.batch / seconds)
    print(f"batch {args.batch}, {torch.get_num_threads()} threads, {args.rounds} rounds; images/s, median [min-max]")
    print(f"{'model':32s} {'px':>4s} {'runtime':>8s} {'precision':>9s} {'img/s':>8s}  range")
    for (spec, size, runtime, precision), v in speeds.items():
        line = f"{spec:32s} {size:4d} {runtime:>8s} {precision:>9s} {statistics.median(v):8.0f}"
        print(f"{line}  {min(v):.0f}-{max(v):.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
