"""Training-step throughput (images/s) of model configurations and optimizers in fp32 vs bf16 autocast, interleaved.

Used to choose the CPU recipe's model. Each round runs every (model, precision) for a few steps, round
after round, so a noisy host slows all variants alike; we report the median and range over rounds.

    python benchmarks/bench_train_step.py --img-size 32 --batch 128 --rounds 5 \
        --models resmlp_tiny32 "resmlp_tiny32:embed_dim=128,depth=8" "resmlp_tiny32:token_mixing=conv3x3"
    python benchmarks/bench_train_step.py --models "resmlp_tiny32:embed_dim=128" --optimizers lamb,muon \
        --precisions fp32   # what the optimizer step costs (Muon: Newton-Schulz per matrix)
    python benchmarks/bench_train_step.py --models "resmlp_tiny32:embed_dim=128" --optimizers muon \
        --precisions fp32 --malloc default,retain   # glibc returning freed memory vs keeping it (run.retain_cpu_memory)
    python benchmarks/bench_train_step.py --models "resmlp_tiny32:embed_dim=128" --optimizers muon \
        --precisions fp32 --batch 64,128 --img-size 24   # batch sizes interleaved
    python benchmarks/bench_train_step.py --models convnet_cifar resnet20_cifar --optimizers sgd \
        --precisions fp32 --batch 512 --layouts nchw,placed   # the conv teachers in NCHW vs as trained (NHWC)
    python benchmarks/bench_train_step.py --models "resmlp_tiny32:embed_dim=128" --weights runs/hour \
        --optimizers muon --precisions bf16 --img-size 24 --compile --keep-denormals   # trained weights' denormals

Denormal floats are flushed to zero as in training (`device.flush_denormals`) unless --keep-denormals; --weights
starts every variant from a trained checkpoint's model (replacing --models' spec, which only names the row), where
denormals show. --profile-kernels N ends with `torch.profiler`'s N largest entries (self CPU time) over three steps
of each compiled variant, each generated Inductor kernel timed by name.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch

from resmlp import create_model
from resmlp.device import flush_denormals, place, retain_freed_cpu_memory
from resmlp.loading import load_model
from resmlp.models import count_macs
from resmlp.optim import build_optimizer
from resmlp.train.engine import autocast
from resmlp.train.losses import soft_target_cross_entropy


def parse_model(spec: str) -> tuple[str, dict]:
    name, _, rest = spec.partition(":")
    kw: dict = {}
    for item in filter(None, rest.split(",")):
        k, v = item.split("=")
        for kind in (int, float, str):  # numbers as numbers; option names (token_mixing=conv3x3) as strings
            try:
                kw[k] = kind(v)
                break
            except ValueError:
                continue
    return name, kw


def step_time(model, opt, x, targets, precision: str, steps: int) -> float:
    dev = torch.device("cpu")
    t0 = time.perf_counter()
    for _ in range(steps):
        with autocast(dev, precision):
            logits = model(x)
        loss = soft_target_cross_entropy(logits, targets)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return (time.perf_counter() - t0) / steps


def print_kernel_profile(label: str, run, rows: int) -> None:
    """The `rows` entries of `torch.profiler` with the most self CPU time while `run()` runs."""
    with torch.profiler.profile() as prof:
        run()
    print(f"\n{label}: the {rows} costliest entries")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=72))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", default=["resmlp_tiny32"])
    ap.add_argument("--img-size", type=int, default=32)
    ap.add_argument("--batch", default="128", help="comma-separated batch sizes, interleaved like the rest")
    ap.add_argument("--precisions", default="fp32,bf16")
    ap.add_argument("--optimizers", default="lamb", help="comma-separated optim.name values (lamb, adamw, sgd, muon)")
    ap.add_argument(
        "--layouts",
        default="placed",
        help="comma-separated: placed (device.place, as the trainer does: "
        "NHWC for the conv nets) and/or nchw (the default memory format)",
    )
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--compile", action="store_true", help="also time each variant with torch.compile(model)")
    ap.add_argument("--weights", default=None, help="start from these trained weights (a run or checkpoint)")
    ap.add_argument("--profile-kernels", type=int, default=0, help="print the N costliest kernels of compiled steps")
    ap.add_argument("--keep-denormals", action="store_true", help="do not flush denormals to zero (training does)")
    ap.add_argument(
        "--malloc",
        default="retain",
        help="comma-separated: retain (run.retain_cpu_memory, the "
        "trainer's default on CPU) and/or default (glibc's thresholds fixed at their 128 KiB start); "
        "set before each timing",
    )
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.profile_kernels:
        import torch._inductor.config as inductor_config

        inductor_config.cpp.enable_kernel_profile = True  # each generated kernel a profiler entry
    if not args.keep_denormals:
        flush_denormals()
    trained = load_model(args.weights).model if args.weights else None
    classes = trained.num_classes if trained is not None else 10
    torch.manual_seed(0)
    batches = [int(b) for b in args.batch.split(",")]
    inputs = {
        b: (torch.randn(b, 3, args.img_size, args.img_size), torch.softmax(torch.randn(b, classes), -1))
        for b in batches
    }
    variants = []
    optimizers = args.optimizers.split(",")
    mallocs = args.malloc.split(",")
    if not set(mallocs) <= {"retain", "default"}:
        ap.error(f"--malloc {args.malloc}: expected retain and/or default, comma-separated")
    layouts = args.layouts.split(",")
    if not set(layouts) <= {"placed", "nchw"}:
        ap.error(f"--layouts {args.layouts}: expected placed and/or nchw, comma-separated")
    for spec in args.models:
        name, kw = parse_model(spec)
        for opt_name, layout in [(o, lay) for o in optimizers for lay in layouts]:
            if trained is None:
                model = create_model(name, img_size=args.img_size, num_classes=10, **kw).train()
            else:  # the checkpoint's own model (its spec, not --models'), moved to --img-size
                model = copy.deepcopy(trained).set_input_size((args.img_size, args.img_size)).train()
            macs = count_macs(model, (1, 3, args.img_size, args.img_size))
            if layout == "placed":
                place(model, "cpu")
            opt = build_optimizer(model, name=opt_name, lr=1e-3, weight_decay=0.05)
            for batch in batches:
                label = spec if len(optimizers) == 1 else f"{spec} {opt_name}"
                label += f" {layout}" if len(layouts) > 1 else ""
                label += f" b{batch}" if len(batches) > 1 else ""
                for prec in args.precisions.split(","):
                    for malloc in mallocs:
                        tag = prec if len(mallocs) == 1 else f"{prec} {malloc}"
                        variants.append((label, tag, model, opt, macs, malloc, batch))
                        if args.compile:  # the same weights and optimizer, forward and backward through Inductor
                            variants.append((label, tag + "+compile", torch.compile(model), opt, macs, malloc, batch))
    for v in variants:  # warm-up (allocator, oneDNN kernel selection, compilation)
        retain_freed_cpu_memory(v[5] == "retain")
        step_time(v[2], v[3], *inputs[v[6]], v[1].split()[0].split("+")[0], 2)
    times: dict[tuple, list[float]] = {(v[0], v[1]): [] for v in variants}
    for _ in range(args.rounds):
        for spec, prec, model, opt, _m, malloc, batch in variants:
            retain_freed_cpu_memory(malloc == "retain")
            times[(spec, prec)].append(step_time(model, opt, *inputs[batch], prec.split()[0].split("+")[0], args.steps))
    print(
        f"batch {args.batch}, {args.img_size}px, {torch.get_num_threads()} threads, "
        f"{args.rounds} rounds x {args.steps} steps"
    )
    print(f"{'model (optimizer)':<40}{'prec':<14}{'GMACs/img':>10}{'img/s median':>14}{'range':>14}{'GFLOP/s':>9}")
    for spec, prec, _model, _opt, macs, _malloc, batch in variants:
        ips = [batch / t for t in times[(spec, prec)]]
        flops = 6 * macs * statistics.median(ips) / 1e9  # forward 2 MACs->FLOPs, backward twice the forward
        print(
            f"{spec:<40}{prec:<14}{macs / 1e9:>10.3f}{statistics.median(ips):>14.0f}"
            f"{min(ips):>7.0f}-{max(ips):<6.0f}{flops:>9.1f}"
        )
    for spec, prec, model, opt, _m, malloc, batch in variants if args.profile_kernels else []:
        if prec.endswith("+compile"):
            print_kernel_profile(
                f"{spec} {prec}, 3 steps",
                lambda: step_time(model, opt, *inputs[batch], prec.split()[0].split("+")[0], 3),
                args.profile_kernels,
            )


if __name__ == "__main__":
    main()
