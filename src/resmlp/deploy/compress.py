"""Structured pruning of the channel MLPs: whole hidden units removed, a smaller dense model (real speed, not masks).

The paper (section 4.2) finds the learned weights sparse and notes that this "may help model compression". The
channel MLPs hold nearly all of a ResMLP's multiply-adds (D x 4D twice per token against N x N per channel for
A), so removing hidden units of B (rows) and C (the matching columns) shrinks the model where it costs. A unit
is worth what it adds to the residual stream: its mean |activation| on calibration images times the norm of its
column of C scaled by LayerScale, `unit_scores`. Each block keeps the same fraction of its units (`keep`), its
best-scored ones; the result is a ResMLP with per-block hidden widths (`mlp_hidden`) whose kept units compute
exactly what they did. Whole blocks can go too (`drop_blocks`): a block's worth is what the model's predictions
lose without it (`block_scores`); on a small model, where int8's per-block fixed costs (float token mixing,
element-wise ops) weigh as much as the channel MLPs, depth is the cheaper cut. Fewer patches cut every block at once
(`at_size`: smaller images, the same patch size). `resmlp compress` (train/compress.py) then recovers accuracy by
distillation.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Optional

import torch
from torch import nn

from ..infer_arch import spec_of


def _check_prunable(model: nn.Module) -> None:
    blocks = getattr(model, "blocks", None)
    if not blocks or not all(hasattr(b, "mlp_channels") and hasattr(b, "ls2") for b in blocks):
        raise ValueError(
            f"{type(model).__name__}: structured pruning takes a ResMLP (blocks with a channel MLP and LayerScale)"
        )
    if getattr(model, "class_blocks", None) is not None:
        raise ValueError("structured pruning does not take class-MLP pooling (pooling=class_mlp) models")


@torch.no_grad()
def unit_scores(model: nn.Module, images: torch.Tensor, *, batch: int = 64) -> list[torch.Tensor]:
    """Per block, one score per hidden unit of the channel MLP: mean |activation| over `images`' tokens times
    || LayerScale_2 * C[:, j] || (what unit j adds to the residual stream)."""
    _check_prunable(model)
    was_training = model.training
    model.eval()
    sums = [torch.zeros(b.mlp_channels.fc1.out_features, dtype=torch.float64) for b in model.blocks]
    counts = [0] * len(sums)

    def record(i: int):
        def hook(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
            flat = output.detach().float().reshape(-1, output.shape[-1])
            sums[i] += flat.abs().sum(0).double().cpu()
            counts[i] += flat.shape[0]

        return hook

    handles = [b.mlp_channels.act.register_forward_hook(record(i)) for i, b in enumerate(model.blocks)]
    try:
        device = next(model.parameters()).device
        for chunk in images.split(batch):
            model(chunk.to(device))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    scores = []
    for i, b in enumerate(model.blocks):
        column = (b.ls2.detach().float()[:, None] * b.mlp_channels.fc2.weight.detach().float()).norm(dim=0)
        scores.append((sums[i] / max(counts[i], 1)).float() * column.cpu())
    return scores


@torch.no_grad()
def block_scores(model: nn.Module, images: torch.Tensor, *, batch: int = 64) -> torch.Tensor:
    """Per block, the mean KL divergence from the model's predictions on `images` to those of the same model with
    that block skipped (its residual branches removed): what the predictions lose without it."""
    _check_prunable(model)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    chunks = [c.to(device) for c in images.split(batch)]
    reference = [model(c).float().log_softmax(-1) for c in chunks]
    scores = torch.zeros(len(model.blocks), dtype=torch.float64)
    try:
        for i, block in enumerate(model.blocks):
            block.forward = lambda x: x  # the block as the identity: x + 0 + 0 (an instance attribute, deleted below)
            try:
                for ref, c in zip(reference, chunks):
                    out = model(c).float().log_softmax(-1)
                    scores[i] += (ref.exp() * (ref - out)).sum().double().cpu()
            finally:
                del block.forward
    finally:
        model.train(was_training)
    return (scores / max(len(images), 1)).float()


def drop_blocks(model: nn.Module, depth: int, images: torch.Tensor) -> nn.Module:
    """A copy of ResMLP `model` keeping `depth` of its blocks, in their order: those whose removal costs the most
    by `block_scores` on `images`; `spec` carried over (per-block widths included), eval mode."""
    blocks = len(getattr(model, "blocks", []))
    if not 1 <= depth <= blocks:
        raise ValueError(f"depth: expected a number of blocks to keep in [1, {blocks}], got {depth}")
    scores = block_scores(model, images)
    kept = scores.topk(depth).indices.sort().values.tolist()
    spec = spec_of(model)
    args = {**spec.args, "depth": depth}
    widths = [b.mlp_channels.fc1.out_features for b in model.blocks]
    if len(set(widths)) > 1 or "mlp_hidden" in spec.args:
        args["mlp_hidden"] = [widths[i] for i in kept]
    smaller = spec.replace(args=args).build()
    state = {}
    for k, v in model.state_dict().items():
        if k.startswith("blocks."):
            _, i, rest = k.split(".", 2)
            if int(i) not in kept:
                continue
            k = f"blocks.{kept.index(int(i))}.{rest}"
        state[k] = v.detach().clone()
    smaller.load_state_dict(state)
    return smaller.to(next(model.parameters()).device).eval()


def prune_channel_mlps(model: nn.Module, keep: float, images: torch.Tensor) -> nn.Module:
    """A copy of ResMLP `model` whose every channel MLP keeps round(keep * hidden) of its hidden units (at least
    one), the best by `unit_scores` on `images`; `spec` (preprocessing, classes) carried over, eval mode."""
    if not 0.0 < keep <= 1.0:
        raise ValueError(f"keep: expected a fraction of the hidden units in (0, 1], got {keep}")
    scores = unit_scores(model, images)
    kept = [s.topk(max(1, round(keep * len(s)))).indices.sort().values for s in scores]
    spec = spec_of(model)
    pruned_spec = spec.replace(args={**spec.args, "mlp_hidden": [len(k) for k in kept]})
    pruned = pruned_spec.build()
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    for i, idx in enumerate(kept):
        prefix = f"blocks.{i}.mlp_channels."
        idx = idx.to(state[prefix + "fc1.weight"].device)
        state[prefix + "fc1.weight"] = state[prefix + "fc1.weight"][idx]
        state[prefix + "fc1.bias"] = state[prefix + "fc1.bias"][idx]
        state[prefix + "fc2.weight"] = state[prefix + "fc2.weight"][:, idx]
    pruned.load_state_dict(state)
    return pruned.to(next(model.parameters()).device).eval()


VIEWS = ("resize", "crop")  # how smaller images reach a model at_size made: the whole image, or its central window


def at_size(model: nn.Module, size: int, *, crop_pct: Optional[float] = None) -> nn.Module:
    """A copy of patch model `model` taking `size` x `size` images: fewer patches, every block's cost cut with
    them. The token mixing is carried to the smaller grid by offset (`models.resample`): on the `cifar10_cpu`
    student at 24 px instead of 32, images resized, it kept 83.76 % top-1 before any training, where
    interpolating A kept 22.98 % (docs/results.md#inference). `crop_pct` replaces its preprocessing's (the
    eval transform resizes to size / crop_pct, then takes the central size x size window): 0.75 at 24 px of a
    32 px model keeps the central window of the image at its full scale instead of shrinking the whole image."""
    smaller = copy.deepcopy(model)
    smaller.set_input_size(size, method="offset")
    if crop_pct is not None:
        spec = smaller.spec
        smaller.spec = spec.replace(preprocess=dataclasses.replace(spec.preprocess, crop_pct=crop_pct))
    return smaller.eval()
