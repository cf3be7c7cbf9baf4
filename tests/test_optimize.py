"""resmlp.optimize and the runtimes: float32 in, float32 logits out, predictions kept."""

import os

import pytest
import torch

import resmlp
from resmlp.deploy import OnnxRuntimeModel, build_runtime, resolve_precision
from resmlp.deploy.onnx import onnx_runtime_model
from resmlp.device import native_bf16


def confident_model(name="resmlp_micro8", seed=0):
    """A small model whose logits are spread out (std 3), like a trained classifier's."""
    torch.manual_seed(seed)
    model = resmlp.create_model(name).eval()
    with torch.no_grad():
        for n, p in model.named_parameters():
            p.add_(0.02 * torch.randn_like(p)) if not n.endswith(("alpha", "ls1", "ls2")) else p.mul_(1.2)
        model.head.weight.mul_(3 / model(batch(model, 16, seed=99)).std())
    return model


def batch(model, n=64, seed=1):
    g = torch.Generator().manual_seed(seed)
    s = model.spec.args["img_size"]
    return torch.randn(n, 3, s, s, generator=g)


def test_fp32_is_the_fused_model():
    model = confident_model()
    x = batch(model)
    fast = resmlp.optimize(model, "fp32")
    y = fast(x)
    assert y.dtype == torch.float32 and not y.requires_grad
    with torch.no_grad():
        torch.testing.assert_close(y, model(x), rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    "precision,runtime,atol",
    [("bf16", "eager", 0.15), pytest.param("int8", "openvino", 0.3, marks=pytest.mark.openvino)],
)
def test_low_precision_keeps_predictions(precision, runtime, atol):
    model = confident_model()
    x = batch(model, 256)
    with torch.no_grad():
        want = model(x)
    got = build_runtime(model, precision=precision, runtime=runtime, calibration=batch(model, 64, seed=7))(x)
    assert got.dtype == torch.float32 and got.shape == want.shape
    assert (got - want).abs().max() < atol  # logits have std 3: within 5% / 10% of it
    agree = (got.argmax(-1) == want.argmax(-1)).float().mean().item()
    assert agree >= 0.95, f"{precision} top-1 agrees with fp32 on {agree:.1%}"


@pytest.mark.openvino
def test_optimize_leaves_the_model_alone():
    model = confident_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    resmlp.optimize(model, "bf16")
    build_runtime(model, precision="int8", runtime="openvino", calibration=batch(model, 16))
    assert all(v.dtype == torch.float32 and torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert type(model.blocks[0].mlp_channels.fc1) is torch.nn.Linear
    fused = resmlp.fuse(model)
    resmlp.optimize(fused, "bf16")
    assert all(p.dtype == torch.float32 for p in fused.parameters())


def test_auto_precision_follows_the_hardware():
    assert resolve_precision("auto") == ("bf16" if native_bf16() else "fp32")
    assert resmlp.optimize(confident_model(), "auto").precision == resolve_precision("auto")
    with pytest.raises(ValueError, match="unknown precision 'fp16'"):
        resolve_precision("fp16")


@pytest.mark.slow
def test_onnx_runtime_matches_eager_and_int8_keeps_predictions():
    model = confident_model()
    x = batch(model, 128)
    with torch.no_grad():
        want = model(x)
    fp32 = onnx_runtime_model(model, "fp32")
    assert isinstance(fp32, OnnxRuntimeModel)
    torch.testing.assert_close(fp32(x), want, rtol=0, atol=1e-4)
    int8 = build_runtime(model, precision="int8", runtime="onnx")
    assert (int8(x).argmax(-1) == want.argmax(-1)).float().mean() >= 0.95


def test_runtime_errors_name_the_choices():
    model = confident_model()
    with pytest.raises(ValueError, match="fp32 or int8, not bf16"):
        build_runtime(model, precision="bf16", runtime="onnx")
    with pytest.raises(ValueError, match="unknown runtime 'tensorrt'"):
        build_runtime(model, runtime="tensorrt")


@pytest.mark.skipif(
    not os.environ.get("RESMLP_TEST_COMPILE"),
    reason="torch.compile takes 15-60 s on a 2-core CPU; set RESMLP_TEST_COMPILE=1 to run",
)
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_compile(precision):
    model = confident_model()
    x = batch(model, 8)
    with torch.no_grad():
        want = model(x)
    got = resmlp.optimize(model, precision, compile=True)(x)
    assert got.dtype == torch.float32
    atol = 1e-5 if precision == "fp32" else 0.15
    assert (got - want).abs().max() < atol


def test_a_model_without_folds_runs_unfused():
    if "resnet20_cifar" not in resmlp.list_models():
        pytest.skip("no convnet variant registered")
    torch.manual_seed(0)
    model = resmlp.create_model("resnet20_cifar").eval()
    x = batch(model, 4)
    with torch.no_grad():
        want = model(x)
    torch.testing.assert_close(resmlp.optimize(model, "fp32")(x), want, rtol=0, atol=1e-5)
    assert resmlp.optimize(model, "bf16")(x).dtype == torch.float32
    with pytest.raises(ValueError, match="ResMLP or MlpMixer"):
        resmlp.fuse(model)


# resmlp.deploy.benchmark (no file of its own: it times the runtimes above)


@pytest.mark.slow
@pytest.mark.openvino
def test_benchmark_report_and_cli(tmp_path, capsys):
    from resmlp.cli import main
    from resmlp.deploy.benchmark import format_report, run_benchmark

    report = run_benchmark(
        confident_model(),
        batches=[2, 3],
        precisions=["fp32", "int8"],
        runtimes=["eager", "openvino"],
        rounds=2,
        seconds=0.01,
        progress=False,
    )
    rows = report["results"]
    assert [(r["batch"], r["runtime"], r["precision"], r["fused"]) for r in rows[:5]] == [
        (2, "eager", "fp32", False),
        (2, "eager", "fp32", True),
        (2, "eager", "int8", True),
        (2, "openvino", "fp32", True),
        (2, "openvino", "int8", True),
    ]
    assert rows[2]["skipped"].startswith("int8 runs on the openvino runtime")
    rows = [r for r in rows if not r["skipped"]]
    assert len(rows) == 8 and all(len(r["images_per_s_rounds"]) == 2 for r in rows)
    peaks = report["matmul_peak_gflops"]  # int8 only where torch._int_mm has a fast kernel
    assert rows[0]["speedup"] == 1.0 and all(0 < r["mfu"] for r in rows if r["precision"] in peaks)
    assert all(r["images_per_s_min"] <= r["images_per_s_median"] <= r["images_per_s_max"] for r in rows)
    assert "fp32" in report["matmul_peak_gflops"] and report["params"] > 0
    assert "eager/fp32/unfused" in format_report(report)

    out = tmp_path / "bench.json"
    assert (
        main(
            [
                "benchmark",
                "--model",
                "resmlp_micro8",
                "--batch",
                "2",
                "--precision",
                "fp32,bf16",
                "--runtime",
                "eager,onnx",
                "--rounds",
                "1",
                "--seconds",
                "0.01",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "onnx/bf16" in text and "skipped: ONNX Runtime (CPU) runs fp32 or int8" in text
    assert "measured matmul peak" in text and out.is_file()
    with pytest.raises(SystemExit):
        main(["benchmark", "--batch", "two"])
    assert "expected comma-separated int values" in capsys.readouterr().err
