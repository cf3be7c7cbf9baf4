"""`resmlp compress`: a trained ResMLP made smaller and faster, each step measured.

1. prune   whole blocks (`deploy.compress.drop_blocks`, when `depth` is set), whole channels of the residual
           stream (`deploy.compress.prune_width`, when `width` < 1) and whole hidden units of every channel MLP
           (`deploy.compress.prune_units`), all scored on training images; then every channel MLP (B, then C)
           refitted by least squares to what the unpruned blocks computed (`deploy.compress.refit_channel_mlps`);
           and, when `img_size` is set, fewer patches (`deploy.compress.at_size`: smaller input images): a dense
           model with fewer multiply-adds;
2. recover a short run of the model's own recipe, started from the pruned weights and distilled from the
           uncompressed model (soft targets; its minutes fitted by the time budget; the teacher's forward pass
           compiled by OpenVINO unless `teacher_runtime="eager"`), on the same training split;
3. int8    OpenVINO + NNCF (`deploy.openvino`), calibrated on training images.

Written to OUT: the recovered model as a packaged directory (`model/`, like `resmlp export --format safetensors`),
its int8 OpenVINO IR (`openvino-int8/`), the recovery run (`recovery/`) and `report.json`: params, GFLOPs,
images/s (batch 64, interleaved rounds) and validation top-1 of the original and compressed model, fp32 and int8.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..checkpoint import atomic_save, model_record
from ..config import ConfigError, TrainConfig, config_from_dict, config_to_dict, load_config
from ..data.build import build_data
from ..deploy.benchmark import time_interleaved
from ..deploy.compress import (
    VIEWS,
    at_size,
    drop_blocks,
    keep_channels,
    keep_units,
    prune_units,
    prune_width,
    refit_channel_mlps,
)
from ..deploy.openvino import export_openvino, openvino_model
from ..deploy.optimize import optimize
from ..files import write_text_atomic
from ..hub.packaged import save_pretrained
from ..loading import Loaded, load_model
from ..models import count_macs, count_params
from ..rundir import RunDir
from .engine import evaluate
from .run import train


@dataclass(frozen=True)
class CompressSettings:
    keep: float = 0.5  # the fraction of each channel MLP's hidden units kept
    width: float = 1.0  # the fraction of the residual stream's D channels kept
    refit: bool = True  # least-squares refit of every channel MLP (B, then C) before the recovery
    depth: Optional[int] = None  # the number of blocks kept (None: all)
    img_size: Optional[int] = None  # the compressed model's input size (None: the same)
    # How its images reach img_size: "resize" shrinks the whole image; "crop" takes the central img_size window of
    # the image at the original size (the hour's student trains on such windows for most of its epochs), and the
    # recovery trains on random windows of the full-size augmented batches while the original, its teacher,
    # sees the full images (progressive.mode=crop, distill.teacher_view=full; no Mixup/CutMix).
    view: str = "resize"
    minutes: float = 10.0  # the recovery run's time budget
    lr_scale: float = 0.25  # the recovery's learning rate: the recipe's times this
    alpha: float = 1.0  # weight of the distillation term against the label loss (1: the original's logits only)
    calibration: int = 256  # training images that score the blocks, channels and units and calibrate int8
    refit_images: int = 1024  # training images the least-squares refit fits on
    teacher_runtime: str = "openvino"  # what runs the original as the recovery's teacher (distill.teacher_runtime)
    recovery_set: tuple[str, ...] = ()  # `--set` overrides of the recovery run's config, applied after the above
    batch: int = 64  # the batch size images/s is measured at
    rounds: int = 5


def run_config(loaded: Loaded) -> TrainConfig:
    """The training config of the run `loaded` came from (a run directory or one of our checkpoints)."""
    record = (loaded.checkpoint or {}).get("config")
    if record is None:
        raise ValueError(
            f"{loaded.path}: compress needs a run directory or one of its checkpoints (the recovery trains with the "
            "run's recipe and split); packaged models and bare weights carry no recipe"
        )
    return config_from_dict(record)


def recovery_config(
    cfg: TrainConfig, dim: int, widths: list[int], start: Path, teacher: Path, s: CompressSettings
) -> TrainConfig:
    """The run's own recipe, continued at a lower learning rate from the pruned weights `start` (`dim` residual
    channels, one hidden width per block in `widths`) and distilled from the uncompressed checkpoint `teacher`,
    fitted to `s.minutes`; then the `s.recovery_set` overrides.
    With `s.view == "crop"`, `start` is at the run's size and every epoch trains on `s.img_size` windows."""
    windows = s.view == "crop" and s.img_size is not None
    model = dataclasses.replace(
        cfg.model,
        img_size=cfg.model.img_size if windows else s.img_size or cfg.model.img_size,
        embed_dim=dim,
        depth=len(widths),
        mlp_hidden=widths,
        finetune=str(start),
        token_mixing_init="default",
        stem_init="default",
    )
    distill = dataclasses.replace(
        cfg.distill,
        teacher=str(teacher),
        teacher_model=None,
        teacher_recipe=None,
        teacher_set=[],
        kind="soft",
        alpha=s.alpha,
        tau=1.0,
        teacher_view="full" if windows else "resize",
        teacher_runtime=s.teacher_runtime,
    )
    optim = dataclasses.replace(
        cfg.optim, lr=cfg.optim.lr * s.lr_scale, warmup_epochs=min(cfg.optim.warmup_epochs, 0.5)
    )
    recovery = dataclasses.replace(
        cfg,
        model=model,
        distill=distill,
        optim=optim,
        budget=dataclasses.replace(cfg.budget, time_limit_min=s.minutes, fit_to_time_limit=True),
        progressive=dataclasses.replace(cfg.progressive, mode="crop", sizes=[[0, s.img_size]])
        if windows
        else dataclasses.replace(cfg.progressive, sizes=None),
        data=dataclasses.replace(cfg.data, mixup_alpha=0.0, cutmix_alpha=0.0) if windows else cfg.data,
        run=dataclasses.replace(cfg.run, final_tta="none", tensorboard=False),
    )
    if not s.recovery_set:
        return recovery
    try:
        return load_config(overrides=s.recovery_set, base=config_to_dict(recovery))
    except ConfigError as e:
        raise ConfigError(f"compress --set (the recovery run's config): {e}") from None


def _with_transform(dataset: Dataset, transform: Callable) -> Dataset:
    out = copy.copy(dataset)
    out.transform = transform
    return out


def training_images(train_set: Dataset, transform: Callable, count: int, seed: int = 0) -> torch.Tensor:
    """`count` training images (a seeded choice) through the evaluation transform."""
    data = _with_transform(train_set, transform)
    idx = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:count]
    return torch.stack([data[int(i)][0] for i in idx])


def _top1(model: nn.Module, val: DataLoader, num_classes: int) -> float:
    return evaluate(model, val, torch.device("cpu"), num_classes=num_classes).top1


def compress(
    source: str | Path,
    out: str | Path,
    *,
    settings: CompressSettings = CompressSettings(),
    data: Optional[str] = None,
    val_data: Optional[str] = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Prune, recover and quantise the model of run (or checkpoint) `source` into `out`; the report (see the
    module docstring). `data` / `val_data` replace the run's image folders."""
    out = Path(out)
    if RunDir(out / "recovery").earlier_run():
        raise ValueError(f"--out {out}: holds an earlier compression ({out / 'recovery'}); choose another --out")
    loaded = load_model(source)
    cfg = run_config(loaded)
    if data is not None:
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, source="folder", path=data))
    if val_data is not None:
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, val_path=val_data))
    original = loaded.model.cpu().eval()
    patch = original.stem.patch_size
    if settings.img_size is not None and settings.img_size % patch:
        raise ValueError(f"--img-size {settings.img_size}: expected a multiple of the model's patch size, {patch}")
    if settings.view not in VIEWS:
        raise ValueError(f"view: expected one of {', '.join(VIEWS)}, got {settings.view!r}")
    if settings.view == "crop" and settings.img_size is not None and not cfg.data.batch_augment:
        raise ValueError(
            "--view crop: the recovery cuts its windows from batch-augmented images, and the run's recipe has "
            "data.batch_augment=false; use --view resize"
        )
    base = loaded.spec.args["img_size"]
    splits = build_data(cfg.data, img_size=base)
    val = DataLoader(splits.val, batch_size=256)
    calibration = training_images(splits.train, splits.val.transform, settings.calibration, cfg.run.seed)
    classes = len(splits.classes)
    crop_pct = None  # the compressed model's preprocessing: the original's, or its central windows (view "crop")
    if settings.img_size is not None and settings.view == "crop":
        crop_pct = cfg.data.crop_pct * settings.img_size / base
    if settings.img_size is None:  # the compressed model's images: the same, or brought to its input size
        small_val, small_calibration = val, calibration
    else:
        small = build_data(
            cfg.data if crop_pct is None else dataclasses.replace(cfg.data, crop_pct=crop_pct),
            img_size=settings.img_size,
        )
        small_val = DataLoader(small.val, batch_size=256)
        small_calibration = training_images(small.train, small.val.transform, settings.calibration, cfg.run.seed)

    depth = len(original.blocks) if settings.depth is None else settings.depth
    at = f", at {settings.img_size} px" if settings.img_size else ""
    refit = ", B and C refitted" if settings.refit else ""
    log(
        f"1/3 prune: keep {depth} of {len(original.blocks)} blocks, {settings.width:.0%} of the residual channels, "
        f"{settings.keep:.0%} of each channel MLP's units{at}{refit}"
    )
    reference = original if depth == len(original.blocks) else drop_blocks(original, depth, calibration)
    channels = None if settings.width == 1.0 else keep_channels(reference, settings.width, calibration)
    pruned = reference if channels is None else prune_width(reference, channels)
    units = keep_units(pruned, settings.keep, calibration)
    pruned = prune_units(pruned, units)
    if settings.refit and (channels is not None or settings.keep < 1.0):
        fit = training_images(splits.train, splits.val.transform, settings.refit_images, cfg.run.seed)
        refit_channel_mlps(pruned, reference, fit, channels=channels, units=units)
    if settings.img_size is not None and crop_pct is None:
        pruned = at_size(pruned, settings.img_size)
    widths = list(pruned.spec.args["mlp_hidden"])
    out.mkdir(parents=True, exist_ok=True)
    start = atomic_save(model_record(pruned), out / "pruned.pt")  # view "crop": at the original size
    small_model = at_size(pruned, settings.img_size, crop_pct=crop_pct) if crop_pct is not None else pruned
    pruned_top1 = _top1(small_model, small_val, classes)

    log(f"2/3 recover: {settings.minutes:g} minutes of the run's recipe, distilled from the original")
    teacher = out / "original.pt"
    atomic_save(model_record(original), teacher)
    rcfg = recovery_config(cfg, pruned.spec.args["embed_dim"], widths, start, teacher, settings)
    summary = train(rcfg, out=out / "recovery")
    recovered = load_model(out / "recovery").model.cpu().eval()
    if crop_pct is not None:  # trained on windows: its spec says so
        recovered = at_size(recovered, settings.img_size, crop_pct=crop_pct)

    log("3/3 int8: OpenVINO + NNCF, calibrated on training images; then the measurements")
    int8 = {"original": openvino_model(original, "int8", calibration=calibration)}
    int8["compressed"] = openvino_model(recovered, "int8", calibration=small_calibration)
    fp32 = {"original": optimize(original, "fp32"), "compressed": optimize(recovered, "fp32")}
    models = {"original": original, "compressed": recovered}
    x = {
        k: torch.randn(settings.batch, *m.spec.input_shape, generator=torch.Generator().manual_seed(0))
        for k, m in models.items()
    }
    runners = {f"{k} fp32": v for k, v in fp32.items()} | {f"{k} int8": v for k, v in int8.items()}
    speed = time_interleaved(runners, {name: x[name.split()[0]] for name in runners}, rounds=settings.rounds)
    size = {k: (count_params(m), count_macs(m, (1, *m.spec.input_shape))) for k, m in models.items()}
    accuracy = {
        "original fp32": _top1(original, val, classes),
        "original int8": _top1(int8["original"], val, classes),
        "pruned fp32 (before recovery)": pruned_top1,
        "compressed fp32": _top1(recovered, small_val, classes),
        "compressed int8": _top1(int8["compressed"], small_val, classes),
    }
    rows = []
    for name, top1 in accuracy.items():
        which = "original" if name.startswith("original") else "compressed"
        params, macs = size[which]
        rate = speed.get(name.split(" (")[0].replace("pruned", "compressed"))
        rows.append({"step": name, "params": params, "gflops": macs / 1e9, "images_per_s": rate, "top1": top1})
    report = {
        "source": str(loaded.path),
        "settings": dataclasses.asdict(settings),
        "depth": len(widths),
        "embed_dim": pruned.spec.args["embed_dim"],
        "mlp_hidden": widths,
        "recovery": {k: summary.get(k) for k in ("epochs", "best_val_top1", "final_val_top1", "wall_time_s")},
        "batch": settings.batch,
        "rows": rows,
        "speedup_int8": speed["compressed int8"] / speed["original int8"],
        "top1_loss_int8": accuracy["original int8"] - accuracy["compressed int8"],
        "top1_loss_vs_fp32": accuracy["original fp32"] - accuracy["compressed int8"],
    }
    save_pretrained(recovered, out / "model")
    export_openvino(recovered, out / "openvino-int8", precision="int8", calibration=small_calibration)
    write_text_atomic(out / "report.json", json.dumps(report, indent=1) + "\n")
    return report


def format_report(report: dict[str, Any]) -> str:
    lines = [
        f"{'step':<32}{'params':>11}{'GFLOPs':>9}{'img/s':>10}{'top-1':>9}",
        *(
            f"{r['step']:<32}{r['params']:>11,}{r['gflops']:>9.3f}"
            f"{(format(r['images_per_s'], '.0f') if r['images_per_s'] else '-'):>10}{r['top1']:>8.2f}%"
            for r in report["rows"]
        ),
        f"int8: compressed / original images/s {report['speedup_int8']:.2f}x at batch {report['batch']}; top-1 "
        f"{report['top1_loss_int8']:.2f} points below the original int8 ({report['top1_loss_vs_fp32']:.2f} below fp32)",
    ]
    return "\n".join(lines)
