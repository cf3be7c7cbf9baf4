"""Recover the architecture of a bare state dict from its tensor shapes.

Read from a timm-layout state dict (convert deit weights first):
    stem.proj.weight                (D, C, p, p)  -> embed_dim, in_chans, patch_size
    blocks.<i>.*                    count         -> depth
    blocks.0.linear_tokens.weight   (N, N)        -> ResMLP, img_size = sqrt(N) * p
    blocks.0.mlp_tokens.fc1.weight  (H_tok, N)    -> MLP-Mixer, token_mlp_ratio = H_tok / D
    blocks.0.mlp_channels.fc1       (H, D)        -> mlp_ratio = H / D
    head.weight                     (K, D)        -> num_classes (0 when there is no head)
ResMLP's ablation options (models.resmlp) are read from key names: blocks.0.ls1 marks ResMLP; mlp_tokens /
conv_tokens.conv (groups from its shape) / conv_tokens.pointwise / no token layer give token_mixing (the
patch count then comes from class_blocks.0.linear_tokens (1, N + 1) when there is one); norm1.alpha /
norm1.weight / norm1.running_mean give norm; cls_token gives class-MLP pooling. The activation leaves no
trace in a state dict: our checkpoints carry it in their spec, a bare state dict is read as GELU.
The result is the registered variant with the same body plus the overrides that differ from it.
"""

from __future__ import annotations

import math
import re
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from .models import VARIANTS, ModelSpec, Preprocess, create_model, model_args
from .weights import WeightsError

# Arguments that define the body; the others (img_size, num_classes, in_chans) are plain overrides.
_BODY = ("patch_size", "embed_dim", "depth", "mlp_ratio", "token_mlp_ratio", "norm", "token_mixing", "pooling")


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
    if "blocks.0.ls1" in sd or "blocks.0.linear_tokens.weight" in sd:
        arch = "resmlp"
        args.update(resmlp_options(sd))
        num_patches = resmlp_num_patches(sd)
    elif "blocks.0.mlp_tokens.fc1.weight" in sd:
        arch = "mixer"
        hidden, num_patches = sd["blocks.0.mlp_tokens.fc1.weight"].shape
        args["token_mlp_ratio"] = hidden / embed_dim
    else:
        raise WeightsError(
            "cannot infer the architecture: blocks.0 has neither linear_tokens (ResMLP) nor mlp_tokens (MLP-Mixer)"
        )
    if num_patches is not None:  # else (conv / no token mixing, average pooling) the size is not in the shapes
        grid = math.isqrt(num_patches)
        if grid * grid != num_patches:
            raise WeightsError(f"cannot infer img_size: {num_patches} tokens is not a square grid")
        args["img_size"] = grid * patch
    args["mlp_ratio"] = sd["blocks.0.mlp_channels.fc1.weight"].shape[0] / embed_dim
    widths = [sd[key].shape[0] for i in range(args["depth"]) if (key := f"blocks.{i}.mlp_channels.fc1.weight") in sd]
    ratio_misses = int(embed_dim * args["mlp_ratio"]) != widths[0]  # float rounding: 100 / 192 * 192 -> 99.99
    if arch == "resmlp" and (len(set(widths)) > 1 or ratio_misses):  # compressed: each block its own width
        args["mlp_hidden"] = widths
        del args["mlp_ratio"]  # no ratio describes it; the variant's stays (mlp_hidden takes precedence)
    args["num_classes"] = sd["head.weight"].shape[0] if "head.weight" in sd else 0
    return arch, args


def resmlp_options(sd: Mapping[str, torch.Tensor]) -> dict[str, str]:
    """norm, token_mixing and pooling of a ResMLP state dict, read from its key names (see module doc)."""
    if "blocks.0.norm1.alpha" in sd:
        norm = "affine"
    else:
        norm = "batchnorm" if "blocks.0.norm1.running_mean" in sd else "layernorm"
    if "blocks.0.linear_tokens.weight" in sd:
        mixing = "linear"
    elif "blocks.0.mlp_tokens.fc1.weight" in sd:
        mixing = "mlp"
    elif "blocks.0.conv_tokens.pointwise.weight" in sd:
        mixing = "conv3x3_separable"
    elif "blocks.0.conv_tokens.conv.weight" in sd:
        mixing = "conv3x3_depthwise" if sd["blocks.0.conv_tokens.conv.weight"].shape[1] == 1 else "conv3x3"
    else:
        mixing = "none"
    return {"norm": norm, "token_mixing": mixing, "pooling": "class_mlp" if "cls_token" in sd else "avg"}


def resmlp_num_patches(sd: Mapping[str, torch.Tensor]) -> int | None:
    """N, from A (N, N), the token MLP's fc1 (4N, N) or the class-MLP row (1, N + 1); None when no shape has it."""
    for key, index, offset in (
        ("blocks.0.linear_tokens.weight", 1, 0),
        ("blocks.0.mlp_tokens.fc1.weight", 1, 0),
        ("class_blocks.0.linear_tokens.weight", 1, -1),
    ):
        if key in sd:
            return sd[key].shape[index] + offset
    return None


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
        body_mismatch = [
            k
            for k in _BODY
            if k in found
            and not (full[k] == found[k] if isinstance(found[k], str) else math.isclose(full[k], found[k]))
        ]
        overrides = {k: v for k, v in found.items() if k not in _BODY and full.get(k) != v}
        cost = 100 * len(body_mismatch) + len(overrides)  # a body difference outweighs any plain override
        if best is None or cost < best[0]:
            overrides.update({k: found[k] for k in body_mismatch})
            best = (cost, name, overrides)
    assert best is not None  # every arch has registered variants
    return best[1], best[2]


def spec_of(
    model: nn.Module, *, preprocess: Preprocess | None = None, classes: Sequence[str] | None = None
) -> ModelSpec:
    """`model.spec`, or for a model built by hand (no spec) the registered variant its shapes match;
    `preprocess` / `classes`, when given, replace its own. The one spec a checkpoint (`model_record`) or an
    export (`resmlp.hub.packaged_config`) records a model with."""
    spec = getattr(model, "spec", None)
    if spec is None:
        name, overrides = infer_architecture(model.state_dict())
        with torch.device("meta"):  # only the spec is wanted, not the weights
            spec = create_model(name, **overrides).spec
    if preprocess is not None:
        spec = spec.replace(preprocess=preprocess)
    if classes is not None:
        spec = spec.replace(classes=classes)
    return spec
