"""Inference acceptance numbers for docs/results.md ("Inference" section).

1. Speed: ResMLP-S12, 224 px, batch 1 and 64, every precision x runtime (eager, compile, ONNX Runtime, OpenVINO)
   interleaved in one process (resmlp.deploy.benchmark); prints the best path's throughput relative to plain fp32
   eager (the timm model's computation) and the best batch-1 latency.
2. Agreement (with --checkpoint and --data): on a trained model's validation images, top-1 agreement of
   bf16 / ONNX Runtime / OpenVINO (int8 on both engines) with fp32 eager, and the max |logit difference|.

    python benchmarks/bench_inference.py --json bench_inference.json
    python benchmarks/bench_inference.py --skip-speed --checkpoint runs/cifar/checkpoints/best.pt \
        --data /tmp/cifar/cifar10/train

The validation split of --data is the one training used: the checkpoint's data.val_split and
data.split_seed (stratified_split), unless --val-split / --split-seed say otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from common import add_split_arguments, split_images_of

from resmlp.deploy import build_runtime
from resmlp.deploy.benchmark import format_report, run_benchmark
from resmlp.loading import load_model
from resmlp.models import create_model


def speed(args: argparse.Namespace) -> dict:
    torch.manual_seed(0)
    model = create_model(args.model)
    report = run_benchmark(
        model,
        batches=args.batch,
        precisions=args.precision.split(","),
        runtimes=args.runtime.split(","),
        rounds=args.rounds,
        seconds=args.seconds,
    )
    print(format_report(report))
    rows = [r for r in report["results"] if "images_per_s_median" in r]
    for batch in args.batch:
        here = [r for r in rows if r["batch"] == batch and r.get("speedup")]
        best = max(here, key=lambda r: r["images_per_s_median"])
        fastest = min(here, key=lambda r: r["latency_ms_p50"])
        print(
            f"batch {batch}: best path {best['runtime']}/{best['precision']} at "
            f"{best['images_per_s_median']:.1f} images/s = {best['speedup']:.2f}x plain fp32 eager "
            f"(acceptance: >= 4.5x); lowest p50 latency {fastest['runtime']}/{fastest['precision']} "
            f"{fastest['latency_ms_p50']:.1f} ms"
        )
    return report


def agreement(args: argparse.Namespace) -> dict:
    loaded = load_model(args.checkpoint)
    model, preprocess = loaded.model, loaded.spec.preprocess
    x, _ = split_images_of(args, preprocess)
    calib, _ = split_images_of(args, preprocess, calibration=args.calibration) if args.calibration else (None, None)

    def logits_of(runner) -> torch.Tensor:
        with torch.inference_mode():
            return torch.cat([runner(chunk).float() for chunk in x.split(256)])

    ref = logits_of(model)
    out = {"checkpoint": str(args.checkpoint), "model": loaded.spec.name, "images": len(x), "variants": {}}
    variants = [
        ("eager", "fp32", None),
        ("eager", "bf16", None),
        ("onnx", "fp32", None),
        ("onnx", "int8", None),
        ("openvino", "fp32", None),
        ("openvino", "bf16", None),
    ]
    if calib is not None:
        variants += [("onnx", "int8", calib), ("openvino", "int8", calib)]
    if args.compile:
        variants.append(("compile", "bf16", None))
    for runtime, precision, calibration in variants:
        t0 = time.perf_counter()
        got = logits_of(build_runtime(model, precision=precision, runtime=runtime, calibration=calibration))
        label = f"{runtime}/{precision}" + (f" calibrated on {len(calibration)}" if calibration is not None else "")
        row = {
            "top1_agreement": (got.argmax(-1) == ref.argmax(-1)).float().mean().item(),
            "max_abs_logit_diff": (got - ref).abs().max().item(),
            "seconds": time.perf_counter() - t0,
        }
        out["variants"][label] = row
        print(
            f"{label:<30} top-1 agreement with fp32 eager {100 * row['top1_agreement']:.2f}%  "
            f"max |logit diff| {row['max_abs_logit_diff']:.2e}"
        )
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="resmlp_s12")
    ap.add_argument("--batch", type=lambda s: [int(v) for v in s.split(",")], default=[1, 64])
    ap.add_argument("--precision", default="fp32,bf16,int8")
    ap.add_argument("--runtime", default="eager,compile,onnx,openvino")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--skip-speed", action="store_true")
    add_split_arguments(ap)
    ap.add_argument("--compile", action="store_true", help="also check compile/bf16 agreement (slow to compile)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    result: dict = {}
    if not args.skip_speed:
        result["speed"] = speed(args)
    if args.checkpoint and args.data and Path(args.checkpoint).exists() and Path(args.data).is_dir():
        result["agreement"] = agreement(args)
    elif args.checkpoint or args.data:
        print(
            f"agreement check skipped: need an existing --checkpoint and --data folder "
            f"(got {args.checkpoint}, {args.data})",
            file=sys.stderr,
        )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        print(f"saved {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
