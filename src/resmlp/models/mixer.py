"""MLP-Mixer (Tolstikhin et al. 2021), the comparison baseline, sharing ResMLP's stem, pooling and head.

Each block is pre-norm with LayerNorm (eps 1e-6):
    U = X + MLP_tokens(LN(X)^T)^T      # token mixing: an MLP over N, hidden = token_mlp_ratio * D
    Y = U + MLP_channels(LN(U))        # channel mixing: an MLP over D, hidden = mlp_ratio * D
Module names follow timm: norm1, mlp_tokens.{fc1,fc2}, norm2, mlp_channels.{fc1,fc2}.
"""

from __future__ import annotations

import torch
from torch import nn

from .backbone import PatchClassifier
from .layers import DropPath, Mlp


class MixerBlock(nn.Module):
    def __init__(
        self,
        *,
        dim: int,
        num_patches: int,
        token_mlp_ratio: float = 0.5,
        mlp_ratio: float = 4.0,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp_tokens = Mlp(num_patches, int(dim * token_mlp_ratio))
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp_channels = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm1(x).transpose(1, 2)  # (B, N, D) -> (B, D, N)
        y = self.mlp_tokens(y).transpose(1, 2)  # (B, D, N) -> (B, N, D)
        x = x + self.drop_path(y)
        x = x + self.drop_path(self.mlp_channels(self.norm2(x)))
        return x


class MlpMixer(PatchClassifier):
    """MLP-Mixer classifier. Init: Xavier-uniform Linear weights and zero biases as in the original
    JAX code, except the head, which gets truncated-normal(0.02) so gradients reach the body at step 0."""

    def __init__(
        self,
        *,
        img_size: int = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        num_classes: int = 1000,
        embed_dim: int = 512,
        depth: int = 8,
        token_mlp_ratio: float = 0.5,
        mlp_ratio: float = 4.0,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__(
            img_size=img_size, patch_size=patch_size, in_chans=in_chans, num_classes=num_classes, embed_dim=embed_dim
        )
        self.blocks = nn.ModuleList(
            MixerBlock(
                dim=embed_dim,
                num_patches=self.num_patches,
                token_mlp_ratio=token_mlp_ratio,
                mlp_ratio=mlp_ratio,
                drop_path=drop_path_rate,
            )
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        for name, m in self.named_modules():
            if isinstance(m, nn.Linear) and name != "head":
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        if isinstance(self.head, nn.Linear):
            nn.init.trunc_normal_(self.head.weight, std=0.02)
            nn.init.zeros_(self.head.bias)
