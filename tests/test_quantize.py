"""resmlp.deploy.quantize: calibrated smoothing of the channel MLPs for the engines' int8 (scored by simulated int8),
and int8's routing to those engines."""

import pytest
import torch
from torch import nn

import resmlp
from resmlp.deploy.quantize import (
    SmoothedLinear,
    _int8_error,
    channel_mlp_linears,
    choose_smoothing,
    fake_int8,
    fake_uint8,
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


def test_simulated_int8_rounds_to_the_grid_and_scores_the_layer():
    x = torch.tensor([0.0, 0.26, -1.0, 5.0])
    torch.testing.assert_close(fake_int8(x, torch.tensor(0.5)), torch.tensor([0.0, 0.5, -1.0, 5.0]))
    torch.testing.assert_close(fake_int8(torch.tensor([100.0]), torch.tensor(0.5)), torch.tensor([63.5]))  # clamp
    levels = fake_uint8(torch.linspace(-1.0, 1.55, 1000))
    assert levels.unique().numel() == 256 and (levels == 0).any()  # 256 levels over min..max, zero exact
    layer, x = linear(), uneven_inputs()
    with torch.no_grad():
        want = layer(x)
        even = torch.randn(4096, 64)
        assert _int8_error(layer, x, want, None) > 4 * _int8_error(layer, even, layer(even), None)  # uneven hurts
        assert 0 < _int8_error(layer, x, want, None) < 0.05


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


def test_int8_runs_on_the_engines_not_in_pytorch():
    model = uneven_model()
    for runtime in ("eager", "compile"):
        with pytest.raises(ValueError, match=r"int8 runs on the openvino runtime .* or the onnx runtime"):
            resmlp.deploy.build_runtime(model, precision="int8", runtime=runtime)
    with pytest.raises(ValueError, match="int8 runs on the openvino runtime"):
        resmlp.optimize(model, "int8")


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
        smooth(resmlp.fuse(uneven_model()), images(1, seed=0)[0])
