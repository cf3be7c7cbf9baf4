"""What the benchmark scripts share: the CLI's data folder as typed overrides, training one configuration into a
run directory (a finished one is reused), a run's curve, a finished run's splits rebuilt from its own config, a
checkpoint's split of an image folder, and the CPU's name for the results page.

Every path and file name of a run directory comes from `resmlp.rundir`. The scripts import this module as a
sibling (`python benchmarks/x.py` puts benchmarks/ on sys.path); `benchmarks/study.py` trains many configurations
with `train_once`.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from resmlp.checkpoint import read_checkpoint
from resmlp.config import Override, TrainConfig, load_config
from resmlp.data.build import DataSplits, build_data
from resmlp.data.datasets import scan_image_folder, stratified_split
from resmlp.data.images import load_rgb
from resmlp.data.transforms import build_eval_transform
from resmlp.loading import Loaded, load_model
from resmlp.models import Preprocess
from resmlp.rundir import RunDir
from resmlp.train.checkpointing import config_of_run
from resmlp.train.engine import EvalStats, evaluate
from resmlp.train.run import train
from resmlp.weights import WeightsError

# The first flag a CPU has names its bf16 / int8 matrix unit in cpu_model().
CPU_UNITS = [("amx_bf16", "AMX"), ("avx512_bf16", "AVX512-BF16, no AMX"), ("avx512f", "AVX512, no BF16")]


def cpu_model(cpuinfo: str | Path = "/proc/cpuinfo") -> str:
    """The results page's hardware column: the CPU's model name (/proc/cpuinfo) with its family, model and the
    matrix unit that decides bf16 speed, e.g. `Intel(R) Xeon(R) Processor (family 6 model 167, AMX)` (two Xeon
    kinds share that name and differ: docs/results.md); else what `platform` knows."""
    try:
        fields = {}
        with open(cpuinfo) as f:
            for line in f:
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
        name = fields["model name"]
    except (OSError, KeyError):
        return platform.processor() or platform.machine()
    flags = set(fields.get("flags", "").split())
    unit = next((u for flag, u in CPU_UNITS if flag in flags), "no AVX512")
    return f"{name} (family {fields.get('cpu family', '?')} model {fields.get('model', '?')}, {unit})"


def code_commit() -> Optional[str]:
    """The short git commit of the code running the benchmark (for the records), None outside a git checkout."""
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


def folder_data(path: str | Path | None) -> list[Override]:
    """An image folder (root/<class>/*) as typed overrides: the path reaches the config as it is ('#', ':',
    spaces and quotes included), never re-read as YAML. None: the recipe's own data."""
    return [] if path is None else [("data.source", "folder"), ("data.path", str(path))]


def override_text(item: Override) -> str:
    """An override as `--set` text, for tables and logs (typed values in YAML spelling: true, null)."""
    if isinstance(item, str):
        return item
    key, value = item
    if isinstance(value, (bool, list, dict)) or value is None:
        value = json.dumps(value)
    return f"{key}={value}"


def describe(overrides: Sequence[Override]) -> str:
    """Overrides as one line of `--set` text; `(recipe)` when there are none."""
    return " ".join(override_text(o) for o in overrides) or "(recipe)"


def finished_summary(run: RunDir) -> Optional[dict[str, Any]]:
    """The summary of a run that ended (its plan or time limit), None for one never run or stopped by a signal."""
    summary = run.read_summary()
    return summary if summary is not None and summary.get("stopped_by") is None else None


def train_once(
    recipe: Optional[str],
    overrides: Sequence[Override],
    run_dir: str | Path,
    *,
    base: Optional[dict] = None,
    finetune: str | Path | None = None,
) -> dict[str, Any]:
    """Train `recipe` with `overrides` (applied to the config dict `base` when given) into `run_dir` through the
    library, and return its summary. A run directory that finished before is reused untouched; one that was
    stopped (a signal, or killed after a checkpoint) is resumed from its checkpoint with its own config, so a
    study that was interrupted continues where it stopped; one killed before its first checkpoint (no epoch on
    record) starts again. Any other folder without a checkpoint is an error. A run stopped by a signal stops the
    study with it (SystemExit naming the run); the same command continues both."""
    run = RunDir(run_dir)
    summary = finished_summary(run)
    if summary is not None:
        print(f"{run.root}: done before, reusing its summary", flush=True)
        return summary
    if run.resumable():
        print(f"{run.root}: stopped before, resuming it", flush=True)
        summary = train(config_of_run(run.root), resume=run.root)
    elif run.root.exists() and (not run.is_run() or run.read_metrics()):
        raise SystemExit(f"error: {run.root} holds a run without a checkpoint to resume; delete it")
    else:
        if run.root.exists():
            print(f"{run.root}: stopped before its first checkpoint, starting it again", flush=True)
        summary = train(load_config(recipe, list(overrides), base=base), out=run.root, finetune=finetune)
    if summary.get("stopped_by"):  # the study stops with its run: the same command continues both
        raise SystemExit(f"{run.root}: stopped by {summary['stopped_by']}; run the same command to continue")
    return summary


def read_curve(run_dir: str | Path, offset_s: float = 0.0) -> list[tuple[float, float]]:
    """(wall minutes, val top-1) after each evaluated epoch, `offset_s` (the run's own teacher) added."""
    rows = RunDir(run_dir).read_metrics()
    return [((offset_s + r["wall_time_s"]) / 60, r["val_top1"]) for r in rows if "val_top1" in r]


@dataclass
class RunData:
    """A finished run's model and its data splits rebuilt from its own config (same data, seed and split), so
    that a number on `data.val` compares with the run's val_top1."""

    cfg: TrainConfig
    loaded: Loaded
    data: DataSplits

    def loader(self, dataset: Dataset) -> DataLoader:
        """`dataset` in the run's evaluation batches, in order."""
        return DataLoader(dataset, batch_size=self.cfg.data.eval_batch_size, num_workers=0)

    def evaluate(self, model: Optional[torch.nn.Module] = None, dataset: Optional[Dataset] = None) -> EvalStats:
        """`model` (the run's own by default) on `dataset` (the validation split by default), on the CPU."""
        return evaluate(
            self.loaded.model if model is None else model,
            self.loader(self.data.val if dataset is None else dataset),
            torch.device("cpu"),
            num_classes=len(self.data.classes),
        )


def run_data(run_dir: str | Path, *, weights: str = "model") -> RunData:
    """The run at `run_dir`: its config, its model (`weights` "model" or "ema" of checkpoints/best.pt, else
    last.pt) and its splits, the training images with their training transform."""
    cfg = config_of_run(run_dir)
    loaded = load_model(run_dir, weights=weights)
    return RunData(cfg, loaded, build_data(cfg.data, img_size=loaded.spec.args["img_size"], bad_log=None))


def split_images(
    data: str | Path,
    checkpoint: str | Path,
    preprocess: Preprocess,
    *,
    val_split: Optional[float] = None,
    split_seed: Optional[int] = None,
    limit: Optional[int] = None,
    calibration: int = 0,
) -> tuple[torch.Tensor, list[str]]:
    """The validation images of the folder `data` as training split it (the checkpoint's data.val_split and
    data.split_seed unless given; defaults for packaged models and bare weights, which carry no run config),
    at most `limit` of them spread over the split; with `calibration` > 0, that many images drawn (seeded) from
    its training part instead. Preprocessed by the model's eval transform; (images, their paths)."""
    paths, labels, _ = scan_image_folder(data)
    try:  # our checkpoints carry the run config, and with it the split training used
        data_cfg = (read_checkpoint(checkpoint).get("config") or {}).get("data") or {}
    except WeightsError:  # a packaged directory or bare weights: the defaults below
        data_cfg = {}
    val_split = val_split if val_split is not None else data_cfg.get("val_split", 0.1)
    seed = split_seed if split_seed is not None else data_cfg.get("split_seed", 0)
    train_idx, val_idx = stratified_split(labels, val_split, seed)
    if calibration:
        order = torch.randperm(len(train_idx), generator=torch.Generator().manual_seed(0))
        val_idx = [train_idx[i] for i in order[:calibration].tolist()]
    elif limit:
        val_idx = val_idx[:: max(1, len(val_idx) // limit)][:limit]
    transform = build_eval_transform(
        preprocess.img_size,
        mean=preprocess.mean,
        std=preprocess.std,
        crop_pct=preprocess.crop_pct,
        interpolation=preprocess.interpolation,
    )
    with ThreadPoolExecutor(4) as pool:
        images = list(pool.map(lambda i: transform(load_rgb(paths[i])), val_idx))
    part = "calibration (training part)" if calibration else "validation"
    print(f"{part}: {len(images)} images of {data} (val_split={val_split}, split_seed={seed})")
    return torch.stack(images), [str(paths[i]) for i in val_idx]


def add_split_arguments(ap: argparse.ArgumentParser) -> None:
    """--checkpoint, --data and the flags that pick a trained model's images of --data (`split_images_of`)."""
    ap.add_argument("--checkpoint", default=None, help="trained model (checkpoint, run dir, package, weights)")
    ap.add_argument("--data", default=None, help="image folder root/<class>/*.jpg the model was trained on")
    ap.add_argument("--val-split", type=float, default=None)
    ap.add_argument("--split-seed", type=int, default=None)
    ap.add_argument("--limit", type=int, default=None, help="use at most this many validation images")
    ap.add_argument(
        "--calibration",
        type=int,
        default=256,
        help="int8 calibration images from the training part of --data (0: skip calibrated int8)",
    )


def split_images_of(
    args: argparse.Namespace, preprocess: Preprocess, *, calibration: int = 0
) -> tuple[torch.Tensor, list[str]]:
    """`split_images` as the flags of `add_split_arguments` say."""
    return split_images(
        args.data,
        args.checkpoint,
        preprocess,
        val_split=args.val_split,
        split_seed=args.split_seed,
        limit=args.limit,
        calibration=calibration,
    )
