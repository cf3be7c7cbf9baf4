"""Structured pruning of a ResMLP: whole hidden units, channels and blocks removed, a smaller dense model (real speed).

The paper (section 4.2) finds the learned weights sparse and notes that this "may help model compression". The
channel MLPs hold nearly all of a ResMLP's multiply-adds (D x 4D twice per token against N x N per channel for
A), so removing hidden units of B (rows) and C (the matching columns) shrinks the model where it costs. A unit
is worth what it adds to the residual stream: its mean |activation| on calibration images times the norm of its
column of C scaled by LayerScale, `unit_scores`. Each block keeps the same fraction of its units (`keep`), its
best-scored ones; the result is a ResMLP with per-block hidden widths (`mlp_hidden`) whose kept units compute
exactly what they did. Whole blocks can go too (`drop_blocks`): a block's worth is what the model's predictions
lose without it (`block_scores`); on a small model, where int8's per-block fixed costs (float token mixing,
element-wise ops) weigh as much as the channel MLPs, depth is the cheaper cut. So is the residual stream's width
(`prune_width`): with Aff norms and channel-wise token mixing a channel of the stream is a separate scalar path,
scored by what the predictions lose with it held at zero (`channel_scores`), and its removal cuts every per-block
cost. After pruning, each block's B and C are refitted by least squares to what the unpruned block computed
(`refit_channel_mlps`), the reconstruction step of channel pruning. Fewer patches cut every block at once
(`at_size`: smaller images, the same patch size). `resmlp compress` (train/compress.py) then recovers accuracy by
distillation.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from typing import Callable, ContextManager, Iterable, Iterator, Optional

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
def _kl_without(
    model: nn.Module, images: torch.Tensor, parts: int, without: Callable[[int], ContextManager], batch: int
) -> torch.Tensor:
    """Per part i < `parts`, the mean KL divergence from the model's predictions on `images` to its predictions
    while `without(i)` (a context manager that takes part i out of the model, and puts it back) is in effect."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    chunks = [c.to(device) for c in images.split(batch)]
    reference = [model(c).float().log_softmax(-1) for c in chunks]
    scores = torch.zeros(parts, dtype=torch.float64)
    try:
        for i in range(parts):
            with without(i):
                for ref, chunk in zip(reference, chunks):
                    out = model(chunk).float().log_softmax(-1)
                    scores[i] += (ref.exp() * (ref - out)).sum().double().cpu()
    finally:
        model.train(was_training)
    return (scores / max(len(images), 1)).float()


def block_scores(model: nn.Module, images: torch.Tensor, *, batch: int = 64) -> torch.Tensor:
    """Per block, the mean KL divergence from the model's predictions on `images` to those of the same model with
    that block skipped (its residual branches removed): what the predictions lose without it."""
    _check_prunable(model)

    @contextlib.contextmanager
    def skipped(i: int) -> Iterator[None]:
        block = model.blocks[i]
        block.forward = lambda x: x  # the block as the identity: x + 0 + 0 (an instance attribute, deleted below)
        try:
            yield
        finally:
            del block.forward

    return _kl_without(model, images, len(model.blocks), skipped, batch)


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


def keep_units(model: nn.Module, keep: float, images: torch.Tensor) -> list[torch.Tensor]:
    """Per block, the round(keep * hidden) hidden units (at least one) of ResMLP `model`'s channel MLP that score
    best by `unit_scores` on `images`, in order."""
    if not 0.0 < keep <= 1.0:
        raise ValueError(f"keep: expected a fraction of the hidden units in (0, 1], got {keep}")
    return [s.topk(max(1, round(keep * len(s)))).indices.sort().values for s in unit_scores(model, images)]


def prune_channel_mlps(model: nn.Module, keep: float, images: torch.Tensor) -> nn.Module:
    """A copy of ResMLP `model` whose every channel MLP keeps round(keep * hidden) of its hidden units (at least
    one), the best by `unit_scores` on `images`; `spec` (preprocessing, classes) carried over, eval mode."""
    return prune_units(model, keep_units(model, keep, images))


def prune_units(model: nn.Module, kept: list[torch.Tensor]) -> nn.Module:
    """A copy of ResMLP `model` whose channel MLP in block i keeps only hidden units `kept[i]` (`keep_units`): those
    rows of B and columns of C; `spec` (preprocessing, classes) carried over, eval mode."""
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


CHANNELWISE_MIXINGS = ("linear", "mlp", "conv3x3_depthwise", "none")  # token mixings that keep channels apart


def _check_width_prunable(model: nn.Module) -> None:
    _check_prunable(model)
    norms = [model.norm] + [n for b in model.blocks for n in (b.norm1, b.norm2)]
    if any(type(n).__name__ != "Affine" for n in norms):
        raise ValueError("width pruning takes a ResMLP with Aff norms (norm=affine): a channel statistic ties channels")
    mixing = {getattr(b, "token_mixing", None) for b in model.blocks}
    if not mixing <= set(CHANNELWISE_MIXINGS):
        raise ValueError(
            "width pruning takes a ResMLP with a token mixing that keeps channels apart "
            f"({', '.join(CHANNELWISE_MIXINGS)}); got {', '.join(sorted(map(str, mixing)))}"
        )


@contextlib.contextmanager
def _silenced(model: nn.Module, c: int) -> Iterator[None]:
    """Residual channel `c` held at zero everywhere (the stem writes 0 to it, no block writes to it), then restored."""
    params = [model.stem.proj.weight, model.stem.proj.bias] + [p for b in model.blocks for p in (b.ls1, b.ls2)]
    saved = [p.data[c].clone() for p in params]
    for p in params:
        p.data[c] = 0
    try:
        yield
    finally:
        for p, v in zip(params, saved):
            p.data[c] = v


@torch.no_grad()
def channel_scores(model: nn.Module, images: torch.Tensor, *, batch: int = 64) -> torch.Tensor:
    """Per channel of the residual stream, the mean KL divergence from the model's predictions on `images` to those
    of the same model with that channel held at zero through every block: what the predictions lose without it.
    With Aff norms and channel-wise token mixing, that is exactly the model `prune_width` builds without it."""
    _check_width_prunable(model)
    return _kl_without(model, images, model.stem.proj.out_channels, lambda c: _silenced(model, c), batch)


def keep_channels(model: nn.Module, keep: float, images: torch.Tensor) -> torch.Tensor:
    """The round(keep * D) residual channels of ResMLP `model` whose removal costs the most by `channel_scores` on
    `images`, in order."""
    if not 0.0 < keep <= 1.0:
        raise ValueError(f"width: expected a fraction of the residual channels in (0, 1], got {keep}")
    scores = channel_scores(model, images)
    return scores.topk(max(1, round(keep * len(scores)))).indices.sort().values


def prune_width(model: nn.Module, kept: torch.Tensor) -> nn.Module:
    """A copy of ResMLP `model` whose residual stream keeps only channels `kept` (`keep_channels`): the stem's
    filters, every Aff, LayerScale and depthwise filter of those channels, their columns of B and of the head, their
    rows of C. A removed channel's Aff shift (beta) still reaches B and the head as a constant: it is folded into
    their biases, so the smaller model computes exactly what the original did with those channels held at zero.
    Hidden widths and `spec` carried over, eval mode."""
    _check_width_prunable(model)
    dim = model.stem.proj.out_channels
    kept = kept.cpu()
    gone = torch.tensor(sorted(set(range(dim)) - set(kept.tolist())), dtype=torch.long)
    spec = spec_of(model)
    widths = [b.mlp_channels.fc1.out_features for b in model.blocks]
    smaller = spec.replace(args={**spec.args, "embed_dim": len(kept), "mlp_hidden": widths}).build()
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    out = {}
    for k, v in state.items():
        name = k.rsplit(".", 1)[-1]
        mlp = ".mlp_channels." in k
        if (mlp and k.endswith("fc1.weight")) or k == "head.weight":
            out[k] = v[:, kept]
        elif k.endswith(("norm1.alpha", "norm1.beta", "norm2.alpha", "norm2.beta")) or k in ("norm.alpha", "norm.beta"):
            out[k] = v[..., kept]
        elif k.startswith("stem.") or name in ("ls1", "ls2") or ".conv_tokens.conv." in k or (mlp and ".fc2." in k):
            out[k] = v[kept]
        elif mlp and k.endswith("fc1.bias"):
            beta = state[k.replace("mlp_channels.fc1.bias", "norm2.beta")].flatten()
            out[k] = v + state[k.replace("bias", "weight")][:, gone] @ beta[gone]
        elif k == "head.bias":
            out[k] = v + state["head.weight"][:, gone] @ state["norm.beta"].flatten()[gone]
        else:
            out[k] = v
    smaller.load_state_dict(out)
    return smaller.to(next(model.parameters()).device).eval()


def _ridge_fit(layer: nn.Linear, pairs: Iterable[tuple[torch.Tensor, torch.Tensor]], ridge: float) -> None:
    """Set `layer`'s weight and bias to the least-squares map from the inputs to the targets in `pairs` (rows of
    both), with a Tikhonov term `ridge` times the mean diagonal of the normal equations."""
    n = layer.in_features
    gram = torch.zeros(n + 1, n + 1, dtype=torch.float64)
    cross = torch.zeros(n + 1, layer.out_features, dtype=torch.float64)
    for inputs, targets in pairs:
        x = inputs.reshape(-1, n).double().cpu()
        x = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1)
        gram += x.T @ x
        cross += x.T @ targets.reshape(len(x), -1).double().cpu()
    gram += torch.eye(n + 1, dtype=gram.dtype) * ridge * gram.diagonal().mean()
    solution = torch.linalg.solve(gram, cross)  # (n + 1, out): the bias as a constant input
    layer.weight.copy_(solution[:n].T.to(layer.weight))
    layer.bias.copy_(solution[n].to(layer.bias))


@torch.no_grad()
def refit_channel_mlps(
    pruned: nn.Module,
    reference: nn.Module,
    images: torch.Tensor,
    *,
    channels: Optional[torch.Tensor] = None,
    units: Optional[list[torch.Tensor]] = None,
    batch: int = 64,
    ridge: float = 1e-3,
) -> nn.Module:
    """Refit the channel MLPs of `pruned` (pruned from `reference`, the same blocks) by least squares, block after
    block, so that on the inputs the pruned model now gives them they reproduce what `reference`'s MLPs computed on
    their own inputs (the reconstruction step of channel pruning: He et al. 2017, Luo et al. 2017): with `units` (per
    block, the hidden units kept: `keep_units`), first B (fc1) to the kept units' pre-activations; then C (fc2)
    to what the whole MLP wrote to the residual stream. `channels`: the residual channels `pruned` kept
    (`prune_width`), None for all. `ridge` is the Tikhonov term relative to the mean diagonal of the normal
    equations. In place; returns `pruned`."""
    _check_prunable(pruned)
    if len(pruned.blocks) != len(reference.blocks):
        raise ValueError(f"refit: {len(pruned.blocks)} pruned blocks against {len(reference.blocks)} reference blocks")
    was = pruned.training, reference.training
    pruned.eval()
    reference.eval()
    device = next(pruned.parameters()).device
    chunks = images.split(batch)

    def captured(small: nn.Module, full: nn.Module) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Per chunk: the pruned MLP's input, the reference MLP's input and its output."""
        seen: dict[str, torch.Tensor] = {}
        hooks = [
            small.register_forward_hook(lambda _m, inp, _out: seen.__setitem__("z", inp[0])),
            full.register_forward_hook(lambda _m, inp, out: seen.update(ref=inp[0], y=out)),
        ]
        try:
            for chunk in chunks:
                pruned(chunk.to(device))
                reference(chunk.to(device))
                yield seen["z"], seen["ref"], seen["y"]
        finally:
            for hook in hooks:
                hook.remove()

    try:
        for i, (small, full) in enumerate(zip(pruned.blocks, reference.blocks)):
            mlp, ref = small.mlp_channels, full.mlp_channels
            if units is not None:
                kept = units[i].to(device)
                _ridge_fit(mlp.fc1, ((z, ref.fc1(r)[..., kept]) for z, r, _ in captured(mlp, ref)), ridge)
            kept_channels = slice(None) if channels is None else channels.to(device)
            wrote = ((mlp.act(mlp.fc1(z)), y[..., kept_channels]) for z, _, y in captured(mlp, ref))
            _ridge_fit(mlp.fc2, wrote, ridge)
    finally:
        pruned.train(was[0])
        reference.train(was[1])
    return pruned


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
