"""ResMLP (Touvron et al. 2021, "ResMLP: Feedforward networks for image classification with
data-efficient training"), section 2, read top to bottom.

Each residual block applies, with Z the (B, N, D) token matrix:
    Z = X + LayerScale_1 * (A @ Aff_1(X))           # cross-patch sublayer, eq. (2): A is N x N
    Y = Z + LayerScale_2 * C GELU(B Aff_2(Z))       # cross-channel sublayer, eq. (3): B is D -> 4D, C is 4D -> D
The same N x N matrix A is shared by all D channels. Module names follow timm's checkpoints:
norm1 = Aff_1, linear_tokens = A, ls1 = LayerScale_1, norm2 = Aff_2, mlp_channels.fc1 = B,
mlp_channels.fc2 = C, ls2 = LayerScale_2.

The paper's ablations (Table 3, Appendix A) are options of the same model; the defaults are the paper's
ResMLP and keep its state-dict keys and parameter counts:
    norm          affine | layernorm | batchnorm            what Aff_1, Aff_2 and the final Aff are
    token_mixing  linear (A) | mlp (N -> 4N -> N) | conv3x3 (D -> D) | conv3x3_depthwise |
                  conv3x3_separable (depthwise + pointwise) | none (the sublayer keeps only Aff and LayerScale)
    pooling       avg | class_mlp (CaiT's class-attention stage with attention replaced by a linear layer
                  over the N + 1 tokens that updates only a class token; 2 blocks)
    act           gelu | silu | hardswish | relu            the MLPs' non-linearity
A compressed model (`resmlp compress`: whole hidden units of the channel MLPs removed) gives each block its own
hidden width, `mlp_hidden` (one per block; None: D * mlp_ratio everywhere, the paper's).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .backbone import PatchClassifier
from .layers import ACTIVATIONS, NORMS, DropPath, Mlp, check_choice, make_norm

TOKEN_MIXINGS = ("linear", "mlp", "conv3x3", "conv3x3_depthwise", "conv3x3_separable", "none")
POOLINGS = ("avg", "class_mlp")
CLASS_BLOCKS = 2  # the class-MLP stage's depth (CaiT's class-attention stage has 2 blocks)


class TokenConv(nn.Module):
    """A 3x3 convolution over the h x w patch grid in place of A (Table 3's conv rows).

    conv3x3: one full D -> D conv; conv3x3_depthwise: one 3x3 filter per channel (`groups=D`);
    conv3x3_separable: the depthwise conv followed by a 1x1 D -> D `pointwise` conv.
    """

    def __init__(self, kind: str, *, dim: int, grid: tuple[int, int]) -> None:
        super().__init__()
        self.grid = grid
        groups = 1 if kind == "conv3x3" else dim
        self.conv = nn.Conv2d(dim, dim, kernel_size=3, padding=1, groups=groups)
        self.pointwise = nn.Conv2d(dim, dim, kernel_size=1) if kind == "conv3x3_separable" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        y = x.transpose(1, 2).reshape(b, d, *self.grid)  # (B, N, D) -> (B, D, h, w), tokens row-major
        y = self.conv(y)
        if self.pointwise is not None:
            y = self.pointwise(y)
        return y.flatten(2).transpose(1, 2)  # (B, D, h, w) -> (B, N, D)


class ResMLPBlock(nn.Module):
    def __init__(
        self,
        *,
        dim: int,
        num_patches: int,
        mlp_ratio: float = 4.0,
        mlp_hidden: int | None = None,
        layer_scale_init: float = 1e-4,
        drop_path: float = 0.0,
        grid: tuple[int, int] | None = None,
        norm: str = "affine",
        token_mixing: str = "linear",
        act: str = "gelu",
    ) -> None:
        super().__init__()
        self.token_mixing = check_choice("token_mixing", token_mixing, TOKEN_MIXINGS)
        self.norm1 = make_norm(norm, dim)
        if token_mixing == "linear":
            self.linear_tokens = nn.Linear(num_patches, num_patches)  # A, with one bias per output patch
        elif token_mixing == "mlp":
            self.mlp_tokens = Mlp(num_patches, 4 * num_patches, act)  # over N, like Mixer's token MLP
        elif token_mixing != "none":
            if grid is None or grid[0] * grid[1] != num_patches:
                raise ValueError(
                    f"token_mixing={token_mixing!r} needs the patch grid (h, w) of the {num_patches} "
                    f"tokens, got grid={grid}"
                )
            self.conv_tokens = TokenConv(token_mixing, dim=dim, grid=grid)
        self.ls1 = nn.Parameter(torch.full((dim,), layer_scale_init))
        self.norm2 = make_norm(norm, dim)
        self.mlp_channels = Mlp(dim, mlp_hidden or int(dim * mlp_ratio), act)  # fc1 = B, fc2 = C
        self.ls2 = nn.Parameter(torch.full((dim,), layer_scale_init))
        self.drop_path = DropPath(drop_path)

    def mix_tokens(self, y: torch.Tensor) -> torch.Tensor:
        """The cross-patch map on normalised tokens, (B, N, D) -> (B, N, D), the same for every channel
        (except the full conv, which also mixes channels)."""
        if self.token_mixing == "linear":
            return self.linear_tokens(y.transpose(1, 2)).transpose(1, 2)  # (B, D, N) @ A^T -> back to (B, N, D)
        if self.token_mixing == "mlp":
            return self.mlp_tokens(y.transpose(1, 2)).transpose(1, 2)
        if self.token_mixing == "none":
            return y
        return self.conv_tokens(y)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Cross-patch: mix along N, the same weights for every channel.
        x = x + self.drop_path(self.ls1 * self.mix_tokens(self.norm1(x)))
        # Cross-channel: per-patch MLP along D.
        x = x + self.drop_path(self.ls2 * self.mlp_channels(self.norm2(x)))
        return x


class ClassMlpBlock(nn.Module):
    """Class-MLP pooling block (Table 3): CaiT's class-attention block with the attention replaced by a
    linear layer over the N + 1 tokens; only the class token is updated, the patch tokens are read-only.

        c = c + LayerScale_1 * (w @ Aff_1([c; X]) + b)     # w: 1 x (N + 1), shared by all channels
        c = c + LayerScale_2 * MLP(Aff_2(c))
    """

    def __init__(
        self, *, dim: int, num_patches: int, mlp_ratio: float, layer_scale_init: float, norm: str, act: str
    ) -> None:
        super().__init__()
        self.norm1 = make_norm(norm, dim)
        self.linear_tokens = nn.Linear(num_patches + 1, 1)  # N + 1 tokens -> the class token
        self.ls1 = nn.Parameter(torch.full((dim,), layer_scale_init))
        self.norm2 = make_norm(norm, dim)
        self.mlp_channels = Mlp(dim, int(dim * mlp_ratio), act)
        self.ls2 = nn.Parameter(torch.full((dim,), layer_scale_init))

    def forward(self, cls: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
        tokens = torch.cat([cls, patches], dim=1)  # (B, 1, D) + (B, N, D) -> (B, 1 + N, D)
        y = self.linear_tokens(self.norm1(tokens).transpose(1, 2)).transpose(1, 2)  # (B, D, 1+N) -> (B, 1, D)
        cls = cls + self.ls1 * y
        return cls + self.ls2 * self.mlp_channels(self.norm2(cls))


class ResMLP(PatchClassifier):
    """ResMLP classifier: patch stem, `depth` ResMLP blocks, final Aff, average pooling, linear head.

    Initialisation follows the official code: truncated-normal(0.02) Linear weights, zero biases,
    Aff alpha = 1 and beta = 0, LayerScale = `layer_scale_init` (depth dependent, Table 3 / code).
    `drop_path_rate` is applied uniformly to every block, as in the paper's code. The ablation options
    (`norm`, `token_mixing`, `pooling`, `act`) are described in the module docstring.
    """

    def __init__(
        self,
        *,
        img_size: int = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        num_classes: int = 1000,
        embed_dim: int = 384,
        depth: int = 12,
        mlp_ratio: float = 4.0,
        layer_scale_init: float = 1e-4,
        drop_path_rate: float = 0.0,
        norm: str = "affine",
        token_mixing: str = "linear",
        pooling: str = "avg",
        act: str = "gelu",
        mlp_hidden: Sequence[int] | None = None,
    ) -> None:
        check_choice("norm", norm, NORMS)
        if mlp_hidden is not None and (len(mlp_hidden) != depth or min(mlp_hidden, default=1) < 1):
            raise ValueError(f"mlp_hidden: expected {depth} hidden widths >= 1 (one per block), got {list(mlp_hidden)}")
        check_choice("token_mixing", token_mixing, TOKEN_MIXINGS)
        check_choice("act", act, ACTIVATIONS)
        super().__init__(
            img_size=img_size, patch_size=patch_size, in_chans=in_chans, num_classes=num_classes, embed_dim=embed_dim
        )
        self.pooling = check_choice("pooling", pooling, POOLINGS)
        grid = self.stem.grid_size
        grid = (grid, grid) if isinstance(grid, int) else tuple(grid)
        self.blocks = nn.ModuleList(
            ResMLPBlock(
                dim=embed_dim,
                num_patches=self.num_patches,
                mlp_ratio=mlp_ratio,
                mlp_hidden=None if mlp_hidden is None else int(mlp_hidden[i]),
                layer_scale_init=layer_scale_init,
                drop_path=drop_path_rate,
                grid=grid,
                norm=norm,
                token_mixing=token_mixing,
                act=act,
            )
            for i in range(depth)
        )
        if pooling == "class_mlp":
            self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
            self.class_blocks = nn.ModuleList(
                ClassMlpBlock(
                    dim=embed_dim,
                    num_patches=self.num_patches,
                    mlp_ratio=mlp_ratio,
                    layer_scale_init=layer_scale_init,
                    norm=norm,
                    act=act,
                )
                for _ in range(CLASS_BLOCKS)
            )
            nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.norm = make_norm(norm, embed_dim)
        for name, m in self.named_modules():
            # Linear layers, and the convs that replace A, get trunc-normal(0.02) weights and zero biases;
            # the conv stem keeps PyTorch's default, as in the official code.
            if isinstance(m, nn.Linear) or (isinstance(m, nn.Conv2d) and name != "stem.proj"):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def finish_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """After the blocks: the final norm; with class-MLP pooling first the class stage, and the result is
        (B, 1 + N, D), the class token first."""
        if self.pooling == "class_mlp":
            cls = self.cls_token.expand(x.shape[0], -1, -1)  # (1, 1, D) -> (B, 1, D)
            for block in self.class_blocks:
                cls = block(cls, x)
            x = torch.cat([cls, x], dim=1)  # (B, 1 + N, D)
        return self.norm(x)

    def forward_head(self, tokens: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.pooling == "avg":
            return super().forward_head(tokens, pre_logits)
        x = tokens[:, 0]  # the class token: (B, 1 + N, D) -> (B, D)
        return x if pre_logits else self.head(x)
