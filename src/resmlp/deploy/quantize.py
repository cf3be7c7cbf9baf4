"""Calibrated smoothing of the channel MLPs for int8 (SmoothQuant), the part of int8 this project adds to the
engines that run it (OpenVINO + NNCF: deploy/openvino.py; ONNX Runtime: deploy/onnx.py).

Why int8 loses predictions on ResMLP: the MLP reads the residual stream directly (Aff is folded into fc1, and
there is no normalisation), whose channels differ in range by ~50x after training; GELU outputs feeding fc2 are
just as uneven. A quantised Linear uses one activation scale per tensor, so the largest channels set the step and
small channels round to a few levels.

The remedy, exact in real arithmetic (Xiao et al. 2023, "SmoothQuant"): W x = (W diag(s)) (x / s). With
s_j = max|x_j|^a / max|W_:j|^(1-a), the activations' channel ranges are evened out and the difficulty moves into
the weights, which are quantised per output channel anyway. The strength a is chosen per layer, from a grid, as
the one whose simulated int8 layer (8-bit activations with one scale and zero point per tensor, int8 weights per
output channel) best reproduces the layer on calibration images. Measured: docs/results.md#inference.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

SMOOTHING_STRENGTHS = (0.0, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
MAX_SEARCH_ROWS = 65536  # rows (tokens x images) of one layer's input used to score each strength


class SmoothedLinear(nn.Module):
    """linear(x / s) with the weights already multiplied by s: equal to the original Linear in fp32.

    The float form is what the exporters see (a Mul before the MatMul, which the engines' quantisers then
    quantise).
    """

    def __init__(self, linear: nn.Linear, scale: torch.Tensor) -> None:
        super().__init__()
        self.linear = nn.Linear(linear.in_features, linear.out_features, device=linear.weight.device)
        with torch.no_grad():
            self.linear.weight.copy_(linear.weight * scale)
            self.linear.bias.copy_(linear.bias)
        self.register_buffer("inv_scale", (1.0 / scale).detach().clone())
        self.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x * self.inv_scale)


def channel_mlp_linears(model: nn.Module) -> list[tuple[nn.Module, str, nn.Module]]:
    """(parent, attribute, layer) of every Linear / SmoothedLinear except the head: the fc1/fc2 layers."""
    found = []
    for parent_name, parent in model.named_modules():
        for attr, child in parent.named_children():
            name = f"{parent_name}.{attr}" if parent_name else attr
            if isinstance(child, (nn.Linear, SmoothedLinear)) and name != "head":
                found.append((parent, attr, child))
    return found


def fake_int8(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x rounded to the signed 8-bit grid of step `scale` (broadcast), in float: how weights are quantised."""
    return (x / scale).round().clamp(-127, 127) * scale


def fake_uint8(x: torch.Tensor) -> torch.Tensor:
    """x rounded to the 256 levels spanning its own min..max (zero exactly representable), in float: how an
    activation tensor is quantised with one scale and zero point."""
    lo, hi = x.min().clamp_max(0), x.max().clamp_min(0)
    scale = (hi - lo).clamp_min(1e-12) / 255
    zero = (-lo / scale).round()
    return ((x / scale).round() + zero).clamp(0, 255).sub(zero) * scale


def _int8_error(layer: nn.Linear, x: torch.Tensor, want: torch.Tensor, scale: torch.Tensor | None) -> float:
    """Relative mean squared error of `layer` (smoothed by `scale`) with 8-bit inputs (one scale and zero point
    for the tensor) and int8 weights (one scale per output channel), simulated in float on inputs x."""
    weight = layer.weight if scale is None else layer.weight * scale
    x = x if scale is None else x / scale
    w_q = fake_int8(weight, weight.abs().amax(1, keepdim=True).clamp_min(1e-12) / 127)
    got = F.linear(fake_uint8(x), w_q, layer.bias)
    return ((got - want).pow(2).mean() / want.pow(2).mean().clamp_min(1e-12)).item()


def smoothing_scale(x_absmax: torch.Tensor, weight: torch.Tensor, strength: float) -> torch.Tensor:
    """s_j = max|x_j|^a / max|W_:j|^(1-a), clamped away from zero (a = strength)."""
    w_absmax = weight.abs().amax(0).clamp_min(1e-5)
    return (x_absmax.clamp_min(1e-5).pow(strength) / w_absmax.pow(1 - strength)).clamp_min(1e-5)


def choose_smoothing(
    layer: nn.Linear, x: torch.Tensor, *, strengths=SMOOTHING_STRENGTHS
) -> tuple[float, torch.Tensor | None, dict[float, float]]:
    """The strength (0 = no smoothing) whose int8 layer best reproduces `layer` on the rows of x."""
    x = x.reshape(-1, x.shape[-1]).float()
    absmax = x.abs().amax(0)
    if x.shape[0] > MAX_SEARCH_ROWS:
        x = x[:: -(-x.shape[0] // MAX_SEARCH_ROWS)]
    want = F.linear(x, layer.weight, layer.bias)
    errors, scales = {}, {}
    for a in strengths:
        scales[a] = None if a == 0 else smoothing_scale(absmax, layer.weight, a)
        errors[a] = _int8_error(layer, x, want, scales[a])
    best = min(errors, key=errors.get)
    return best, scales[best], errors


def smooth(
    model: nn.Module, calibration: torch.Tensor, *, strengths=SMOOTHING_STRENGTHS
) -> tuple[nn.Module, dict[str, float]]:
    """A copy of the fused `model` whose channel-MLP Linears are SmoothedLinear (same fp32 outputs),
    with each layer's strength fitted on `calibration` images (B, C, H, W), a few hundred typical inputs.

    Returns (smoothed model, {layer name: chosen strength}); strength 0 leaves a layer as it was.
    """
    if calibration.ndim != 4 or calibration.shape[0] < 1:
        raise ValueError(f"calibration images must be a (B, C, H, W) batch, got shape {tuple(calibration.shape)}")
    model = copy.deepcopy(model).float().cpu().eval()
    names = {id(m): n for n, m in model.named_modules()}
    chosen: dict[str, float] = {}
    replacements: list[tuple[nn.Linear, SmoothedLinear]] = []

    def hook(layer: nn.Linear, inputs: tuple[torch.Tensor], _out: torch.Tensor) -> None:
        strength, scale, _ = choose_smoothing(layer, inputs[0], strengths=strengths)
        chosen[names[id(layer)]] = strength
        if scale is not None:
            replacements.append((layer, SmoothedLinear(layer, scale)))

    layers = [
        (parent, attr, layer) for parent, attr, layer in channel_mlp_linears(model) if isinstance(layer, nn.Linear)
    ]
    handles = [layer.register_forward_hook(hook) for _, _, layer in layers]
    try:
        with torch.no_grad():  # not inference_mode: the new layers' tensors must work outside it (export)
            model(calibration.float().cpu())
    finally:
        for h in handles:
            h.remove()
    swap = {id(old): new for old, new in replacements}
    for parent, attr, layer in layers:
        if id(layer) in swap:
            setattr(parent, attr, swap[id(layer)])
    return model, chosen
