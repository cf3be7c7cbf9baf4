"""int8 ablation for docs/results.md ("Inference"): what each part of resmlp's int8 recipe buys.

1. Agreement (--checkpoint, --data): top-1 agreement with fp32 and top-1 of the int8 forms of a trained model on
   its validation split, calibration images drawn from the training part: OpenVINO + NNCF with NNCF's presets
   alone, its TRANSFORMER model type, then the parts of resmlp's recipe (`deploy.openvino.Int8Recipe`) added one
   at a time; faster forms of INT8_RECIPE (its float parts in bf16, the token mixing quantised too, any other
   --forms); ONNX Runtime's dynamic int8 of the smoothed model.
2. Speed (--speed): ResMLP-S12 at --batch, fused fp32 eager vs OpenVINO int8 bare vs resmlp's recipe (the cost of
   the parts kept in float) vs ONNX Runtime int8, and OpenVINO bf16 / int8 of S12 with --keep of every channel MLP's
   hidden units (structured pruning, `resmlp compress`), interleaved rounds, medians.
3. Shapes (--shapes DEPTH:KEEP[@SIZE] ...): OpenVINO int8 images/s of --model cut to DEPTH blocks with KEEP of
   every channel MLP's hidden units (what `resmlp compress --depth --keep` makes; speed does not depend on the
   weights), at SIZE px when given, against the whole model's int8, interleaved; --embed-dim sets the width (the
   `cifar10_cpu` student: 128; several widths are timed side by side, like several --token-mixing). --forms adds
   other forms of each shape (`parse_form`): the same int8 IR with the parts NNCF leaves in float run in bf16, A x
   quantised as well, the first block's channel MLP (or only its fc2) quantised as well, the stem and first block
   compiled apart in fp32 (or alone in bf16), a fixed batch axis, plain OpenVINO bf16; --eager adds the whole
   model in fp32 eager PyTorch as the baseline of every ratio.

    python benchmarks/bench_int8.py --checkpoint runs/cifar10_cpu --data cifar10/train --speed
    python benchmarks/bench_int8.py --model resmlp_tiny32 --embed-dim 128 --shapes 8:0.4 6:0.5 5:0.6 4:1 8:1@24
    python benchmarks/bench_int8.py --model resmlp_tiny32 --embed-dim 128 --shapes 7:0.4@28 --forms int8 int8+bf16 bf16
    python benchmarks/bench_int8.py --model resmlp_tiny32 --embed-dim 128 --shapes 8:0.875@24 \
        --token-mixing linear conv3x3_depthwise --forms int8 bf16
    python benchmarks/bench_int8.py --model resmlp_tiny32 --embed-dim 128 112 96 80 64 --shapes 8:1 \
        --token-mixing conv3x3_depthwise
    python benchmarks/bench_int8.py --model resmlp_s12 --shapes 12:1 --eager \
        --forms int8 int8@static int8+fc2 int8+bf16 int8+bf16@static int8+bf16+mlp0@static int8+bf16+split \
        int8+front
    python benchmarks/bench_int8.py --checkpoint runs/cifar10_cpu --data cifar10/train \
        --forms int8+fc2 int8+bf16+keep int8+bf16+split int8+front
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import re
import sys
from pathlib import Path

import torch
from common import add_split_arguments, split_images_of

from resmlp.deploy import build_runtime, optimize
from resmlp.deploy.benchmark import time_interleaved
from resmlp.deploy.compress import at_size, drop_blocks, prune_channel_mlps
from resmlp.deploy.openvino import (
    INT8_RECIPE,
    Int8Recipe,
    OpenVinoModel,
    openvino_model,
    openvino_module,
    quantize_openvino,
    to_openvino,
)
from resmlp.loading import load_model
from resmlp.models import count_macs, count_params, create_model

BARE = Int8Recipe(smooth=False, keep_float=(), elementwise=True)  # NNCF's defaults


@dataclasses.dataclass(frozen=True)
class Form:
    """How a --forms name compiles a model for OpenVINO (`parse_form` reads the names)."""

    recipe: Int8Recipe | None  # None: no int8
    precision: str = "fp32"  # OpenVINO's inference precision for what is not int8
    keep_rt: bool = False  # the stem and first block marked `disable_fp16_compression_0` in rt_info
    front: str | None = None  # cut the IR after the first block, compile stem and first block apart at this precision
    static: bool = False  # the batch axis fixed at --batch before compiling (the runtime keeps it dynamic)


# --forms: a base and options, e.g. int8+bf16@static. Base: int8 (INT8_RECIPE) or bf16 (plain OpenVINO bf16).
FORM_OPTIONS = {  # what each option does; its words before " (" name it in the agreement table
    "bf16": "the parts NNCF leaves in float run in bf16 (the same int8 IR)",
    "A": "the token mixing quantised too (A x or its convolution)",
    "mlp0": "the first block's channel MLP quantised too (INT8_RECIPE until it kept that MLP in float)",
    "fc2": "only the first block's fc1 kept in float (its fc2 quantised too)",
    "keep": "the stem and first block asked to stay fp32 through rt_info (with +bf16; OpenVINO 2026.4 ignores it)",
    "split": "the stem and first block compiled apart in fp32 (with +bf16: two models, only the rest in bf16)",
    "front": "only the stem and first block in bf16 (two models, the rest compiled at fp32)",
}
KEPT_BY_RT = re.compile(r"__module\.(stem|blocks\.0)[./].*")  # what +keep marks
FIRST_BLOCK, SECOND_BLOCK = (re.compile(rf"__module\.blocks\.{i}[./].*") for i in (0, 1))  # where +split cuts
FORM_HELP = f"BASE[+OPTION...][@static], BASE int8 or bf16, OPTION {' / '.join(FORM_OPTIONS)}"


def parse_form(name: str) -> Form:
    """--forms NAME -> Form; ValueError naming what is wrong."""
    body, at, tail = name.partition("@")
    if at and tail != "static":
        raise ValueError(f"{name}: after @ only 'static' (a fixed batch axis), not {tail!r}")
    base, *options = body.split("+")
    if base == "bf16" and not options:
        return Form(None, "bf16", static=bool(at))
    if base != "int8":
        raise ValueError(f"{name}: a form starts with int8 or bf16 (bf16 takes no options), not {base!r}")
    unknown = [o for o in options if o not in FORM_OPTIONS]
    if unknown:
        raise ValueError(f"{name}: unknown option {unknown[0]!r}; options: {', '.join(FORM_OPTIONS)}")
    kept = [p for p in INT8_RECIPE.keep_float if not (p == "token_mixing" and "A" in options)]
    if "mlp0" in options or "fc2" in options:
        kept.remove("first_mlp")
        kept += ["first_fc1"] if "fc2" in options and "mlp0" not in options else []
    for option in ("keep", "split"):
        if option in options and "bf16" not in options:
            raise ValueError(f"{name}: +{option} keeps layers in fp32 beside bf16 ones: add +bf16")
    if sum(o in options for o in ("keep", "split", "front")) > 1 or {"front", "bf16"} <= set(options):
        raise ValueError(f"{name}: +keep, +split, +front and +bf16 set their own precisions: choose one")
    recipe = dataclasses.replace(INT8_RECIPE, keep_float=tuple(kept))
    precision = "bf16" if "bf16" in options else "fp32"
    front = "fp32" if "split" in options else "bf16" if "front" in options else None
    return Form(recipe, precision, keep_rt="keep" in options, front=front, static=bool(at))


def form_text(name: str) -> str:
    """What a form's options do, in words."""
    options = name.partition("@")[0].split("+")[1:]
    what = ", ".join(FORM_OPTIONS[o].split(" (")[0] for o in options) or "as it is"
    return what + (", batch axis fixed" if name.endswith("@static") else "")


def form_argument(name: str) -> str:
    try:
        parse_form(name)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return name


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
    for form in dict.fromkeys(["int8+bf16", "int8+A", *args.forms]):
        if form == "int8" or form.endswith("@static"):  # INT8_RECIPE has its row; a fixed batch gives the same math
            continue
        spec, runner = parse_form(form), shape_runner(model, form, calibration)
        note = f"; stem and first block nodes in bf16: {kept_in_bf16(runner)}" if spec.keep_rt else ""
        what = f"INT8_RECIPE, {form_text(form)}" if spec.recipe else "bf16, no int8"
        row(f"OpenVINO: {what} (--forms {form}{note})", runner)
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


def shape_runner(
    model: torch.nn.Module, form: str, calibration: torch.Tensor, batch: int | None = None
) -> torch.nn.Module:
    """`model` compiled by OpenVINO in the --forms `form` (@static: at `batch` images)."""
    spec = parse_form(form)
    ov_model = to_openvino(model) if spec.recipe is None else quantize_openvino(model, calibration, spec.recipe)
    if spec.keep_rt:
        for op in ov_model.get_ops():
            if KEPT_BY_RT.match(op.get_friendly_name()):
                op.get_rt_info()["disable_fp16_compression_0"] = ""
    parts = split_after_first_block(ov_model) if spec.front else [ov_model]
    if spec.static:  # each part's input fixed in turn; the rest's is the front's (now static) output
        parts[0].reshape([batch or len(calibration), *parts[0].inputs[0].get_partial_shape()[1:]])
        if spec.front:
            parts[1].reshape(parts[0].outputs[0].get_partial_shape())
    if spec.front:
        front, rest = OpenVinoModel(parts[0], precision=spec.front), OpenVinoModel(parts[1], precision=spec.precision)
        return torch.nn.Sequential(front, rest)
    return OpenVinoModel(ov_model, precision=spec.precision)


def split_after_first_block(ov_model) -> list:
    """`ov_model` as two openvino.Models: images -> the first block's output tokens -> logits."""
    ov, ops = openvino_module(), importlib.import_module("openvino.opset13")
    front, rest = ov_model.clone(), ov_model.clone()

    def first_block_output(m):  # the one output of a first-block node that second-block nodes read
        (out,) = [
            o
            for op in m.get_ops()
            if FIRST_BLOCK.match(op.get_friendly_name())
            for o in op.outputs()
            if any(SECOND_BLOCK.match(t.get_node().get_friendly_name()) for t in o.get_target_inputs())
        ]
        return out

    head = ov.Model([ops.result(first_block_output(front))], front.get_parameters(), "stem_and_first_block")
    out = first_block_output(rest)
    tokens = ops.parameter(out.get_partial_shape(), out.get_element_type(), name="tokens")
    for reader in list(out.get_target_inputs()):
        reader.replace_source_output(tokens.output(0))
    return [head, ov.Model(rest.get_results(), [tokens], "other_blocks_and_head")]


def kept_in_bf16(runner: OpenVinoModel) -> str:
    """How many compiled nodes from the stem and first block (those +keep marks) run in bf16."""
    info = [op.get_rt_info() for op in runner.compiled.get_runtime_model().get_ops()]
    precisions = [
        rt["runtimePrecision"].astype(str)
        for rt in info
        if any(KEPT_BY_RT.match(n) for n in rt["originalLayersNames"].astype(str).split(","))
    ]
    return f"{sum(p == 'bf16' for p in precisions)} of {len(precisions)}"


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
    runners = {label[key]: shape_runner(m, key[1], inputs[label[key]][:8], args.batch) for key, m in rows.items()}
    eager = "whole, fp32 eager (timm's computation)"
    first = next(iter(models))
    if args.eager:  # the unfused PyTorch model in the same rounds, the baseline of every ratio
        runners[eager], inputs[eager] = torch.inference_mode()(models[first]), inputs[label[first, args.forms[0]]]
    rates = time_interleaved(runners, inputs, rounds=args.rounds)
    base = rates[eager if args.eager else label[first, args.forms[0]]]
    against = eager if args.eager else f"the (first) whole model's {args.forms[0]}"
    print(
        f"\n{args.model} {kwargs or ''}, OpenVINO {' / '.join(args.forms)} (int8: INT8_RECIPE), batch {args.batch}, "
        f"{torch.get_num_threads()} threads, {args.rounds} interleaved rounds, against {against}"
        "\n| shape | params | GFLOPs | images/s (median) | vs baseline |\n|---|---|---|---|---|"
    )
    table = [(label[key], m) for key, m in rows.items()] + ([(eager, models[first])] if args.eager else [])
    for name, m in table:
        rate = rates[name]
        print(
            f"| {name} | {count_params(m):,} | {count_macs(m, (1, *m.spec.input_shape)) / 1e9:.3f} | "
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
        "--forms",
        nargs="+",
        default=["int8"],
        type=form_argument,
        help=f"--shapes: the forms timed (int8); with --checkpoint, more agreement rows. {FORM_HELP}",
    )
    mixing_help = "--shapes: the whole model and its cuts built with each token mixing, timed in the same rounds"
    ap.add_argument("--token-mixing", nargs="+", default=None, help=mixing_help)
    eager_help = "--shapes: time the whole model in plain fp32 eager PyTorch too, and give every ratio against it"
    ap.add_argument("--eager", action="store_true", help=eager_help)
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
