"""`resmlp train` and `resmlp eval`."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import typing
from pathlib import Path

from ..config import TTA, Override, config_to_dict, load_config
from ..train.engine import NonFiniteLossError
from .deploy import add_size_flags


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train with a recipe (default: the digits demo)",
        description="Train a model; writes a run directory (config.yaml, metrics.jsonl, "
        "checkpoints/, summary.json). Multi-GPU: torchrun --nproc_per_node=K -m resmlp train ...",
    )
    p.add_argument("--recipe", default=None, help="bundled recipe name (digits, cifar10_cpu, ...) or a YAML file")
    p.add_argument("--model", default=None, help="registered variant (sets model.name)")
    p.add_argument("--data", default=None, help="image folder root/<class>/*, or a CIFAR python .tar.gz archive")
    p.add_argument("--val-data", default=None, help="separate validation image folder")
    p.add_argument("--val-split", type=float, default=None, help="fraction of train held out for validation")
    p.add_argument("--epochs", type=int, default=None, help="sets optim.epochs")
    p.add_argument(
        "--set",
        dest="overrides",
        action="extend",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="override config keys, e.g. --set optim.lr=1e-3 data.batch_size=64",
    )
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
        help="start from weights (deit/timm/ours); the head is re-initialised if the classes differ",
    )
    p.set_defaults(func=run_train)

    p = sub.add_parser("eval", help="evaluate a checkpoint on an image folder; writes eval.json + confusion PNG")
    p.add_argument("--checkpoint", required=True, help="checkpoint file or run directory")
    p.add_argument("--data", required=True, help="image folder root/<class>/* with the checkpoint's classes")
    p.add_argument("--out", default=None, help="where eval.json goes (default: next to the run / checkpoint)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--device", default="auto")
    p.add_argument("--ema", action="store_true", help="evaluate the EMA weights")
    p.add_argument(
        "--tta",
        default="none",
        choices=typing.get_args(TTA),
        help="test-time augmentation: mean logits over the image and its mirror (and 1-px shifts)",
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


def run_train(args: argparse.Namespace) -> int:
    from ..train.checkpointing import config_of_run  # noqa: PLC0415 - keep `resmlp models` fast
    from ..train.run import train  # noqa: PLC0415

    overrides = list(data_overrides(args.data, args.val_data, args.val_split))
    if args.model:
        overrides.append(("model.name", args.model))
    if args.epochs is not None:
        overrides.append(("optim.epochs", args.epochs))
    overrides += args.overrides
    if args.resume:
        cfg = load_config(args.recipe, overrides, base=config_to_dict(config_of_run(args.resume)))
    else:
        cfg = load_config(args.recipe or "digits", overrides)
    try:
        summary = train(cfg, out=args.out, resume=args.resume, finetune=args.finetune)
    except NonFiniteLossError as e:
        raise ValueError(str(e)) from None
    from ..train import distributed as dist  # noqa: PLC0415

    main_process = dist.is_main()
    dist.shutdown()
    if summary.get("stopped_by"):  # preempted: a checkpoint is written; the exit status says which signal
        if "message" in summary:
            print(summary["message"], file=sys.stderr, flush=True)
        return 128 + int(getattr(signal, summary["stopped_by"]))
    if main_process:
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
    from ..train.evaluate import evaluate_checkpoint  # noqa: PLC0415

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
    )
    print(f"top-1 {result['top1']:.2f}%  top-5 {result['top5']:.2f}%  on {result['count']} images")
    print(f"wrote {result['eval_json']} and {result['confusion_png']}")
    return 0
