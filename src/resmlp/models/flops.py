"""Count multiply-adds (the paper's "FLOPs") of a forward pass by observing the layers that run."""

from __future__ import annotations

import torch
from torch import nn


def count_macs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-adds of one forward pass on an input of `input_shape` (batch included, e.g. (1, 3, 224, 224)).

    Counts Linear and Conv2d layers, which is what the ResMLP/Mixer papers report; element-wise work
    (Aff, GELU, residual adds, pooling) is a rounding error next to them and is not counted.
    A model built under `torch.device("meta")` is counted without doing any arithmetic.
    """
    total = 0

    def linear_hook(module: nn.Linear, inputs: tuple[torch.Tensor], output: torch.Tensor) -> None:
        nonlocal total
        total += inputs[0].numel() // module.in_features * module.in_features * module.out_features

    def conv_hook(module: nn.Conv2d, inputs: tuple[torch.Tensor], output: torch.Tensor) -> None:
        nonlocal total
        kh, kw = module.kernel_size
        total += output.numel() * (module.in_channels // module.groups) * kh * kw

    handles = []
    for m in model.modules():
        if isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
        elif isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
    was_training = model.training
    try:
        model.eval()
        param = next(model.parameters())
        with torch.no_grad():
            model(torch.zeros(input_shape, dtype=param.dtype, device=param.device))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return total


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
