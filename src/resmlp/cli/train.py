"""`resmlp train` and `resmlp eval`."""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path

from ..config import Override, TrainConfig, config_to_dict, load_config
from ..data.datasets import typical_image_size
from ..models.layers import to_pair
from ..train.engine import NonFiniteLossError
from .deploy import add_runtime_flags, add_set_flag, add_size_flags


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train with a recipe (default: the digits demo)",
        description="Train a model; writes a run directory (config.yaml, metrics.jsonl, "
        "checkpoints/, summary.json). Multi-GPU: torchrun --nproc_per_node=K -m resmlp train ...",
    )
    p.add_argument(
        "--recipe",
        default=None,
        help="bundled recipe name (digits, cifar10_cpu, photos_scratch, photos_finetune, ...) or a YAML file; "
        "default: chosen by --data's images (digits without --data)",
    )
    p.add_argument("--model", default=None, help="registered variant (sets model.name)")
    p.add_argument("--data", default=None, help="image folder root/<class>/*, or a CIFAR python .tar.gz archive")
    p.add_argument("--val-data", default=None, help="separate validation image folder")
    p.add_argument("--val-split", type=float, default=None, help="fraction of train held out for validation")
    p.add_argument("--epochs", type=int, default=None, help="sets optim.epochs")
    add_set_flag(p, "override config keys, e.g. --set optim.lr=1e-3 data.batch_size=64")
    p.add_argument("--out", default=None, help="run directory (default runs/<model>-<data>-<time>)")
    p.add_argument(
        "--resume",
        default=None,
        metavar="RUN_DIR",
        help="continue a run from its newest checkpoint (mid-epoch after a stop signal)",
    )
    p.add_argument(
        "--finetune",
        default=None,
        metavar="WEIGHTS",
        help="start from weights (sets model.finetune): published ones by name (resmlp_s12.fb_distilled_in1k), a "
        "run directory, checkpoint or weights file (deit/timm/ours); the head is re-initialised if the classes differ",
    )
    p.set_defaults(func=run_train)

    p = sub.add_parser(
        "eval",
        help="evaluate a checkpoint on an image folder (eval.json + confusion PNG), or a translator on --src/--ref "
        "(BLEU and chrF with sacreBLEU)",
    )
    p.add_argument("--checkpoint", required=True, help="checkpoint file or run directory")
    p.add_argument("--data", default=None, help="image folder root/<class>/* with the checkpoint's classes")
    p.add_argument("--src", default=None, help="translator: source sentences, one a line")
    p.add_argument("--ref", default=None, help="translator: reference translations, aligned with --src")
    p.add_argument("--beam", type=int, default=None, help="translator: beam size (default: the run's text.beam)")
    p.add_argument("--out", default=None, help="where eval.json goes (default: next to the run / checkpoint)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--device", default="auto")
    p.add_argument("--ema", action="store_true", help="evaluate the EMA weights")
    add_runtime_flags(p, precision="fp32")
    p.add_argument(
        "--calibration",
        default=None,
        metavar="FOLDER|GLOB",
        help="int8 only: training images (up to 256 used) to calibrate on; never the evaluated ones",
    )
    add_size_flags(p)
    p.set_defaults(func=run_eval)


def data_overrides(data: str | None, val_data: str | None, val_split: float | None) -> list[Override]:
    """CLI data flags as typed config overrides (the path reaches the config as typed: spaces, '#', ':',
    quotes and digit-only names stay what they are): an archive picks cifar10/cifar100, else a folder."""
    out: list[Override] = []
    if data is not None:
        name = Path(data).name.lower()
        source = "cifar100" if "cifar-100" in name else "cifar10" if name.endswith((".tar.gz", ".tgz")) else "folder"
        out += [("data.source", source), ("data.path", data)]
    if val_data is not None:
        out.append(("data.val_path", val_data))
    if val_split is not None:
        out.append(("data.val_split", val_split))
    return out


# The shorter image side (px) from which a folder holds photos (photos_scratch), and below which the digits
# demo's 8 px model fits; in between, CIFAR-sized images (cifar10_cpu).
PHOTO_SIDE = 48
SMALL_SIDE = 24
RECIPE_FOR_SIZE = {
    "photos_scratch": "a ResMLP from scratch at 64 px, distilled from a conv net it trains first, in 10 minutes; "
    "--recipe photos_finetune starts from published ImageNet weights instead",
    "cifar10_cpu": "32 px, an hour with the conv-net teacher it trains first",
    "digits": "8 px, the demo's",
}


def choose_recipe(data: str | None) -> tuple[str, str | None]:
    """The recipe `resmlp train` takes without --recipe, and the line that says why (None: the digits demo
    without --data, or a folder the loader will refuse with its own error)."""
    if data is None:
        return "digits", None
    if data_overrides(data, None, None)[0][1] != "folder":
        return "cifar10_cpu", f"note: no --recipe given; {data} is a CIFAR archive, so recipe cifar10_cpu"
    try:
        size = typical_image_size(data)
    except ValueError:
        return "digits", None
    if size is None:
        return "digits", None
    side = min(size)
    recipe = "photos_scratch" if side >= PHOTO_SIDE else "cifar10_cpu" if side >= SMALL_SIDE else "digits"
    return recipe, (
        f"note: no --recipe given; the images in {data} are about {size[0]}x{size[1]} px, so recipe {recipe} "
        f"({RECIPE_FOR_SIZE[recipe]})"
    )


def resolution_warning(cfg: TrainConfig, recipe: str) -> str | None:
    """A line when the recipe's model sees a folder's photos below PHOTO_SIDE px and shrunk 4x or more (the
    digits recipe's 8 px, or CIFAR's 32 px, for 500 px photos)."""
    if cfg.data.source != "folder" or cfg.data.path is None:
        return None
    try:
        size = typical_image_size(cfg.data.path)
    except ValueError:
        return None  # the loader names the folder's problem
    from ..train.wiring import model_arguments  # noqa: PLC0415 - keep `resmlp models` fast

    height, width = to_pair(model_arguments(cfg.model)["img_size"])
    if size is None or min(height, width) >= PHOTO_SIDE or min(size) < 4 * min(height, width):
        return None
    return (
        f"warning: recipe {recipe} trains {cfg.model.name} at {width}x{height} px, {min(size) // min(height, width)}x "
        f"below the images in {cfg.data.path} (about {size[0]}x{size[1]} px); for photos use --recipe "
        "photos_scratch or photos_finetune, or set model.img_size"
    )


def run_train(args: argparse.Namespace) -> int:
    from ..train.checkpointing import config_of_run  # noqa: PLC0415 - keep `resmlp models` fast
    from ..train.run import train  # noqa: PLC0415

    overrides = list(data_overrides(args.data, args.val_data, args.val_split))
    if args.model:
        overrides.append(("model.name", args.model))
    if args.epochs is not None:
        overrides.append(("optim.epochs", args.epochs))
    if args.finetune is not None:
        overrides.append(("model.finetune", args.finetune))
    overrides += args.overrides
    if args.resume:
        cfg = load_config(args.recipe, overrides, base=config_to_dict(config_of_run(args.resume)))
    else:
        recipe, why = (args.recipe, None) if args.recipe else choose_recipe(args.data)
        cfg = load_config(recipe, overrides)
        line = why or (None if cfg.text.task else resolution_warning(cfg, recipe))
        if line:
            print(line, file=sys.stderr, flush=True)
    try:
        summary = train(cfg, out=args.out, resume=args.resume)
    except NonFiniteLossError as e:
        raise ValueError(str(e)) from None
    from ..train import distributed as dist  # noqa: PLC0415

    main_process = dist.is_main()
    dist.shutdown()
    if summary.get("stopped_by"):  # preempted: a checkpoint is written; the exit status says which signal
        if "message" in summary:
            print(summary["message"], file=sys.stderr, flush=True)
        return 128 + int(getattr(signal, summary["stopped_by"]))
    if main_process and cfg.text.task:
        keys = ("best_val_bleu", "final_val_bleu", "best_val_loss", "epochs", "tokens_per_s", "wall_time_s")
        print("summary: " + json.dumps({k: summary[k] for k in keys}))
        print(f"run directory: {summary['run_dir']}")
    elif main_process:
        print(
            "summary: "
            + json.dumps(
                {
                    k: summary[k]
                    for k in ("best_val_top1", "final_val_top1", "epochs", "train_images_per_s", "wall_time_s")
                }
            )
        )
        print(f"run directory: {summary['run_dir']}")
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from ..deploy.optimize import default_runtime  # noqa: PLC0415
    from ..train.evaluate import evaluate_checkpoint  # noqa: PLC0415

    if args.src or args.ref:
        return run_eval_translation(args)
    if args.data is None:
        raise ValueError("eval needs --data IMAGE_FOLDER (an image model) or --src FILE --ref FILE (a translator)")
    if args.precision == "int8" and not args.calibration:
        raise ValueError("--precision int8 needs --calibration FOLDER|GLOB of training images (not the evaluated ones)")
    result = evaluate_checkpoint(
        args.checkpoint,
        args.data,
        out=args.out,
        batch_size=args.batch_size,
        workers=args.workers,
        device=args.device,
        ema=args.ema,
        tta=args.tta,
        img_size=args.img_size,
        resample=args.resample,
        precision=args.precision,
        runtime=args.runtime or default_runtime(args.precision),
        calibration=args.calibration,
    )
    print(f"top-1 {result['top1']:.2f}%  top-5 {result['top5']:.2f}%  on {result['count']} images")
    print(f"wrote {result['eval_json']} and {result['confusion_png']}")
    return 0


def run_eval_translation(args: argparse.Namespace) -> int:
    from ..deploy.translate import evaluate_translation  # noqa: PLC0415

    if not (args.src and args.ref):
        raise ValueError("a translator's eval needs both --src FILE and --ref FILE (aligned, one sentence a line)")
    result = evaluate_translation(args.checkpoint, args.src, args.ref, beam=args.beam, out=args.out)
    scores = f"BLEU {result['bleu']:.2f}  chrF {result['chrf']:.2f}"
    print(f"{scores}  on {result['sentences']} sentences (beam {result['beam']})")
    print(f"  {result['bleu_signature']}")
    print(f"  {result['chrf_signature']}")
    for sample in result["samples"]:
        print(f"  src: {sample['src']}\n  hyp: {sample['hyp']}\n  ref: {sample['ref']}")
    print(f"wrote {result['hypotheses_file']}")
    return 0
