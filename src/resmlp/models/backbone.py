"""What ResMLP and MLP-Mixer share: patch stem -> residual blocks -> final norm -> average pool -> head."""
from __future__ import annotations

import dataclasses
from typing import Sequence, Union

import torch
from torch import nn

from .layers import PatchStem, to_pair
from .resample import DEFAULT_METHOD, resample_model_


class PatchClassifier(nn.Module):
    """Image classifier over a sequence of patch tokens.

    Subclasses build `blocks` (a ModuleList of (B, N, D) -> (B, N, D) blocks) and `norm`; this class owns
    the stem, pooling and head, and the three seams every model exposes (as in timm):
    `forward_features(x) -> (B, N, D)`, `forward_head(tokens, pre_logits=False)`, `forward(x)`.
    """

    def __init__(self, *, img_size: Union[int, Sequence[int]], patch_size: int, in_chans: int, num_classes: int, embed_dim: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.embed_dim = embed_dim
        self.num_features = embed_dim
        self.stem = PatchStem(img_size=img_size, patch_size=patch_size, in_chans=in_chans, embed_dim=embed_dim)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()

    @property
    def num_patches(self) -> int:
        return self.stem.num_patches

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)  # (B, C, H, W) -> (B, N, D)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def forward_head(self, tokens: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = tokens.mean(dim=1)  # average pooling over patches: (B, N, D) -> (B, D)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def set_input_size(self, img_size: Union[int, Sequence[int]], *, method: str = DEFAULT_METHOD) -> "PatchClassifier":
        """Take images of `img_size` (an int or (h, w)) from now on, in place (timm's name). The token-mixing
        layers are carried to the new patch grid (`models.resample`, `method` = interp, offset or kernel);
        stem, channel MLPs and head do not depend on the size. `model.spec` follows. Returns the model."""
        h, w = to_pair(img_size)
        patch = self.stem.patch_size
        if h % patch or w % patch:
            raise ValueError(f"img_size={img_size} is not divisible by patch_size={patch}; "
                             f"choose img_size as a multiple of {patch}")
        resample_model_(self, (h // patch, w // patch), method=method)
        self.stem.set_img_size((h, w))
        spec = getattr(self, "spec", None)
        if spec is not None:  # a ModelSpec (registry): the one description of the model follows the size
            size = self.stem.img_size
            self.spec = spec.replace(args={**spec.args, "img_size": size},
                                     preprocess=dataclasses.replace(spec.preprocess, img_size=size))
        return self

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the head (fine-tuning to a new label set); the new head gets the model's init."""
        self.num_classes = num_classes
        self.head = nn.Linear(self.embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        if isinstance(self.head, nn.Linear):
            nn.init.trunc_normal_(self.head.weight, std=0.02)
            nn.init.zeros_(self.head.bias)
