"""int8 inference for the channel MLPs: calibrated per-channel smoothing, then dynamic quantisation.

Why plain dynamic quantisation loses predictions on ResMLP: the MLP reads the residual stream directly
(Aff is folded into fc1, and there is no normalisation), whose channels differ in range by ~50x after
training; GELU outputs feeding fc2 are just as uneven. A dynamically quantised Linear uses one activation
scale per batch, so the largest channels set the step and small channels round to a few levels.

Two remedies, both exact in real arithmetic:
- Smoothing (Xiao et al. 2023, "SmoothQuant"): W x = (W diag(s)) (x / s). With s_j = max|x_j|^a /
  max|W_:j|^(1-a), the activations' channel ranges are evened out and the difficulty moves into the
  weights, which are quantised per output channel anyway. The strength a is chosen per layer, from a
  grid, as the one that minimises the int8 layer's output error on calibration images.
- Full 8-bit activations: PyTorch's dynamic Linear uses 7-bit activations ("reduce_range") to avoid
  int16 overflow in the pre-VNNI AVX2 kernels. CPUs with VNNI (or AMX) accumulate u8 x s8 in int32
  directly, so the full range is safe there and halves the activation rounding error.

On the 80% CIFAR-10 ResMLP top-1 agreement with fp32 goes from 96.96% (plain dynamic) to 98.54% (full
range) to 99.32% (with smoothing calibrated on 256 training images; docs/results.md#inference).
The token-mixing matmuls and the head stay fp32 (a small share of the compute; the head's error lands
on the logits directly).
"""

from __future__ import annotations

import copy
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from ..device import cpu_flags

SMOOTHING_STRENGTHS = (0.0, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
MAX_SEARCH_ROWS = 65536  # rows (tokens x images) of one layer's input used to score each strength


def has_vnni() -> bool:
    """Whether this x86 CPU multiplies u8 x s8 with int32 accumulation (AVX512-VNNI, AVX-VNNI or AMX)."""
    return bool(cpu_flags() & {"avx512_vnni", "avx_vnni", "amx_int8"})


def full_range_activations() -> bool:
    """8-bit activations are safe with VNNI on fbgemm/x86, and always on the ARM (qnnpack) engine."""
    engine = torch.backends.quantized.engine
    return has_vnni() if engine in ("fbgemm", "x86") else True


class SmoothedLinear(nn.Module):
    """linear(x / s) with the weights already multiplied by s: equal to the original Linear in fp32.

    The float form is what ONNX export sees (a Mul before the MatMul, which ONNX Runtime's quantiser
    then quantises); `Int8Linear.from_float` turns it into the int8 layer.
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


class Int8Linear(nn.Module):
    """Dynamic int8 Linear: int8 weights per output channel, activations quantised per call (one scale
    per tensor, full 8-bit range where the CPU allows), optional input smoothing `x * inv_scale`.

    `inplace_input`: the input is a temporary the caller does not reuse (fc2's GELU output in a fused
    block), so the smoothing multiply overwrites it instead of allocating a copy (S12: 15% faster).
    """

    def __init__(
        self,
        weight: torch.Tensor,
        bias: torch.Tensor,
        inv_scale: torch.Tensor | None = None,
        reduce_range: bool | None = None,
        inplace_input: bool = False,
    ) -> None:
        super().__init__()
        weight, bias = weight.detach().float().cpu(), bias.detach().float().cpu()
        scales = (weight.abs().amax(1).clamp_min(1e-12) / 127).double()
        with warnings.catch_warnings():  # torch >= 2.10 warns that quantized tensors are deprecated
            warnings.simplefilter("ignore", UserWarning)
            qweight = torch.quantize_per_channel(
                weight, scales, torch.zeros_like(scales, dtype=torch.long), 0, torch.qint8
            )
            self.packed = torch.ops.quantized.linear_prepack(qweight, bias)
        self.in_features, self.out_features = weight.shape[1], weight.shape[0]
        self.reduce_range = (not full_range_activations()) if reduce_range is None else reduce_range
        self.inplace_input = inplace_input
        self.register_buffer("inv_scale", None if inv_scale is None else inv_scale.detach().float().cpu().clone())

    @classmethod
    def from_float(
        cls, layer: nn.Module, reduce_range: bool | None = None, inplace_input: bool = False
    ) -> "Int8Linear":
        if isinstance(layer, SmoothedLinear):
            return cls(layer.linear.weight, layer.linear.bias, layer.inv_scale, reduce_range, inplace_input)
        return cls(layer.weight, layer.bias, None, reduce_range, inplace_input)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.inv_scale is not None:
            x = x.mul_(self.inv_scale) if self.inplace_input else x * self.inv_scale
        return torch.ops.quantized.linear_dynamic(x, self.packed, reduce_range=self.reduce_range)

    def __deepcopy__(self, memo: dict) -> "Int8Linear":
        # The packed weights are an opaque fbgemm object; unpack and pack again.
        weight, bias = torch.ops.quantized.linear_unpack(self.packed)
        return Int8Linear(weight.dequantize(), bias, self.inv_scale, self.reduce_range, self.inplace_input)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"smoothed={self.inv_scale is not None}, activation_bits={7 if self.reduce_range else 8}"
        )


def channel_mlp_linears(model: nn.Module) -> list[tuple[nn.Module, str, nn.Module]]:
    """(parent, attribute, layer) of every Linear / SmoothedLinear except the head: the fc1/fc2 layers."""
    found = []
    for parent_name, parent in model.named_modules():
        for attr, child in parent.named_children():
            name = f"{parent_name}.{attr}" if parent_name else attr
            if isinstance(child, (nn.Linear, SmoothedLinear)) and name != "head":
                found.append((parent, attr, child))
    return found


def _int8_error(
    layer: nn.Linear, x: torch.Tensor, want: torch.Tensor, scale: torch.Tensor | None, reduce_range: bool
) -> float:
    """Relative mean squared error of the int8 form of `layer` (smoothed by `scale`) on inputs x."""
    smoothed = layer if scale is None else SmoothedLinear(layer, scale)
    got = Int8Linear.from_float(smoothed, reduce_range)(x)
    return ((got - want).pow(2).mean() / want.pow(2).mean().clamp_min(1e-12)).item()


def smoothing_scale(x_absmax: torch.Tensor, weight: torch.Tensor, strength: float) -> torch.Tensor:
    """s_j = max|x_j|^a / max|W_:j|^(1-a), clamped away from zero (a = strength)."""
    w_absmax = weight.abs().amax(0).clamp_min(1e-5)
    return (x_absmax.clamp_min(1e-5).pow(strength) / w_absmax.pow(1 - strength)).clamp_min(1e-5)


def choose_smoothing(
    layer: nn.Linear, x: torch.Tensor, *, strengths=SMOOTHING_STRENGTHS, reduce_range: bool = False
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
        errors[a] = _int8_error(layer, x, want, scales[a], reduce_range)
    best = min(errors, key=errors.get)
    return best, scales[best], errors


def smooth(
    model: nn.Module, calibration: torch.Tensor, *, strengths=SMOOTHING_STRENGTHS, reduce_range: bool | None = None
) -> tuple[nn.Module, dict[str, float]]:
    """A copy of the fused `model` whose channel-MLP Linears are SmoothedLinear (same fp32 outputs),
    with each layer's strength fitted on `calibration` images (B, C, H, W), a few hundred typical inputs.

    Returns (smoothed model, {layer name: chosen strength}); strength 0 leaves a layer as it was.
    """
    if calibration.ndim != 4 or calibration.shape[0] < 1:
        raise ValueError(f"calibration images must be a (B, C, H, W) batch, got shape {tuple(calibration.shape)}")
    reduce_range = (not full_range_activations()) if reduce_range is None else reduce_range
    model = copy.deepcopy(model).float().cpu().eval()
    names = {id(m): n for n, m in model.named_modules()}
    chosen: dict[str, float] = {}
    replacements: list[tuple[nn.Linear, SmoothedLinear]] = []

    def hook(layer: nn.Linear, inputs: tuple[torch.Tensor], _out: torch.Tensor) -> None:
        strength, scale, _ = choose_smoothing(layer, inputs[0], strengths=strengths, reduce_range=reduce_range)
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


def quantize_int8(
    model: nn.Module,
    calibration: torch.Tensor | None = None,
    *,
    strengths=SMOOTHING_STRENGTHS,
    reduce_range: bool | None = None,
) -> nn.Module:
    """A copy of the fused `model` with every channel-MLP Linear in int8 (CPU). With `calibration`
    images the layers are smoothed first (see module doc); without, plain per-tensor dynamic activations.
    `reduce_range` None = 7-bit activations only where the CPU needs them (no VNNI)."""
    if calibration is not None:
        model, _ = smooth(model, calibration, strengths=strengths, reduce_range=reduce_range)
    else:
        model = copy.deepcopy(model)
    for parent, attr, layer in channel_mlp_linears(model):
        # The fused blocks (resmlp.deploy.fuse) feed fc2 a fresh GELU output: it may be scaled in place.
        setattr(parent, attr, Int8Linear.from_float(layer, reduce_range, inplace_input=attr == "fc2"))
    return model
