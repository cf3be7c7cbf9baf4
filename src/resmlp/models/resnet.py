"""CIFAR ResNet (He et al. 2016, section 4.2): the convnet teacher family for distillation.

conv3x3(16) -> 3 stages of `n` BasicBlocks with 16/32/64 x `width` channels (stride 2 between stages)
-> global average pool -> Linear. depth = 6n + 2 (resnet20: n = 3, resnet56: n = 9). Shortcuts that
change shape are 1x1 convolutions (the paper's option B). It exposes the same seams as ResMLP:
`forward_features` returns the final feature map as (B, N, C) tokens, `forward_head` pools them.
"""

from __future__ import annotations

import torch
from torch import nn

from .layers import DropPath


class BasicBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int, drop_path: float) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.act = nn.ReLU(inplace=True)
        self.shortcut = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch)
            )
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.act(self.shortcut(x) + self.drop_path(y))


class CifarResNet(nn.Module):
    channels_last = True  # NHWC activations: faster convs (oneDNN, cuDNN); see device.place

    def __init__(
        self,
        *,
        img_size: int = 32,
        in_chans: int = 3,
        num_classes: int = 10,
        blocks_per_stage: int = 3,
        width: int = 1,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        chans = [16 * width, 32 * width, 64 * width]
        self.embed_dim = self.num_features = chans[-1]
        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, chans[0], 3, padding=1, bias=False), nn.BatchNorm2d(chans[0]), nn.ReLU(inplace=True)
        )
        layers, in_ch = [], chans[0]
        for i, ch in enumerate(chans):
            for j in range(blocks_per_stage):
                layers.append(BasicBlock(in_ch, ch, 2 if (i > 0 and j == 0) else 1, drop_path_rate))
                in_ch = ch
        self.blocks = nn.Sequential(*layers)
        self.head = nn.Linear(chans[-1], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(x))  # (B, C, H/4, W/4)
        return x.flatten(2).transpose(1, 2)  # (B, C, h, w) -> (B, N, C)

    def forward_head(self, tokens: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = tokens.mean(dim=1)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.head = nn.Linear(self.embed_dim, num_classes)
