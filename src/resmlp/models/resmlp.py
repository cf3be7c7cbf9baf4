"""ResMLP (Touvron et al. 2021, "ResMLP: Feedforward networks for image classification with
data-efficient training"), section 2, read top to bottom.

Each residual block applies, with Z the (B, N, D) token matrix:
    Z = X + LayerScale_1 * (A @ Aff_1(X))           # cross-patch sublayer, eq. (2): A is N x N
    Y = Z + LayerScale_2 * C GELU(B Aff_2(Z))       # cross-channel sublayer, eq. (3): B is D -> 4D, C is 4D -> D
The same N x N matrix A is shared by all D channels. Module names follow timm's checkpoints:
norm1 = Aff_1, linear_tokens = A, ls1 = LayerScale_1, norm2 = Aff_2, mlp_channels.fc1 = B,
mlp_channels.fc2 = C, ls2 = LayerScale_2.
"""
from __future__ import annotations

import torch
from torch import nn

from .backbone import PatchClassifier
from .layers import Affine, DropPath, Mlp


class ResMLPBlock(nn.Module):
    def __init__(
        self, *, dim: int, num_patches: int, mlp_ratio: float = 4.0, layer_scale_init: float = 1e-4,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.norm1 = Affine(dim)
        self.linear_tokens = nn.Linear(num_patches, num_patches)  # A, with one bias per output patch
        self.ls1 = nn.Parameter(torch.full((dim,), layer_scale_init))
        self.norm2 = Affine(dim)
        self.mlp_channels = Mlp(dim, int(dim * mlp_ratio))  # fc1 = B, fc2 = C
        self.ls2 = nn.Parameter(torch.full((dim,), layer_scale_init))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Cross-patch: mix along N, the same weights for every channel.
        y = self.norm1(x).transpose(1, 2)  # (B, N, D) -> (B, D, N)
        y = self.linear_tokens(y).transpose(1, 2)  # (B, D, N) -> (B, N, D)
        x = x + self.drop_path(self.ls1 * y)
        # Cross-channel: per-patch MLP along D.
        x = x + self.drop_path(self.ls2 * self.mlp_channels(self.norm2(x)))
        return x


class ResMLP(PatchClassifier):
    """ResMLP classifier: patch stem, `depth` ResMLP blocks, final Aff, average pooling, linear head.

    Initialisation follows the official code: truncated-normal(0.02) Linear weights, zero biases,
    Aff alpha = 1 and beta = 0, LayerScale = `layer_scale_init` (depth dependent, Table 3 / code).
    `drop_path_rate` is applied uniformly to every block, as in the paper's code.
    """

    def __init__(
        self, *, img_size: int = 224, patch_size: int = 16, in_chans: int = 3, num_classes: int = 1000,
        embed_dim: int = 384, depth: int = 12, mlp_ratio: float = 4.0, layer_scale_init: float = 1e-4,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__(img_size=img_size, patch_size=patch_size, in_chans=in_chans,
                         num_classes=num_classes, embed_dim=embed_dim)
        self.blocks = nn.ModuleList(
            ResMLPBlock(dim=embed_dim, num_patches=self.num_patches, mlp_ratio=mlp_ratio,
                        layer_scale_init=layer_scale_init, drop_path=drop_path_rate)
            for _ in range(depth)
        )
        self.norm = Affine(embed_dim)
        self.apply(_init_resmlp)


def _init_resmlp(m: nn.Module) -> None:
    # Only Linear layers are re-initialised (the official code leaves the conv stem at PyTorch's default).
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        nn.init.zeros_(m.bias)
