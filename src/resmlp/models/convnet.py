"""A fast CIFAR conv net: the teacher that gets strong within minutes (issue 11, distillation in the hour).

The shape of the fast-CIFAR speedrun nets (Page 2018; the airbench nets of Jordan 2024): a 2 x 2 conv stem
without padding (`stem.proj`, which `models.whiten` can initialise from whitened training patches), then
three conv groups, each conv3x3 -> max-pool 2 -> BatchNorm -> GELU -> conv3x3 -> BatchNorm -> GELU, a global
max pool and a linear head whose logits are scaled by `logit_scale` (1/8, as in those nets: a fixed
temperature that keeps the early softmax soft). Channels: 16/64/64 x `width` (width 4 is airbench94's
64/256/256). No residual branches, so no drop path. The airbench levers of the net itself are options:
`batchnorm_scale=False` keeps every BatchNorm's scale at 1 (only its shift trains), `batchnorm_momentum` is
PyTorch's (the weight of each new batch in the running statistics), `conv_init="dirac"` starts each conv as
the identity on its first `in` output channels (the rest keep the Kaiming init). It exposes the seams of the
other models: `forward_features` gives the last map as (B, N, C) tokens, `forward_head` pools them. Global
pooling takes any input of at least 16 x 16 (`img_size` is recorded in the model's spec, not built into the
layers).
"""

from __future__ import annotations

import torch
from torch import nn

CONV_INITS = ("kaiming", "dirac")


def batch_norm(channels: int, *, momentum: float, scale: bool) -> nn.BatchNorm2d:
    """BatchNorm2d whose scale (weight) trains only when `scale`; frozen, it stays 1."""
    bn = nn.BatchNorm2d(channels, momentum=momentum)
    bn.weight.requires_grad_(scale)
    return bn


class ConvGroup(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, *, bn_momentum: float = 0.1, bn_scale: bool = True) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False)
        self.pool = nn.MaxPool2d(2)
        self.bn1 = batch_norm(out_ch, momentum=bn_momentum, scale=bn_scale)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False)
        self.bn2 = batch_norm(out_ch, momentum=bn_momentum, scale=bn_scale)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.bn1(self.pool(self.conv1(x))))
        return self.act(self.bn2(self.conv2(x)))


class ConvStem(nn.Module):
    """2 x 2 conv (stride 1, no padding) + GELU: 32 x 32 images -> 31 x 31 maps."""

    def __init__(self, in_chans: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, 2)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.proj(x))


class CifarConvNet(nn.Module):
    # NHWC activations: oneDNN (CPU) and cuDNN run these convs faster that way; the training loop and the
    # distillation teacher place the model accordingly (device.place).
    channels_last = True

    def __init__(
        self,
        *,
        img_size: int = 32,
        in_chans: int = 3,
        num_classes: int = 10,
        width: int = 2,
        stem_dim: int = 24,
        logit_scale: float = 0.125,
        drop_path_rate: float = 0.0,
        batchnorm_momentum: float = 0.1,
        batchnorm_scale: bool = True,
        conv_init: str = "kaiming",
    ) -> None:
        super().__init__()
        if drop_path_rate:
            raise ValueError(f"drop_path_rate: the conv net has no residual branches to drop, got {drop_path_rate}")
        if conv_init not in CONV_INITS:
            raise ValueError(f"conv_init: expected one of {', '.join(CONV_INITS)}, got {conv_init!r}")
        if not 0.0 < batchnorm_momentum <= 1.0:
            raise ValueError(f"batchnorm_momentum: expected a value in (0, 1], got {batchnorm_momentum}")
        self.num_classes, self.logit_scale = num_classes, logit_scale
        chans = [16 * width, 64 * width, 64 * width]
        self.embed_dim = self.num_features = chans[-1]
        self.stem = ConvStem(in_chans, stem_dim)
        self.blocks = nn.Sequential(
            *[
                ConvGroup(a, b, bn_momentum=batchnorm_momentum, bn_scale=batchnorm_scale)
                for a, b in zip([stem_dim] + chans[:-1], chans)
            ]
        )
        self.head = nn.Linear(chans[-1], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d) and m is not self.stem.proj:
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if conv_init == "dirac":  # the first in_channels filters pass their input through unchanged
                    nn.init.dirac_(m.weight.data[: m.in_channels])

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(x))  # (B, C, h, w): 32 x 32 -> 3 x 3
        return x.flatten(2).transpose(1, 2)  # (B, N, C)

    def forward_head(self, tokens: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = tokens.amax(dim=1)  # global max pool
        return x if pre_logits else self.head(x) * self.logit_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.head = nn.Linear(self.embed_dim, num_classes)
