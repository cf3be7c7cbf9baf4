"""`resmlp predict`, `resmlp export`, `resmlp push`, `resmlp benchmark`: run, ship and time a model.

WEIGHTS is anything `resmlp.loading.load_model` accepts: our checkpoint or run directory, a packaged model
directory, or a bare deit/timm state dict (architecture inferred from the shapes, or `--model`).
"""

from __future__ import annotations

import argparse
import json
import sys
import typing
from pathlib import Path

import torch

from ..config import TTA
from ..deploy.compress import VIEWS


def _csv(kind):
    def parse(text: str) -> list:
        try:
            return [kind(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {kind.__name__} values, got {text!r}") from None

    return parse


def img_size_arg(text: str) -> int | tuple[int, int]:
    """--img-size: "48" (square) or "24x32" (height x width)."""
    try:
        parts = [int(v) for v in text.lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) not in (1, 2) or min(parts, default=0) < 1:
        raise argparse.ArgumentTypeError(f"expected a size like 48 or 24x32 (height x width), got {text!r}")
    return parts[0] if len(parts) == 1 else (parts[0], parts[1])


def add_set_flag(p: argparse.ArgumentParser, help: str) -> None:
    """--set KEY=VALUE ... (repeatable): config overrides, collected into `overrides`."""
    p.add_argument("--set", dest="overrides", action="extend", nargs="+", default=[], metavar="KEY=VALUE", help=help)


def add_size_flags(p: argparse.ArgumentParser) -> None:
    """--img-size / --resample: run a patch model at another input size (its token mixing resampled)."""
    from ..models.resample import DEFAULT_METHOD, METHODS

    p.add_argument(
        "--img-size",
        type=img_size_arg,
        default=None,
        metavar="SIZE",
        help="run at this input size, 48 or HxW (24x32): the token mixing is resampled to the new "
        "patch grid (default: the size the weights were made for)",
    )
    p.add_argument(
        "--resample",
        default=DEFAULT_METHOD,
        choices=METHODS,
        help=f"how --img-size resamples the token mixing (default: {DEFAULT_METHOD})",
    )


def add_runtime_flags(p: argparse.ArgumentParser, precision: str = "auto") -> None:
    """--precision, --runtime and --tta (predict and eval)."""
    p.add_argument(
        "--precision",
        default=precision,
        choices=("auto", "fp32", "bf16", "int8"),
        help=f"auto = bf16 where the hardware multiplies bf16 natively, else fp32 (default: {precision})",
    )
    p.add_argument(
        "--runtime",
        default=None,
        choices=("eager", "compile", "onnx", "openvino"),
        help="eager PyTorch, torch.compile (slow first batch), ONNX Runtime, or OpenVINO (resmlp[openvino]) "
        "(default: eager; openvino for int8, which runs on openvino or onnx only)",
    )
    p.add_argument(
        "--tta",
        default="none",
        choices=typing.get_args(TTA),
        help="test-time augmentation: mean logits over the image and its mirror (and 1-px shifts)",
    )


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="classify image files, folders or glob patterns")
    p.add_argument("weights", help="checkpoint, run directory, packaged directory or state dict")
    p.add_argument("inputs", nargs="+", help="image files, folders (recursed) or quoted glob patterns")
    p.add_argument("--topk", type=int, default=5, help="classes shown per image (default: 5)")
    p.add_argument("--format", default="table", choices=("table", "json", "csv"))
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=2, help="threads decoding images (default: 2)")
    p.add_argument("--model", default=None, help="variant name for a bare state dict (default: inferred)")
    p.add_argument("--out", default=None, help="write the output here instead of stdout")
    p.add_argument(
        "--max-image-pixels",
        type=int,
        default=100_000_000,
        metavar="N",
        help="refuse images above N pixels before decoding them (decompression bombs); 0 = no limit "
        "(default: 100,000,000)",
    )
    add_runtime_flags(p)
    add_size_flags(p)
    p.add_argument(
        "--calibration",
        default=None,
        metavar="FOLDER|GLOB",
        help="int8 only: typical images (up to 256 used) to fit the int8 smoothing on (default: the inputs themselves)",
    )
    p.set_defaults(func=run_predict)

    p = sub.add_parser("export", help="export to ONNX, TorchScript, OpenVINO IR, or a packaged safetensors directory")
    p.add_argument("weights", help="checkpoint, run directory, packaged directory or state dict")
    p.add_argument(
        "--format",
        required=True,
        choices=("onnx", "torchscript", "safetensors", "openvino"),
        help="safetensors writes a directory (config.json + model.safetensors) for from_pretrained; openvino a "
        "directory (model.xml + model.bin + config.json)",
    )
    p.add_argument(
        "--out",
        required=True,
        help="output file (onnx/torchscript) or directory (safetensors/openvino; a translator's onnx)",
    )
    p.add_argument(
        "--precision",
        default="fp32",
        choices=("fp32", "int8"),
        help="openvino only: int8 writes the IR quantised by NNCF on --calibration images (default: fp32)",
    )
    p.add_argument(
        "--calibration",
        default=None,
        metavar="FOLDER|GLOB",
        help="int8 only: typical training images (up to 256 used) to calibrate the quantisation on",
    )
    p.add_argument("--model", default=None, help="variant name for a bare state dict (default: inferred)")
    p.add_argument(
        "--tolerance",
        type=float,
        default=1e-4,
        help="largest accepted max|exported - eager| as a fraction of max(1, max|logit|) (default 1e-4)",
    )
    add_size_flags(p)
    p.set_defaults(func=run_export)

    p = sub.add_parser("push", help="upload a model to the Hugging Face Hub with a model card (needs resmlp[hub])")
    p.add_argument("weights", help="checkpoint, run directory, packaged directory or state dict")
    p.add_argument("repo_id", help="Hub repository, e.g. user/resmlp-cifar10 (created if missing)")
    p.add_argument(
        "--run-dir",
        default=None,
        help="run whose config.yaml/summary.json/eval.json fill the model card "
        "(default: the run the weights come from)",
    )
    p.add_argument("--private", action="store_true", help="create the repository private")
    p.add_argument("--out", default=None, help="only write the directory that would be uploaded here (no network)")
    p.add_argument("--model", default=None, help="variant name for a bare state dict (default: inferred)")
    p.set_defaults(func=run_push)

    p = sub.add_parser(
        "compress",
        help="prune whole hidden units of the channel MLPs, recover by distillation, quantise to int8 (OpenVINO)",
        description="Structured pruning + a short distillation from the uncompressed model + NNCF int8; writes "
        "OUT/model (packaged), OUT/openvino-int8 (IR), OUT/recovery (the run) and OUT/report.json.",
    )
    p.add_argument("run", help="run directory or one of its checkpoints (its recipe and split drive the recovery)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--data", default=None, help="training image folder root/<class>/* (default: the run's)")
    p.add_argument("--val-data", default=None, help="validation image folder (default: the run's split)")
    p.add_argument("--keep", type=float, default=0.5, help="fraction of each MLP's hidden units kept (default 0.5)")
    p.add_argument("--depth", type=int, default=None, help="blocks kept, those the predictions need most (default all)")
    p.add_argument(
        "--width",
        type=float,
        default=1.0,
        help="fraction of the residual stream's D channels kept, those the predictions need most (default 1)",
    )
    p.add_argument(
        "--no-refit",
        dest="refit",
        action="store_false",
        help="skip the least-squares refit of each channel MLP (B, then C) to the unpruned model before the recovery",
    )
    p.add_argument(
        "--img-size",
        type=int,
        default=None,
        help="the compressed model's input size: fewer patches (default: same)",
    )
    p.add_argument(
        "--view",
        choices=VIEWS,
        default="resize",
        help="with --img-size: shrink the whole image (resize, default) or take its central window at full "
        "scale (crop; the recovery then trains on random windows, its teacher on the full images)",
    )
    p.add_argument("--minutes", type=float, default=10.0, help="the recovery's time budget (default 10)")
    p.add_argument("--lr-scale", type=float, default=0.25, help="recovery lr = the recipe's lr x this (default 0.25)")
    p.add_argument("--calibration", type=int, default=256, help="training images to score units and calibrate int8")
    p.add_argument(
        "--teacher-runtime",
        choices=("openvino", "eager"),
        default="openvino",
        help="what runs the original's forward pass as the recovery's teacher (default openvino: faster, more "
        "recovery epochs in the minutes)",
    )
    add_set_flag(p, "override keys of the recovery run's config after compress's own, e.g. --set data.cutmix_alpha=0")
    p.set_defaults(func=run_compress)

    p = sub.add_parser("benchmark", help="images/s, latency, memory and MFU of precision x runtime variants")
    p.add_argument("--model", default=None, help="registered variant (default: resmlp_s12, or what --weights holds)")
    p.add_argument("--weights", default=None, help="load these weights (speed does not depend on them)")
    p.add_argument("--img-size", type=int, default=None, help="override the input size")
    p.add_argument("--batch", type=_csv(int), default=[1, 16, 64], help="batch sizes (default: 1,16,64)")
    p.add_argument(
        "--precision", type=_csv(str), default=["fp32", "bf16", "int8"], help="precisions (default: fp32,bf16,int8)"
    )
    p.add_argument(
        "--runtime",
        type=_csv(str),
        default=["eager", "compile", "onnx", "openvino"],
        help="runtimes (default: eager,compile,onnx,openvino; one whose package is missing is reported as skipped)",
    )
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default: 5)")
    p.add_argument("--seconds", type=float, default=1.0, help="target time per variant per round (default: 1)")
    p.add_argument("--threads", type=int, default=None, help="torch/ONNX Runtime threads (default: torch's)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    p.add_argument("--json", default=None, help="also save the full report (every round) as JSON here")
    p.set_defaults(func=run_benchmark)


def run_predict(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..deploy import build_runtime
    from ..deploy.optimize import default_runtime
    from ..deploy.predict import calibration_batch, expand_inputs, format_predictions, predict_files
    from ..loading import load_model
    from ..models.tta import with_tta

    if args.topk < 1 or args.batch_size < 1:
        raise ValueError("--topk and --batch-size must be at least 1")
    paths, problems = expand_inputs(args.inputs)
    for problem in problems:
        print(f"warning: {problem}", file=sys.stderr)
    if not paths:
        raise ValueError("no image files to classify")
    loaded = load_model(args.weights, model_name=args.model, img_size=args.img_size, resample=args.resample)
    preprocess, classes = loaded.spec.preprocess, loaded.spec.class_names()
    args.runtime = args.runtime or default_runtime(args.precision)
    calibration = None
    if args.precision == "int8":
        calibration = calibration_batch(args.calibration, preprocess, default=paths, workers=args.workers)
    runner = with_tta(
        build_runtime(loaded.model, precision=args.precision, runtime=args.runtime, calibration=calibration), args.tta
    )
    with tqdm(total=len(paths), desc="predict", unit="img", disable=None, file=sys.stderr) as bar:
        predictions = list(
            predict_files(
                runner,
                paths,
                preprocess=preprocess,
                classes=classes,
                topk=args.topk,
                batch_size=args.batch_size,
                workers=args.workers,
                pad_batches=args.runtime == "compile",
                progress=bar.update,
                max_pixels=args.max_image_pixels or None,
            )
        )
    failed = [p for p in predictions if p.error is not None]
    for p in failed:
        print(f"error: {p.path}: {p.error}", file=sys.stderr)
    text = format_predictions(predictions, args.format)
    if args.out:
        Path(args.out).write_text(text + "\n")
    else:
        print(text)
    if failed:
        print(f"{len(failed)} of {len(predictions)} files could not be read", file=sys.stderr)
    return 1 if failed else 0


def run_export(args: argparse.Namespace) -> int:
    from ..deploy import export_model
    from ..deploy.predict import calibration_batch
    from ..deploy.translate import is_text_model
    from ..loading import load_model

    if is_text_model(args.weights):
        return run_export_translator(args)
    loaded = load_model(args.weights, model_name=args.model, img_size=args.img_size, resample=args.resample)
    if args.precision == "int8" and args.format != "openvino":
        raise ValueError(f"--precision int8 writes an OpenVINO IR (--format openvino), not {args.format}")
    calibration = None
    if args.precision == "int8":
        if not args.calibration:
            raise ValueError("--precision int8 needs --calibration FOLDER|GLOB: typical training images")
        calibration = calibration_batch(args.calibration, loaded.spec.preprocess)
    out, diff = export_model(
        loaded.model, args.format, args.out, tolerance=args.tolerance, precision=args.precision, calibration=calibration
    )
    check = (
        f"; max |{args.format} - eager| = {diff:.2e} (limit {args.tolerance:g} x logit scale)"
        if diff is not None
        else ""
    )
    print(f"wrote {out} ({loaded.spec.name}, {args.format}{check})")
    return 0


def run_export_translator(args: argparse.Namespace) -> int:
    from ..deploy.text_export import export_translator_onnx
    from ..deploy.translate import load_text_model

    if args.format != "onnx":
        raise ValueError(f"a translator exports to --format onnx (encoder + decoder step), not {args.format}")
    tm = load_text_model(args.weights)
    diff = export_translator_onnx(tm, args.out, tolerance=args.tolerance)
    print(
        f"wrote {args.out}: encoder.onnx, decoder.onnx, tokenizer.model, config.json ({tm.model.spec.name}; "
        f"max |onnx - eager| = {diff:.2e}, limit {args.tolerance:g} x logit scale)"
    )
    return 0


def run_push(args: argparse.Namespace) -> int:
    from ..deploy import package_for_hub, push_to_hub
    from ..loading import load_model

    loaded = load_model(args.weights, model_name=args.model)
    run_dir = args.run_dir or loaded.run_dir
    if args.out:
        out = package_for_hub(loaded.model, args.out, run_dir=run_dir, repo_id=args.repo_id)
        print(f"wrote {out} ({', '.join(sorted(p.name for p in out.iterdir()))}); not uploaded")
    else:
        url = push_to_hub(loaded.model, args.repo_id, run_dir=run_dir, private=args.private)
        print(f"pushed {loaded.spec.name} to {args.repo_id}: {url}")
    return 0


def run_compress(args: argparse.Namespace) -> int:
    from ..train.compress import CompressSettings, compress, format_report

    fractions = 0 < args.keep <= 1 and 0 < args.width <= 1
    if not fractions or args.minutes <= 0 or args.lr_scale <= 0 or args.calibration < 1:
        raise ValueError(
            f"--keep {args.keep:g} / --width {args.width:g}: --keep and --width must lie in (0, 1], --minutes and "
            "--lr-scale above 0, --calibration at least 1"
        )
    if args.depth is not None and args.depth < 1:
        raise ValueError(f"--depth: expected at least 1 block, got {args.depth}")
    if args.img_size is not None and args.img_size < 1:
        raise ValueError(f"--img-size: expected a size in pixels >= 1, got {args.img_size}")
    settings = CompressSettings(
        keep=args.keep,
        width=args.width,
        refit=args.refit,
        depth=args.depth,
        img_size=args.img_size,
        view=args.view,
        minutes=args.minutes,
        lr_scale=args.lr_scale,
        calibration=args.calibration,
        teacher_runtime=args.teacher_runtime,
        recovery_set=tuple(args.overrides),
    )
    report = compress(args.run, args.out, settings=settings, data=args.data, val_data=args.val_data)
    print(format_report(report))
    print(f"wrote {args.out}: model/, openvino-int8/, recovery/, report.json")
    return 0


def run_benchmark(args: argparse.Namespace) -> int:
    from ..deploy.benchmark import format_report
    from ..deploy.benchmark import run_benchmark as bench
    from ..loading import load_model
    from ..models import create_model

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.weights:
        model = load_model(args.weights, model_name=args.model).model
    else:
        torch.manual_seed(0)
        model = create_model(args.model or "resmlp_s12", **({"img_size": args.img_size} if args.img_size else {}))
    report = bench(
        model,
        batches=args.batch,
        precisions=args.precision,
        runtimes=args.runtime,
        rounds=args.rounds,
        seconds=args.seconds,
        device=args.device,
    )
    print(format_report(report))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        print(f"saved {args.json}")
    return 0
