"""int8 ablation for docs/results.md ("Inference"): what each part of resmlp's int8 buys.

1. Agreement (--checkpoint, --data): top-1 agreement with fp32 and top-1 of the int8 forms of a trained model on
   its validation split, calibration images drawn from the training part. PyTorch (torch.ao dynamic): 7-bit
   activations (torch.ao's default) / full 8-bit / + smoothing at one fixed strength / + strength chosen per layer
   (what resmlp.optimize does). OpenVINO + NNCF (--openvino): NNCF's presets alone, its TRANSFORMER model type,
   and the parts of resmlp's recipe (`deploy.openvino.Int8Recipe`) added one at a time.
2. Speed (--speed): ResMLP-S12 at --batch, fused fp32 vs int8 plain vs int8 calibrated, interleaved
   rounds, medians: the cost of the smoothing multiply.

    python benchmarks/bench_int8.py --checkpoint runs/cifar10_cpu/checkpoints/best.pt \\
        --data /tmp/cifar/cifar10/train --openvino --speed
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

import torch
from common import add_split_arguments, split_images_of

from resmlp.deploy import fuse
from resmlp.deploy.quantize import SMOOTHING_STRENGTHS, quantize_int8
from resmlp.loading import load_model
from resmlp.models import create_model


def int8_forms(calibration: torch.Tensor) -> dict:
    """name -> (calibration or None, strengths, reduce_range) for quantize_int8."""
    forms = {
        "7-bit activations, no smoothing (torch.ao default)": (None, SMOOTHING_STRENGTHS, True),
        "8-bit activations, no smoothing": (None, SMOOTHING_STRENGTHS, False),
    }
    for a in (0.5, 0.6, 0.7, 0.8):
        forms[f"8-bit + smoothing a={a} in every layer"] = (calibration, (a,), False)
    forms["7-bit + smoothing, a per layer"] = (calibration, SMOOTHING_STRENGTHS, True)
    forms["8-bit + smoothing, a per layer (resmlp.optimize)"] = (calibration, SMOOTHING_STRENGTHS, False)
    return forms


def openvino_forms() -> dict:
    """name -> deploy.openvino.Int8Recipe: NNCF alone, then resmlp's recipe part by part."""
    from resmlp.deploy.openvino import INT8_RECIPE, Int8Recipe

    bare = Int8Recipe(smooth=False, keep_float=())
    return {
        "NNCF default (performance) preset": bare,
        "NNCF mixed preset": dataclasses.replace(bare, preset="mixed"),
        "NNCF TRANSFORMER model type (its SmoothQuant)": dataclasses.replace(bare, transformer=True),
        "NNCF default + stem and head in float": dataclasses.replace(bare, keep_float=("stem", "head")),
        "NNCF default + resmlp smoothing": dataclasses.replace(bare, smooth=True),
        "NNCF default + smoothing + stem/head float (resmlp's INT8_RECIPE)": INT8_RECIPE,
        "... + token mixing in float": dataclasses.replace(INT8_RECIPE, keep_float=("stem", "head", "token_mixing")),
        "... + full bias correction": dataclasses.replace(INT8_RECIPE, fast_bias_correction=False),
    }


def agreement(args: argparse.Namespace) -> None:
    loaded = load_model(args.checkpoint)
    model, preprocess = loaded.model, loaded.spec.preprocess
    x, paths = split_images_of(args, preprocess)
    labels = torch.tensor([loaded.spec.class_names().index(Path(p).parent.name) for p in paths])
    calibration, _ = split_images_of(args, preprocess, calibration=args.calibration)
    fused = fuse(model)

    def top1(m) -> torch.Tensor:
        with torch.inference_mode():
            return torch.cat([m(chunk) for chunk in x.split(256)]).argmax(-1)

    ref = top1(fused)
    print(f"fp32: top-1 {100 * (ref == labels).float().mean().item():.2f} % on {len(x)} validation images")
    print(f"\n| int8 form ({len(calibration)} calibration images) | top-1 agreement with fp32 | top-1 |\n|---|---|---|")

    def row(name: str, q) -> None:
        pred = top1(q)
        agree, acc = (100 * t.float().mean().item() for t in (pred == ref, pred == labels))
        print(f"| {name} | {agree:.2f} % | {acc:.2f} % |", flush=True)

    for name, (calib, strengths, reduce_range) in int8_forms(calibration).items():
        row(f"PyTorch: {name}", quantize_int8(fused, calib, strengths=strengths, reduce_range=reduce_range))
    if args.openvino:
        from resmlp.deploy.openvino import openvino_model

        for name, recipe in openvino_forms().items():
            row(f"OpenVINO: {name}", openvino_model(model, "int8", calibration=calibration, recipe=recipe))


def speed(args: argparse.Namespace) -> None:
    torch.manual_seed(0)
    fused = fuse(create_model(args.model).eval())
    s = fused.spec.args["img_size"]
    x = torch.randn(args.batch, 3, s, s)
    calibration = torch.randn(8, 3, s, s)
    variants = {
        "fp32 (fused)": fused,
        "int8 7-bit, no smoothing": quantize_int8(fused, reduce_range=True),
        "int8 8-bit, no smoothing": quantize_int8(fused, reduce_range=False),
        "int8 8-bit + smoothing (resmlp.optimize)": quantize_int8(fused, calibration, reduce_range=False),
    }
    rates: dict[str, list[float]] = {k: [] for k in variants}
    with torch.inference_mode():
        for m in variants.values():
            m(x)
        for _ in range(args.rounds):
            for name, m in variants.items():
                t0 = time.perf_counter()
                m(x)
                rates[name].append(args.batch / (time.perf_counter() - t0))
    base = statistics.median(rates["fp32 (fused)"])
    print(
        f"\n{args.model}, batch {args.batch}, {torch.get_num_threads()} threads, {args.rounds} interleaved rounds\n"
        "| variant | images/s median [min-max] | vs fp32 fused |\n|---|---|---|"
    )
    for name, r in rates.items():
        med = statistics.median(r)
        print(f"| {name} | {med:.1f} [{min(r):.1f}-{max(r):.1f}] | {med / base:.2f}x |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_split_arguments(ap)
    ap.add_argument("--speed", action="store_true")
    ap.add_argument("--openvino", action="store_true", help="also the OpenVINO + NNCF int8 forms")
    ap.add_argument("--model", default="resmlp_s12")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    if args.checkpoint and args.data and args.calibration < 1:
        ap.error("--calibration: the calibrated int8 forms need at least 1 image")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.checkpoint and args.data:
        agreement(args)
    if args.speed:
        speed(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
