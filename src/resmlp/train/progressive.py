"""Progressive resizing (`progressive.sizes`): train the first epochs on smaller images, which cost less
per image (ResMLP's cost is about linear in the number of patches), and switch to larger ones later.

At each switch (`train.parts.Run.resize`) the token-mixing layers are resampled to the new patch grid, and so
are their optimizer moments (LAMB/AdamW exp_avg and exp_avg_sq), the EMA copy and the output size of the train
and validation transforms (the crop and augmentation run at `model.img_size`, then the last step brings each
image to the current size). `progressive.mode` says how: "resize" shrinks the whole image (A resampled with
`interp`, which keeps its reach as a fraction of the image), "crop" cuts a window at full scale (random in
training, central in validation; A resampled with `offset`, which keeps its reach in patches). A checkpoint
holds the model at the size of the epoch it ends, its spec's preprocessing as validation fed it (`follow_window`);
resuming builds the model, moves it to that size, then loads the states.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import statistics
import time
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

import torch
from torch import nn

from ..config import ConfigError, ProgressiveMode, TrainConfig
from ..models.layers import to_pair
from . import distributed as dist
from .engine import autocast

Size = Union[int, tuple[int, int]]
METHODS = {"resize": "interp", "crop": "offset"}  # progressive.mode -> how A is carried to the new grid


def schedule_of(cfg: TrainConfig, planned_epochs: Optional[float] = None) -> list[tuple[int, tuple[int, int]]]:
    """[(first epoch, (h, w)), ...] of `progressive.sizes` (empty without one). A run whose plan was
    fitted to `planned_epochs` (`budget.fit_to_time_limit`, possibly ending in part of an epoch) keeps the
    schedule's shape: every switch moves to the nearest epoch at the same fraction of the fitted run (an entry
    that started after epoch 0 still does)."""
    schedule = [(e[0], to_pair(e[1] if len(e) == 2 else list(e[1:]))) for e in cfg.progressive.sizes or []]
    if planned_epochs is None or planned_epochs == cfg.optim.epochs:
        return schedule
    scale = planned_epochs / cfg.optim.epochs
    return [(start if start == 0 else max(1, round(start * scale)), size) for start, size in schedule]


def relative_epoch_cost(
    schedule: Sequence[tuple[int, tuple[int, int]]],
    epoch: int,
    default: Any,
    pass_seconds: Mapping[tuple[int, int], float],
    passes: int,
    first_epoch_s: float,
) -> float:
    """The cost of epoch `epoch` relative to epoch 0 (which took `first_epoch_s`): epoch 0 with its `passes`
    forward/backward passes at its own size swapped for passes at epoch `epoch`'s size (`pass_seconds`, timed
    by `time_passes`). The rest of an epoch (optimizer steps, loading, batch augmentation at full size,
    evaluation) is taken as the same at every size. The patch count cannot follow the host: on the AVX2 EPYC
    a 32 px epoch of the cifar10_cpu recipe took 1.59x a 24 px one in one session and 1.71x in another,
    against 64/36 = 1.78x (docs/results.md#other). Used to fit a progressive run to a time budget."""
    extra = pass_seconds[size_at(schedule, epoch, default)] - pass_seconds[size_at(schedule, 0, default)]
    return max(1.0 + passes * extra / first_epoch_s, 0.05)  # timing noise never makes an epoch free


def window_crop_pct(crop_pct: float, old: tuple[int, int], new: tuple[int, int]) -> Optional[float]:
    """The eval `crop_pct` whose transform gives the central `new` window, at full scale, of what the transform
    with `crop_pct` gives at `old` (both resize to floor(old / crop_pct), then centre-crop): what crop mode's
    validation sees, as a model's preprocessing can say it. None when `new` is not `old` scaled alike on both
    axes (one crop_pct cannot say it)."""
    reach = [math.floor(o / crop_pct) for o in old]  # the side the images are resized to, kept at every size
    pct = new[0] / reach[0]
    while math.floor(new[0] / pct) < reach[0]:  # floating-point round-off must not shrink the resize by a pixel
        pct = math.nextafter(pct, 0.0)
    return pct if math.floor(new[1] / pct) == reach[1] else None


def follow_window(model: nn.Module, old: tuple[int, int]) -> None:
    """After a crop-mode switch from `old` (`model.set_input_size(new, method="offset")`): `model.spec`'s
    preprocessing says that the model takes the central window of the image at full scale, as validation fed it
    (`CropTensor`, centred), not the whole image shrunk to the new size, so that `eval`, `predict` and `export`
    of a checkpoint written at that size prepare images as its validation did. On a CIFAR-10 model trained
    and checkpointed at 24 px windows, shrinking the whole image instead cost 2.7 points of top-1."""
    spec = getattr(model, "spec", None)
    if spec is None:
        return
    pct = window_crop_pct(spec.preprocess.crop_pct, old, to_pair(model.stem.img_size))
    if pct is not None:
        model.spec = spec.replace(preprocess=dataclasses.replace(spec.preprocess, crop_pct=pct))


def time_passes(
    model: nn.Module,
    sizes: Iterable[tuple[int, int]],
    *,
    batch_size: int,
    device: torch.device,
    precision: str,
    mode: ProgressiveMode,
    repeats: int = 5,
) -> dict[tuple[int, int], float]:
    """Median seconds of one training forward + backward pass of a random `batch_size` batch at each size,
    on copies of `model` moved to those sizes (sizes interleaved after a warm-up round), so that the model,
    its gradients and the random streams stay as they were. Averaged over the processes of a distributed
    run, so that every process fits the same plan."""
    model = dist.unwrap(model)
    in_chans = model.stem.proj.weight.shape[1]
    copies = {size: copy.deepcopy(model).set_input_size(size, method=METHODS[mode]).train() for size in sizes}
    times: dict[tuple[int, int], list[float]] = {size: [] for size in copies}
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        for round_ in range(repeats + 1):
            for size, probe in copies.items():
                images = torch.randn(batch_size, in_chans, *size, device=device)
                _synchronize(device)
                start = time.perf_counter()
                with autocast(device, precision):
                    logits = probe(images)
                logits.float().logsumexp(-1).mean().backward()
                _synchronize(device)
                if round_:
                    times[size].append(time.perf_counter() - start)
                probe.zero_grad(set_to_none=True)
    medians = torch.tensor([statistics.median(times[size]) for size in copies], dtype=torch.float64, device=device)
    medians = dist.all_reduce_sum(medians) / dist.world_size()
    return dict(zip(copies, medians.tolist()))


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def check_schedule(cfg: TrainConfig, patch_size: Optional[int], img_size: Size) -> None:
    """ConfigError naming `progressive.sizes` for a schedule the model or the run cannot follow."""
    schedule = schedule_of(cfg)
    if not schedule:
        return
    if patch_size is None:
        raise ConfigError(
            f"progressive.sizes: {cfg.model.name} is not a patch model (ResMLP, Mixer); "
            f"only those have token mixing to resample"
        )
    full = to_pair(img_size)
    for i, (_, (h, w)) in enumerate(schedule):
        if h % patch_size or w % patch_size:
            raise ConfigError(
                f"progressive.sizes[{i}]: size {h}x{w} is not a multiple of the patch size "
                f"{patch_size} of {cfg.model.name}"
            )
        if cfg.progressive.mode == "crop" and (h > full[0] or w > full[1]):
            raise ConfigError(
                f"progressive.sizes[{i}]: progressive.mode=crop cuts windows out of the "
                f"{full[0]}x{full[1]} images of model.img_size; {h}x{w} is larger"
            )


def size_at(schedule: Sequence[tuple[int, tuple[int, int]]], epoch: int, default: Any) -> tuple[int, int]:
    """The (h, w) size epoch `epoch` (0-based) trains at: the last entry starting at or before it."""
    size = to_pair(default)
    for start, entry in schedule:
        if start <= epoch:
            size = entry
    return size
