"""int8 ablation for docs/results.md ("Inference"): what each part of resmlp's int8 recipe buys.

1. Agreement (--checkpoint, --data): top-1 agreement with fp32 and top-1 of the int8 forms of a trained model on
   its validation split, calibration images drawn from the training part: OpenVINO + NNCF with NNCF's presets
   alone, its TRANSFORMER model type, then the parts of resmlp's recipe (`deploy.openvino.Int8Recipe`) added one
   at a time; two faster forms of INT8_RECIPE (its float parts in bf16, the token mixing quantised too); ONNX
   Runtime's dynamic int8 of the smoothed model.
2. Speed (--speed): ResMLP-S12 at --batch, fused fp32 eager vs OpenVINO int8 bare vs resmlp's recipe (the cost of
   the parts kept in float) vs ONNX Runtime int8, and OpenVINO bf16 / int8 of S12 with --keep of every channel MLP's
   hidden units (structured pruning, `resmlp compress`), interleaved rounds, medians.
3. Shapes (--shapes DEPTH:KEEP[@SIZE] ...): OpenVINO int8 images/s of --model cut to DEPTH blocks with KEEP of
   every channel MLP's hidden units (what `resmlp compress --depth --keep` makes; speed does not depend on the
   weights), at SIZE px when given, against the whole model's int8, interleaved; --embed-dim sets the width (the
   `cifar10_cpu` student: 128; several widths are timed side by side, like several --token-mixing). --forms adds
   other forms of each shape (SHAPE_FORMS): the same int8 IR with the parts NNCF leaves in float run in bf16, A x
   quantised as well, the first block's channel MLP quantised as well, plain OpenVINO bf16.

    python benchmarks/bench_int8.py --checkpoint runs/cifar10_cpu --data cifar10/train --speed
    python benchmarks/bench_int8.py --model resmlp_tiny32 --embed-dim 128 --shapes 8:0.4 6:0.5 5:0.6 4:1 8:1@24
    python benchmarks/bench_int8.py --model resmlp_tiny32 --embed-dim 128 --shapes 7:0.4@28 --forms int8 int8+bf16 bf16
    python benchmarks/bench_int8.py --model resmlp_tiny32 --embed-dim 128 --shapes 8:0.875@24 \
        --token-mixing linear conv3x3_depthwise --forms int8 bf16
    python benchmarks/bench_int8.py --model resmlp_tiny32 --embed-dim 128 112 96 80 64 --shapes 8:1 \
        --token-mixing conv3x3_depthwise
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import torch
from common import add_split_arguments, split_images_of

from resmlp.deploy import build_runtime, optimize
from resmlp.deploy.benchmark import time_interleaved
from resmlp.deploy.compress import at_size, drop_blocks, prune_channel_mlps
from resmlp.deploy.openvino import INT8_RECIPE, Int8Recipe, OpenVinoModel, openvino_model, quantize_openvino
from resmlp.loading import load_model
from resmlp.models import count_macs, count_params, create_model

BARE = Int8Recipe(smooth=False, keep_float=(), elementwise=True)  # NNCF's defaults

# --forms: name -> (int8 recipe, or None for no int8; OpenVINO's inference precision for what is not int8)
SHAPE_FORMS: dict[str, tuple[Int8Recipe | None, str]] = {
    "int8": (INT8_RECIPE, "fp32"),
    "int8+bf16": (INT8_RECIPE, "bf16"),  # the same IR; the parts NNCF leaves in float run in bf16
    # A x quantised too; the first block's channel MLP quantised too (INT8_RECIPE until it kept that MLP in float)
    "int8+A": (dataclasses.replace(INT8_RECIPE, keep_float=("stem", "head", "first_mlp")), "fp32"),
    "int8+mlp0": (dataclasses.replace(INT8_RECIPE, keep_float=("stem", "head", "token_mixing")), "fp32"),
    "bf16": (None, "bf16"),
}


def openvino_forms() -> dict[str, Int8Recipe]:
    """name -> deploy.openvino.Int8Recipe: NNCF alone, then resmlp's recipe part by part."""
    residual = dataclasses.replace(BARE, elementwise=False)
    smoothed = dataclasses.replace(residual, smooth=True)
    return {
        "NNCF default (performance) preset": BARE,
        "NNCF mixed preset": dataclasses.replace(BARE, preset="mixed"),
        "NNCF TRANSFORMER model type (its SmoothQuant)": dataclasses.replace(BARE, transformer=True),
        "NNCF default, residual stream (Add, Multiply inputs) in float": residual,
        "... + resmlp smoothing of the channel MLPs": smoothed,
        "... + stem and head in float": dataclasses.replace(smoothed, keep_float=("stem", "head")),
        "... + token mixing in float": dataclasses.replace(INT8_RECIPE, keep_float=("stem", "head", "token_mixing")),
        "... + the first block's channel MLP in float (resmlp's INT8_RECIPE)": INT8_RECIPE,
        "INT8_RECIPE + full bias correction": dataclasses.replace(INT8_RECIPE, fast_bias_correction=False),
    }


def agreement(args: argparse.Namespace) -> None:
    loaded = load_model(args.checkpoint)
    model = loaded.model
    x, paths = split_images_of(args, loaded.spec.preprocess)
    labels = torch.tensor([loaded.spec.class_names().index(Path(p).parent.name) for p in paths])
    calibration, _ = split_images_of(args, loaded.spec.preprocess, calibration=args.calibration)

    def top1(m) -> torch.Tensor:
        with torch.inference_mode():
            return torch.cat([m(chunk) for chunk in x.split(256)]).argmax(-1)

    ref = top1(model.eval())
    print(f"fp32: top-1 {100 * (ref == labels).float().mean().item():.2f} % on {len(x)} validation images")
    print(f"\n| int8 form ({len(calibration)} calibration images) | top-1 agreement with fp32 | top-1 |\n|---|---|---|")

    def row(name: str, q) -> None:
        pred = top1(q)
        agree, acc = (100 * t.float().mean().item() for t in (pred == ref, pred == labels))
        print(f"| {name} | {agree:.2f} % | {acc:.2f} % |", flush=True)

    for name, recipe in openvino_forms().items():
        row(f"OpenVINO: {name}", openvino_model(model, "int8", calibration=calibration, recipe=recipe))
    for form, what in (("int8+bf16", "its float parts run in bf16"), ("int8+A", "the token mixing quantised too")):
        row(f"OpenVINO: INT8_RECIPE, {what} (--forms {form})", shape_runner(model, form, calibration))
    row(
        "ONNX Runtime: dynamic int8 of the smoothed model",
        build_runtime(model, precision="int8", runtime="onnx", calibration=calibration),
    )


def speed(args: argparse.Namespace) -> None:
    torch.manual_seed(0)
    model = create_model(args.model).eval()
    shape = model.spec.input_shape
    x, calibration = torch.randn(args.batch, *shape), torch.randn(8, *shape)
    pruned = prune_channel_mlps(model, args.keep, calibration)
    runners = {
        "fp32 eager (fused)": optimize(model, "fp32"),
        "OpenVINO int8, NNCF defaults": openvino_model(model, "int8", calibration=calibration, recipe=BARE),
        "OpenVINO int8, resmlp's INT8_RECIPE": openvino_model(model, "int8", calibration=calibration),
        "ONNX Runtime int8, smoothed": build_runtime(model, precision="int8", runtime="onnx", calibration=calibration),
        "OpenVINO bf16": openvino_model(model, "bf16"),
        f"OpenVINO int8, {args.keep:.0%} of the hidden units": openvino_model(pruned, "int8", calibration=calibration),
        f"OpenVINO bf16, {args.keep:.0%} of the hidden units": openvino_model(pruned, "bf16"),
    }
    rates = time_interleaved(runners, x, rounds=args.rounds)
    base = rates["fp32 eager (fused)"]
    shape1 = (1, *shape)
    print(
        f"\n{args.model}: {count_params(model) / 1e6:.2f} M params, {count_macs(model, shape1) / 1e9:.2f} GFLOPs; with "
        f"{args.keep:.0%} of the hidden units {count_params(pruned) / 1e6:.2f} M, "
        f"{count_macs(pruned, shape1) / 1e9:.2f}"
        f"\nbatch {args.batch}, {torch.get_num_threads()} threads, {args.rounds} interleaved rounds\n"
        "| variant | images/s (median) | vs fp32 fused |\n|---|---|---|"
    )
    for name, rate in rates.items():
        print(f"| {name} | {rate:.1f} | {rate / base:.2f}x |")


def cut_model(model: torch.nn.Module, item: str, calibration: torch.Tensor) -> tuple[str, torch.nn.Module]:
    """One --shapes item, DEPTH:KEEP[@SIZE]: `model` cut to DEPTH blocks with KEEP of the hidden units, taking
    SIZE px images when given (`deploy.compress.at_size`). Returns its name and the model."""
    cut, _, size = item.partition("@")
    depth, keep = cut.split(":")
    smaller = prune_channel_mlps(drop_blocks(model, int(depth), calibration), float(keep), calibration)
    name = f"{depth} blocks, {float(keep):.0%} of the hidden units"
    return (f"{name}, {size} px", at_size(smaller, int(size))) if size else (name, smaller)


def shape_runner(model: torch.nn.Module, form: str, calibration: torch.Tensor) -> OpenVinoModel:
    """`model` compiled by OpenVINO in one of SHAPE_FORMS."""
    recipe, precision = SHAPE_FORMS[form]
    if recipe is None:
        return openvino_model(model, precision)
    return OpenVinoModel(quantize_openvino(model, calibration, recipe), precision=precision)


def shapes(args: argparse.Namespace) -> None:
    torch.manual_seed(0)
    dims = args.embed_dim or [None]
    kwargs = {"embed_dim": dims[0] if len(dims) == 1 else dims} if args.embed_dim else {}
    mixings = args.token_mixing or [None]
    models = {}
    for mixing, dim in [(mixing, dim) for mixing in mixings for dim in dims]:
        options = {**({"embed_dim": dim} if dim else {}), **({"token_mixing": mixing} if mixing else {})}
        model = create_model(args.model, **options).eval()
        parts = [mixing] if len(mixings) > 1 else []
        tag = ", ".join(parts + ([f"D={dim}"] if len(dims) > 1 else []))
        tag = f"{tag}: " if tag else ""
        calibration = torch.randn(8, *model.spec.input_shape)
        models[f"{tag}whole"] = model
        for item in args.shapes:
            name, models[tag + name] = cut_model(model, item, calibration)
    rows = {(name, form): m for name, m in models.items() for form in args.forms}
    label = {key: key[0] if len(args.forms) == 1 else f"{key[0]}, {key[1]}" for key in rows}
    inputs = {label[key]: torch.randn(args.batch, *m.spec.input_shape) for key, m in rows.items()}
    runners = {label[key]: shape_runner(m, key[1], inputs[label[key]][:8]) for key, m in rows.items()}
    rates = time_interleaved(runners, inputs, rounds=args.rounds)
    base = rates[label[next(iter(models)), args.forms[0]]]
    print(
        f"\n{args.model} {kwargs or ''}, OpenVINO {' / '.join(args.forms)} (int8: INT8_RECIPE), batch {args.batch}, "
        f"{torch.get_num_threads()} threads, {args.rounds} interleaved rounds, against the (first) whole model's "
        f"{args.forms[0]}\n| shape | params | GFLOPs | images/s (median) | vs whole |\n|---|---|---|---|---|"
    )
    for key, m in rows.items():
        rate = rates[label[key]]
        print(
            f"| {label[key]} | {count_params(m):,} | {count_macs(m, (1, *m.spec.input_shape)) / 1e9:.3f} | "
            f"{rate:.0f} | {rate / base:.2f}x |"
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_split_arguments(ap)
    ap.add_argument("--speed", action="store_true")
    ap.add_argument("--model", default="resmlp_s12")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--keep", type=float, default=0.5, help="--speed: the pruned model's share of hidden units")
    ap.add_argument("--shapes", nargs="+", default=None, metavar="DEPTH:KEEP[@SIZE]", help="int8 speed of cut models")
    width_help = "--shapes: the model's width; several: the whole model and its cuts at each width, in the same rounds"
    ap.add_argument("--embed-dim", type=int, nargs="+", default=None, help=width_help)
    ap.add_argument(
        "--forms", nargs="+", default=["int8"], choices=list(SHAPE_FORMS), help="--shapes: the forms timed (int8)"
    )
    mixing_help = "--shapes: the whole model and its cuts built with each token mixing, timed in the same rounds"
    ap.add_argument("--token-mixing", nargs="+", default=None, help=mixing_help)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    if args.checkpoint and args.data and args.calibration < 1:
        ap.error("--calibration: int8 needs at least 1 calibration image")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.checkpoint and args.data:
        agreement(args)
    if args.speed:
        speed(args)
    if args.shapes:
        shapes(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
