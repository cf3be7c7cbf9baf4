"""resmlp.deploy.quantize: calibrated smoothing + dynamic int8 for the channel MLPs."""

import copy

import pytest
import torch
from torch import nn

import resmlp
from resmlp.deploy.quantize import (
    Int8Linear,
    SmoothedLinear,
    channel_mlp_linears,
    choose_smoothing,
    full_range_activations,
    quantize_int8,
    smooth,
    smoothing_scale,
)


def uneven_inputs(rows=4096, dim=64, seed=0):
    """Activations whose channels differ in range by 100x, like a trained ResMLP's residual stream."""
    g = torch.Generator().manual_seed(seed)
    spread = torch.logspace(-1, 1, dim)[torch.randperm(dim, generator=g)]
    return torch.randn(rows, dim, generator=g) * spread


def linear(d_in=64, d_out=96, seed=1):
    torch.manual_seed(seed)
    layer = nn.Linear(d_in, d_out)
    with torch.no_grad():
        layer.bias.normal_(0, 0.1)
    return layer


def rel_error(got, want):
    return ((got - want).pow(2).mean() / want.pow(2).mean()).item()


def test_smoothed_linear_is_the_same_function():
    layer, x = linear(), uneven_inputs()
    scale = smoothing_scale(x.abs().amax(0), layer.weight, 0.7)
    with torch.no_grad():
        torch.testing.assert_close(SmoothedLinear(layer, scale)(x), layer(x), rtol=1e-5, atol=1e-5)


def test_smoothing_scale_formula():
    x_absmax = torch.tensor([4.0, 1.0, 0.0])
    weight = torch.tensor([[0.5, -2.0, 1.0], [-1.0, 1.0, 0.5]])  # column abs-max: 1, 2, 1
    s = smoothing_scale(x_absmax, weight, 0.5)
    torch.testing.assert_close(s, torch.tensor([2.0, 1 / 2**0.5, (1e-5) ** 0.5]))
    torch.testing.assert_close(smoothing_scale(x_absmax, weight, 1.0), torch.tensor([4.0, 1.0, 1e-5]))


def test_int8_linear_is_close_and_full_range_halves_the_error():
    layer, x = linear(), uneven_inputs()
    with torch.no_grad():
        want = layer(x)
    err8 = rel_error(Int8Linear.from_float(layer, reduce_range=False)(x), want)
    err7 = rel_error(Int8Linear.from_float(layer, reduce_range=True)(x), want)
    assert err7 < 1e-2
    if full_range_activations():  # VNNI/AMX: u8 x s8 products accumulate without int16 saturation
        assert err8 < 1e-2 and err8 < 0.6 * err7  # one more bit: about 4x less squared error
    else:  # AVX2 (e.g. an AMD EPYC VM without AVX-512): why the default keeps 7-bit activations there
        assert Int8Linear.from_float(layer).reduce_range


def test_search_smooths_uneven_channels_and_cuts_the_error():
    layer, x = linear(), uneven_inputs()
    strength, scale, errors = choose_smoothing(layer, x)
    assert strength > 0 and scale is not None and errors[strength] == min(errors.values())
    assert errors[strength] < 0.3 * errors[0.0]
    # channels that are already even need no smoothing to speak of
    _, _, even = choose_smoothing(layer, torch.randn(4096, 64))
    assert min(even.values()) > 0.5 * even[0.0]


def uneven_model():
    """A micro ResMLP whose residual channels span 100x (stem rows rescaled), logits spread like a
    trained classifier's."""
    torch.manual_seed(0)
    model = resmlp.create_model("resmlp_micro16").eval()
    with torch.no_grad():
        spread = torch.logspace(-1, 1, model.embed_dim)[torch.randperm(model.embed_dim)]
        model.stem.proj.weight.mul_(spread[:, None, None, None])
        model.stem.proj.bias.mul_(spread)
        for block in model.blocks:
            block.ls1.fill_(0.5)
            block.ls2.fill_(0.5)
        x = images(64, seed=5)
        model.head.weight.mul_(3 / model(x).std())
    return model


def images(n, seed):
    return torch.randn(n, 3, 16, 16, generator=torch.Generator().manual_seed(seed))


@pytest.mark.slow
def test_smooth_keeps_fp32_outputs_and_reports_every_layer():
    model = uneven_model()
    fused = resmlp.fuse(model)
    smoothed, chosen = smooth(fused, images(32, seed=1))
    x = images(16, seed=2)
    with torch.no_grad():
        torch.testing.assert_close(smoothed(x), fused(x), rtol=1e-4, atol=1e-4)
    names = {f"blocks.{i}.{fc}" for i in range(len(model.blocks)) for fc in ("fc1", "fc2")}
    assert set(chosen) == names
    assert any(isinstance(layer, SmoothedLinear) for _, _, layer in channel_mlp_linears(smoothed))
    assert all(type(layer) is nn.Linear for _, _, layer in channel_mlp_linears(fused))  # input untouched


@pytest.mark.slow
def test_calibrated_int8_is_closer_to_fp32_than_plain_int8():
    model = uneven_model()
    x = images(256, seed=3)
    with torch.no_grad():
        want = model(x)
    plain = resmlp.optimize(model, "int8")(x)
    calibrated = resmlp.optimize(model, "int8", calibration=images(128, seed=4))(x)
    assert rel_error(calibrated, want) < 0.5 * rel_error(plain, want)
    assert (calibrated.argmax(-1) == want.argmax(-1)).float().mean() >= 0.97
    fused_int8 = quantize_int8(resmlp.fuse(model), images(128, seed=4))
    assert channel_mlp_linears(fused_int8) == []  # every fc1/fc2 replaced ...
    assert sum(isinstance(m, Int8Linear) for m in fused_int8.modules()) == 2 * len(model.blocks)
    assert type(fused_int8.head) is nn.Linear  # the head stays fp32
    with torch.no_grad():
        torch.testing.assert_close(copy.deepcopy(fused_int8)(x), fused_int8(x))
    # fc2 scales its (temporary) GELU input in place; fc1 must not touch the residual stream it reads
    assert {
        (name.rsplit(".", 1)[-1], m.inplace_input)
        for name, m in fused_int8.named_modules()
        if isinstance(m, Int8Linear)
    } == {("fc1", False), ("fc2", True)}
    copying = copy.deepcopy(fused_int8)
    for m in copying.modules():
        if isinstance(m, Int8Linear):
            m.inplace_input = False
    with torch.no_grad():
        torch.testing.assert_close(copying(x), fused_int8(x), rtol=0, atol=0)


@pytest.mark.slow
def test_onnx_int8_exports_the_smoothed_model():
    pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    model = uneven_model()
    x = images(256, seed=3)
    with torch.no_grad():
        want = model(x)

    def graph_muls(runner) -> int:
        return sum(node.op_type == "Mul" for node in onnx.load(str(runner.path)).graph.node)

    plain = resmlp.deploy.build_runtime(model, precision="int8", runtime="onnx")
    calibrated = resmlp.deploy.build_runtime(model, precision="int8", runtime="onnx", calibration=images(128, seed=4))
    smoothed = sum(isinstance(m, SmoothedLinear) for m in smooth(resmlp.fuse(model), images(128, seed=4))[0].modules())
    assert smoothed > 0 and graph_muls(calibrated) == graph_muls(plain) + smoothed  # one x / s per layer
    assert (calibrated(x).argmax(-1) == want.argmax(-1)).float().mean() >= 0.97


def test_bad_calibration_batch_is_a_clear_error():
    with pytest.raises(ValueError, match=r"calibration images must be a \(B, C, H, W\) batch, got shape \(3, 16, 16\)"):
        resmlp.optimize(uneven_model(), "int8", calibration=images(1, seed=0)[0])
