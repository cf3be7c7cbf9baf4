"""What ResMLP and MLP-Mixer share: patch stem -> residual blocks -> final norm -> average pool -> head,
and the backbone seams timm users expect (intermediate feature maps, pruning, activation checkpointing)."""

from __future__ import annotations

import dataclasses
from typing import Sequence, Union

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .layers import PatchStem, to_pair
from .resample import DEFAULT_METHOD, resample_model_

Indices = Union[int, Sequence[int], None]


def take_indices(depth: int, indices: Indices) -> list[int]:
    """Block indices to return: None = all, an int n = the last n blocks, a sequence = those blocks
    (negative ones count from the end, as in Python). ValueError names an index out of range."""
    if indices is None:
        return list(range(depth))
    if isinstance(indices, int):
        if not 0 < indices <= depth:
            raise ValueError(f"indices={indices}: ask for between 1 and {depth} last blocks")
        return list(range(depth - indices, depth))
    out = []
    for i in indices:
        if not -depth <= int(i) < depth:
            raise ValueError(f"block index {i} out of range for a model with {depth} blocks")
        out.append(int(i) % depth)
    return sorted(set(out))


class PatchClassifier(nn.Module):
    """Image classifier over a sequence of patch tokens.

    Subclasses build `blocks` (a ModuleList of (B, N, D) -> (B, N, D) blocks) and `norm`; this class owns
    the stem, pooling and head, and the seams every model exposes (as in timm):
    `forward_features(x) -> (B, N, D)`, `forward_head(tokens, pre_logits=False)`, `forward(x)`,
    `forward_intermediates(x, indices=...)`, `prune_intermediate_layers(indices)`, `set_grad_checkpointing()`.
    """

    def __init__(
        self, *, img_size: Union[int, Sequence[int]], patch_size: int, in_chans: int, num_classes: int, embed_dim: int
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.embed_dim = embed_dim
        self.num_features = embed_dim
        self.grad_checkpointing = False
        self.stem = PatchStem(img_size=img_size, patch_size=patch_size, in_chans=in_chans, embed_dim=embed_dim)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()

    @property
    def num_patches(self) -> int:
        return self.stem.num_patches

    @property
    def feature_info(self) -> list[dict]:
        """One entry per block (timm's keys): channels, stride in pixels and module name of its output."""
        return [
            dict(num_chs=self.embed_dim, reduction=self.stem.patch_size, module=f"blocks.{i}", index=i)
            for i in range(len(self.blocks))
        ]

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block's activations in the backward pass instead of storing them: the memory of
        one block's internals instead of all of them, for about one extra forward pass of compute."""
        self.grad_checkpointing = enable

    def _run_block(self, block: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and torch.is_grad_enabled():
            # Non-reentrant checkpointing replays the saved RNG state, so DropPath draws the same masks.
            return checkpoint(block, x, use_reentrant=False)
        return block(x)

    def finish_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """The last block's (B, N, D) tokens -> `forward_features`' output: the final norm (subclasses with a
        pooling stage of their own, ResMLP's class-MLP, run it here)."""
        return self.norm(x)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)  # (B, C, H, W) -> (B, N, D)
        for block in self.blocks:
            x = self._run_block(block, x)
        return self.finish_tokens(x)

    def forward_intermediates(
        self,
        x: torch.Tensor,
        *,
        indices: Indices = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> Union[list[torch.Tensor], tuple[torch.Tensor, list[torch.Tensor]]]:
        """The outputs of the blocks named by `indices` (see `take_indices`), each passed through the final
        norm when `norm`, as (B, D, h, w) maps (`output_fmt="NCHW"`, h = w = img_size / patch_size) or
        (B, N, D) tokens ("NLC"). Returns them alone when `intermediates_only` (then `stop_early` skips
        the blocks after the last one asked for), else (forward_features(x), intermediates)."""
        if output_fmt not in ("NCHW", "NLC"):
            raise ValueError(f"output_fmt={output_fmt!r}: expected 'NCHW' or 'NLC'")
        wanted = take_indices(len(self.blocks), indices)
        last = wanted[-1] if (stop_early or intermediates_only) and wanted else len(self.blocks) - 1
        x = self.stem(x)  # (B, C, H, W) -> (B, N, D)
        out = []
        for i, block in enumerate(self.blocks):
            if i > last:
                break
            x = self._run_block(block, x)
            if i in wanted:
                out.append(self.norm(x) if norm else x)
        if output_fmt == "NCHW":
            g = self.stem.grid_size
            out = [y.transpose(1, 2).reshape(y.shape[0], -1, g, g) for y in out]  # (B, N, D) -> (B, D, h, w)
        if intermediates_only:
            return out
        return self.finish_tokens(x), out

    def prune_intermediate_layers(
        self, indices: Indices = 1, *, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """Drop the blocks after the last of `indices` (and the final norm / head when asked), in place;
        returns the kept block indices to pass to `forward_intermediates`."""
        wanted = take_indices(len(self.blocks), indices)
        self.blocks = self.blocks[: wanted[-1] + 1]
        if prune_norm:
            self.norm = nn.Identity()
        if prune_head:
            self.reset_classifier(0)
        return wanted

    def forward_head(self, tokens: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = tokens.mean(dim=1)  # average pooling over patches: (B, N, D) -> (B, D)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def set_input_size(self, img_size: Union[int, Sequence[int]], *, method: str = DEFAULT_METHOD) -> "PatchClassifier":
        """Take images of `img_size` (an int or (h, w)) from now on, in place (timm's name). The token-mixing
        layers are carried to the new patch grid (`models.resample`, `method` = interp, offset or kernel) from
        the weights as trained, so another size and back gives the model back;
        stem, channel MLPs and head do not depend on the size. `model.spec` follows. Returns the model."""
        h, w = to_pair(img_size)
        patch = self.stem.patch_size
        if h % patch or w % patch:
            raise ValueError(
                f"img_size={img_size} is not divisible by patch_size={patch}; choose img_size as a multiple of {patch}"
            )
        resample_model_(self, (h // patch, w // patch), method=method)
        self.stem.set_img_size((h, w))
        spec = getattr(self, "spec", None)
        if spec is not None:  # a ModelSpec (registry): the one description of the model follows the size
            size = self.stem.img_size
            self.spec = spec.replace(
                args={**spec.args, "img_size": size}, preprocess=dataclasses.replace(spec.preprocess, img_size=size)
            )
        return self

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the head (fine-tuning to a new label set); the new head gets the model's init."""
        self.num_classes = num_classes
        self.head = nn.Linear(self.embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        if isinstance(self.head, nn.Linear):
            nn.init.trunc_normal_(self.head.weight, std=0.02)
            nn.init.zeros_(self.head.bias)


class FeatureMaps(nn.Module):
    """A classifier turned backbone (`create_model(..., features_only=True)`): forward(x) returns the
    (B, D, h, w) maps of the blocks in `out_indices`; `feature_info` describes each (timm's keys:
    num_chs, reduction, module). Blocks after the last one asked for and the head are dropped."""

    def __init__(self, model: PatchClassifier, out_indices: Indices = None, *, norm: bool = False) -> None:
        super().__init__()
        self.out_indices = model.prune_intermediate_layers(out_indices, prune_norm=not norm, prune_head=True)
        self.model = model
        self.norm = norm
        self.feature_info = [model.feature_info[i] for i in self.out_indices]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.model.forward_intermediates(x, indices=self.out_indices, norm=self.norm, intermediates_only=True)
