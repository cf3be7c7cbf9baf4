"""The parts `run.build` wires together, each from explicit arguments: the process, the model's arguments, the
model, the loaders and the criterion."""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler, Subset

from ..config import ConfigError, ModelConfig, RunConfig, TrainConfig
from ..data.batch_augment import BatchAugment
from ..data.build import DataSplits
from ..data.resumable import PositionSampler, SeededDataset
from ..data.sampler import RepeatedAugSampler
from ..device import auto_precision, flush_denormals, place, resolve_compile, resolve_device, retain_freed_cpu_memory
from ..loading import finetune_weights
from ..models import Preprocess, create_model, get_variant, model_args
from ..models.init import init_token_mixing
from ..models.layers import to_pair
from ..models.whiten import whiten_patch_embedding
from ..weights import load_weights
from . import distributed as dist
from .losses import CrossEntropyCriterion
from .preempt import ignore_stop_signals
from .progressive import schedule_of


def model_arguments(cfg: ModelConfig) -> dict[str, Any]:
    """Every constructor argument of variant `cfg.name` with the config's model fields applied; a field
    the variant does not take is a ConfigError naming `model.<field>` and the ones it takes."""
    try:
        get_variant(cfg.name)
    except ValueError as e:
        raise ConfigError(f"model.name: {e}") from None
    for key, value in cfg.overrides().items():
        try:
            model_args(cfg.name, **{key: value})
        except ValueError as e:
            raise ConfigError(f"model.{key}: {e}") from None
    return model_args(cfg.name, **cfg.overrides())[1]


def init_process(cfg: RunConfig) -> tuple[torch.device, int, int]:
    """This process's device, rank and world size (several under torchrun), and its intra-op threads. CPU math
    flushes denormal floats to zero (`device.flush_denormals`): the compiled step slowed by a fifth without it, and
    values below 1.2e-38 do not matter to training."""
    flush_denormals()
    device = resolve_device(cfg.device, local_rank=dist.env_local_rank())
    rank, _, world = dist.init(device.type)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    torch.set_num_threads(cfg.threads or dist.default_threads())
    if device.type == "cpu" and cfg.retain_cpu_memory:
        retain_freed_cpu_memory()
    if cfg.precision == "fp16" and device.type != "cuda":
        raise ValueError("run.precision=fp16 needs CUDA (loss scaling); on CPU use run.precision=bf16")
    resolve_compile(cfg.compile, device)  # run.compile=true where it cannot: the error now, before any training
    return device, rank, world


def build_criterion(cfg: TrainConfig, device: torch.device, preprocess: Preprocess, classes: list[str]):
    """(images, logits, soft targets) -> loss; with `distill.teacher` set, the distillation loss."""
    if cfg.distill.trains_teacher:
        raise ValueError("distill.teacher_recipe: the teacher is trained by `train` before the student is built")
    if cfg.distill.active:
        from .distill import build_distillation  # noqa: PLC0415 - only runs that distil need it

        own = to_pair(preprocess.img_size)
        sizes = sorted({size for _, size in schedule_of(cfg)} - {own})  # progressive resizing's other sizes
        return build_distillation(
            cfg.distill,
            device=device,
            student_preprocess=preprocess,
            classes=classes,
            batch_sizes=sizes,
            student_precision=auto_precision(cfg.run.precision, device),
        )
    return CrossEntropyCriterion()


def loader_workers(requested: int) -> int:
    """A recipe's worker count is a ceiling: no more than the cores this process has (under torchrun, the
    machine's cores divided among its processes), so a recipe tuned on a big host does not oversubscribe
    a small one."""
    return max(0, min(requested, dist.default_threads()))


def make_loaders(
    data: DataSplits, cfg: TrainConfig, rank: int, world: int, device: torch.device
) -> tuple[DataLoader, PositionSampler, DataLoader]:
    """The training loader (its epoch order resumable from any position) and this process's validation shard."""
    d = cfg.data
    epoch_order: Sampler
    if d.repeated_aug:
        epoch_order = RepeatedAugSampler(
            len(data.train), num_repeats=d.num_repeats, num_replicas=world, rank=rank, seed=cfg.run.seed
        )
    else:
        epoch_order = DistributedSampler(data.train, num_replicas=world, rank=rank, shuffle=True, seed=cfg.run.seed)
    if len(epoch_order) < d.batch_size:
        raise ValueError(
            f"data.batch_size={d.batch_size} is larger than the {len(epoch_order)} training samples "
            f"per process; lower data.batch_size"
        )
    sampler = PositionSampler(epoch_order, seed=cfg.run.seed, rank=rank)
    pin, workers = device.type == "cuda", loader_workers(d.workers)
    items = SeededDataset(
        data.train,
        seeded=not d.batch_augment,  # batch augmentation draws later, per batch
        flip_seed=cfg.run.seed if d.hflip_alternate else None,
    )
    both = {"num_workers": workers, "pin_memory": pin, "worker_init_fn": ignore_stop_signals if workers else None}
    train = DataLoader(items, batch_size=d.batch_size, sampler=sampler, drop_last=True, **both)
    shard = Subset(data.val, list(range(rank, len(data.val), world)))  # each process evaluates its own shard
    val = DataLoader(shard, batch_size=d.eval_batch_size, shuffle=False, **both)
    return train, sampler, val


def build_model(
    cfg: TrainConfig,
    data: DataSplits,
    device: torch.device,
    finetune: Optional[str],
    augment: Optional[BatchAugment] = None,
    *,
    img_size: Any,
) -> nn.Module:
    """The configured variant with the data's classes and preprocessing (`img_size`: the model's, from
    `model_arguments`), optionally from `finetune` weights (`loading.finetune_weights`; `augment`: the run's
    batch augmentation, which the stem whitening's sample goes through)."""
    model = create_model(cfg.model.name, **cfg.model.overrides(), num_classes=len(data.classes))
    init_token_mixing(model, cfg.model.token_mixing_init, generator=torch.Generator().manual_seed(cfg.run.seed))
    if cfg.model.stem_init != "default":
        sample = whitening_sample(data.train, cfg.model.stem_init_samples, seed=cfg.run.seed, augment=augment)
        whiten_patch_embedding(model, sample, kind=cfg.model.stem_init)
    if cfg.model.stem_frozen:
        freeze_stem_weight(model)
    preprocess = Preprocess(
        img_size=tuple(img_size) if isinstance(img_size, list) else img_size,
        crop_pct=cfg.data.crop_pct,
        interpolation=cfg.data.interpolation,
        mean=data.mean,
        std=data.std,
    )
    model.spec = model.spec.replace(classes=data.classes, preprocess=preprocess)
    if finetune:
        # weights made for another input size: their token mixing is carried to this run's patch grid
        load_weights(model, finetune_weights(finetune), allow_head_mismatch=True, resample=True)
    return place(model, device)


def freeze_stem_weight(model: nn.Module) -> None:
    """model.stem_frozen: the stem's projection keeps its initial weights (its bias trains)."""
    proj = getattr(getattr(model, "stem", None), "proj", None)
    if not isinstance(proj, nn.Conv2d):
        raise ConfigError(f"model.stem_frozen: {type(model).__name__} has no stem projection (stem.proj) to freeze")
    proj.weight.requires_grad_(False)


def whitening_sample(
    dataset: Dataset, count: int, *, seed: int, augment: Optional[BatchAugment] = None
) -> torch.Tensor:
    """`count` training images (a seeded choice, through the training transform and `augment` when the run
    augments batches) to fit the stem whitening on."""
    idx = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:count]
    images = torch.stack([dataset[int(i)][0] for i in idx])
    if augment is None:
        return images
    return dataclasses.replace(augment, generator=torch.Generator().manual_seed(seed))(images)
