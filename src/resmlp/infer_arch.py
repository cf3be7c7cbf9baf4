"""Recover the architecture of a bare state dict from its tensor shapes.

Read from a timm-layout state dict (convert deit weights first):
    stem.proj.weight                (D, C, p, p)  -> embed_dim, in_chans, patch_size
    blocks.<i>.*                    count         -> depth
    blocks.0.linear_tokens.weight   (N, N)        -> ResMLP, img_size = sqrt(N) * p
    blocks.0.mlp_tokens.fc1.weight  (H_tok, N)    -> MLP-Mixer, token_mlp_ratio = H_tok / D
    blocks.0.mlp_channels.fc1       (H, D)        -> mlp_ratio = H / D
    head.weight                     (K, D)        -> num_classes (0 when there is no head)
The result is the registered variant with the same body plus the overrides that differ from it.
"""
from __future__ import annotations

import math
import re
from typing import Any, Mapping

import torch
from torch import nn

from .models import VARIANTS, ModelSpec, create_model, model_args
from .weights import WeightsError

# Arguments that define the body; the others (img_size, num_classes, in_chans) are plain overrides.
_BODY = ("patch_size", "embed_dim", "depth", "mlp_ratio", "token_mlp_ratio")


def shape_args(sd: Mapping[str, torch.Tensor]) -> tuple[str, dict[str, Any]]:
    """(arch, constructor arguments read from shapes) of a timm-layout state dict."""
    if "stem.proj.weight" not in sd:
        raise WeightsError("cannot infer the architecture: no stem.proj.weight (is this a ResMLP/Mixer state dict?)")
    embed_dim, in_chans, patch, patch_w = sd["stem.proj.weight"].shape
    if patch != patch_w:
        raise WeightsError(f"cannot infer the architecture: non-square patches {patch}x{patch_w}")
    blocks = {int(m.group(1)) for k in sd if (m := re.match(r"blocks\.(\d+)\.", k))}
    if not blocks:
        raise WeightsError("cannot infer the architecture: the state dict has no blocks.<i>.* tensors")
    args: dict[str, Any] = dict(patch_size=patch, embed_dim=embed_dim, in_chans=in_chans, depth=max(blocks) + 1)
    if "blocks.0.linear_tokens.weight" in sd:
        arch, num_patches = "resmlp", sd["blocks.0.linear_tokens.weight"].shape[0]
    elif "blocks.0.mlp_tokens.fc1.weight" in sd:
        arch = "mixer"
        hidden, num_patches = sd["blocks.0.mlp_tokens.fc1.weight"].shape
        args["token_mlp_ratio"] = hidden / embed_dim
    else:
        raise WeightsError("cannot infer the architecture: blocks.0 has neither linear_tokens (ResMLP) "
                           "nor mlp_tokens (MLP-Mixer)")
    grid = math.isqrt(num_patches)
    if grid * grid != num_patches:
        raise WeightsError(f"cannot infer img_size: {num_patches} tokens is not a square grid")
    args["img_size"] = grid * patch
    args["mlp_ratio"] = sd["blocks.0.mlp_channels.fc1.weight"].shape[0] / embed_dim
    args["num_classes"] = sd["head.weight"].shape[0] if "head.weight" in sd else 0
    return arch, args


def infer_architecture(sd: Mapping[str, torch.Tensor]) -> tuple[str, dict[str, Any]]:
    """(model_name, overrides) such that `create_model(model_name, **overrides)` fits `sd`.

    Prefers a registered variant with the same body (patch, width, depth, MLP ratios) and, among those,
    the same img_size / num_classes, so that the overrides are as few as possible.
    """
    arch, found = shape_args(sd)
    best: tuple[int, str, dict[str, Any]] | None = None
    for name in sorted(VARIANTS):
        if VARIANTS[name].arch != arch:
            continue
        _, full = model_args(name)
        body_mismatch = [k for k in _BODY if k in found and not math.isclose(full[k], found[k])]
        overrides = {k: v for k, v in found.items() if k not in _BODY and full.get(k) != v}
        cost = 100 * len(body_mismatch) + len(overrides)  # a body difference outweighs any plain override
        if best is None or cost < best[0]:
            overrides.update({k: found[k] for k in body_mismatch})
            best = (cost, name, overrides)
    assert best is not None  # every arch has registered variants
    return best[1], best[2]


def spec_of(model: nn.Module) -> ModelSpec:
    """`model.spec`, or for a model built by hand (no spec) the registered variant its shapes match."""
    spec = getattr(model, "spec", None)
    if spec is not None:
        return spec
    name, overrides = infer_architecture(model.state_dict())
    with torch.device("meta"):  # only the spec is wanted, not the weights
        return create_model(name, **overrides).spec
