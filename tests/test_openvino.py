"""resmlp.deploy.openvino: the OpenVINO runtime (fp32 / bf16 / NNCF int8) behind the runtime contract, the IR
export with our config beside it, and the one-line errors when the optional packages are missing."""

import dataclasses
import json
import sys

import pytest
import torch
from test_optimize import batch, confident_model

import resmlp
from resmlp.cli import main
from resmlp.deploy import build_runtime, export_model
from resmlp.deploy.openvino import (
    INT8_RECIPE,
    OpenVinoModel,
    float_scope,
    nncf_module,
    openvino_module,
    quantize_openvino,
    to_openvino,
)

pytestmark = pytest.mark.openvino


def test_fp32_matches_eager_at_any_batch_size():
    model = confident_model()
    runner = build_runtime(model, precision="fp32", runtime="openvino")
    assert isinstance(runner, OpenVinoModel) and runner.precision == "fp32"
    for n in (1, 5, 64):  # the IR's batch axis is dynamic
        x = batch(model, n, seed=n)
        got = runner(x)
        assert got.dtype == torch.float32 and got.shape == (n, model.num_classes)
        with torch.no_grad():
            torch.testing.assert_close(got, model(x), rtol=0, atol=1e-4)


def test_bf16_keeps_predictions():
    model = confident_model()
    x = batch(model, 256)
    with torch.no_grad():
        want = model(x)
    got = build_runtime(model, precision="bf16", runtime="openvino")(x)
    assert (got - want).abs().max() < 0.3  # logits of std 3: within 10 % of it
    assert (got.argmax(-1) == want.argmax(-1)).float().mean() >= 0.95


def test_int8_quantises_the_channel_mlps_and_keeps_the_rest_in_float():
    model = confident_model()
    calibration, x = batch(model, 128, seed=3), batch(model, 256)
    quantized = quantize_openvino(model, calibration)
    kept = float_scope(quantized, INT8_RECIPE.keep_float)
    # A x of every block, the stem, the head and the first block's fc1 and fc2
    assert len(kept) == len(model.blocks) + 4
    first = sorted(n.split("/")[0].removesuffix(".linear") for n in float_scope(quantized, ("first_mlp",)))
    assert first == ["__module.blocks.0.fc1", "__module.blocks.0.fc2"]  # (.linear: the smoothed form)
    fc1 = [n.split("/")[0].removesuffix(".linear") for n in float_scope(quantized, ("first_fc1",))]
    assert fc1 == ["__module.blocks.0.fc1"]
    quantized_inputs = {}  # node name -> whether a FakeQuantize feeds it
    for op in quantized.get_ops():
        feeds = [op.input_value(i).get_node().get_type_name() for i in range(op.get_input_size())]
        quantized_inputs[op.get_friendly_name()] = "FakeQuantize" in feeds
    mlp = [n for n in quantized_inputs if ".fc1" in n or ".fc2" in n]
    assert sum(quantized_inputs[n] for n in mlp if n.endswith("MatMul")) == 2 * len(model.blocks) - 2
    assert not any(quantized_inputs[n] for n in kept)
    # the residual stream is never rounded: no Add / Multiply reads a FakeQuantize
    elementwise = [op for op in quantized.get_ops() if op.get_type_name() in ("Add", "Multiply")]
    assert elementwise and not any(quantized_inputs[op.get_friendly_name()] for op in elementwise)
    bare = quantize_openvino(model, calibration, dataclasses.replace(INT8_RECIPE, elementwise=True, keep_float=()))
    assert sum(op.get_type_name() == "FakeQuantize" for op in bare.get_ops()) > sum(
        op.get_type_name() == "FakeQuantize" for op in quantized.get_ops()
    )
    with torch.no_grad():
        want = model(x)
    got = build_runtime(model, precision="int8", runtime="openvino", calibration=calibration)(x)
    assert got.dtype == torch.float32 and (got.argmax(-1) == want.argmax(-1)).float().mean() >= 0.95
    with pytest.raises(ValueError, match="needs calibration images"):
        build_runtime(model, precision="int8", runtime="openvino")


def test_int8_keeps_a_convolution_in_place_of_a_in_float():
    """Table 3's conv rows (cifar10_cpu's student mixes patches with the depthwise one): the token mixing stays in
    float as A x does, so the int8 path treats both students alike."""
    torch.manual_seed(0)
    model = resmlp.create_model("resmlp_micro8", token_mixing="conv3x3_depthwise").eval()
    quantized = quantize_openvino(model, batch(model, 32, seed=3))
    kept = float_scope(quantized, ("token_mixing",))
    assert len(kept) == len(model.blocks) and all(".conv/" in n for n in kept)
    fed = {
        op.get_friendly_name(): [op.input_value(i).get_node().get_type_name() for i in range(op.get_input_size())]
        for op in quantized.get_ops()
    }
    assert not any("FakeQuantize" in fed[n] for n in kept)
    assert any("FakeQuantize" in feeds for n, feeds in fed.items() if ".fc1" in n and n.endswith("MatMul"))


def test_export_writes_the_ir_and_our_config(tmp_path):
    import openvino as ov

    model = confident_model()
    model.spec = model.spec.replace(classes=[f"c{i}" for i in range(model.num_classes)])
    out, diff = export_model(model, "openvino", tmp_path / "ir")
    assert out == tmp_path / "ir" and diff is not None and diff <= 1e-4
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.bin", "model.xml"]
    config = json.loads((out / "config.json").read_text())
    assert config["classes"] == list(model.spec.classes) and config["openvino"] == {"precision": "fp32"}
    compiled = ov.Core().compile_model(str(out / "model.xml"), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    x = batch(model, 3)
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(compiled(x.numpy())[0]), model(x), rtol=0, atol=1e-4)
    int8, _ = export_model(model, "openvino", tmp_path / "ir8", precision="int8", calibration=batch(model, 32))
    assert json.loads((int8 / "config.json").read_text())["openvino"] == {"precision": "int8"}
    assert "FakeQuantize" in (int8 / "model.xml").read_text()
    with pytest.raises(ValueError, match="int8 is written as an OpenVINO IR"):
        export_model(model, "onnx", tmp_path / "m.onnx", precision="int8")


def test_missing_packages_name_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)
    with pytest.raises(ValueError, match=r"needs openvino: pip install 'resmlp\[openvino\]'"):
        openvino_module()
    with pytest.raises(ValueError, match=r"needs openvino"):
        to_openvino(confident_model())
    monkeypatch.setitem(sys.modules, "nncf", None)
    with pytest.raises(ValueError, match=r"int8 with OpenVINO needs nncf: pip install 'resmlp\[openvino\]'"):
        nncf_module()


def test_cli_predict_eval_and_export_with_openvino(tmp_path, capsys):
    import numpy as np
    from PIL import Image

    from resmlp.checkpoint import atomic_save, model_record

    model = confident_model()
    classes = [f"c{i}" for i in range(model.num_classes)]
    atomic_save(model_record(model, classes=classes), tmp_path / "m.pt")
    rng = np.random.default_rng(0)
    for c in classes[:2]:
        (tmp_path / "val" / c).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(tmp_path / "val" / c / f"{i}.png")
    weights, val = str(tmp_path / "m.pt"), str(tmp_path / "val")
    assert main(["predict", weights, val, "--runtime", "openvino", "--precision", "fp32", "--format", "json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 6
    assert main(["eval", "--checkpoint", weights, "--data", val, "--runtime", "openvino", "--precision", "int8"]) == 2
    assert "--precision int8 needs --calibration" in capsys.readouterr().err
    argv = ["eval", "--checkpoint", weights, "--data", val, "--out", str(tmp_path / "e"), "--runtime", "openvino"]
    assert main([*argv, "--precision", "int8", "--calibration", val]) == 0
    result = json.loads((tmp_path / "e" / "eval.json").read_text())
    assert (result["runtime"], result["precision"], result["count"]) == ("openvino", "int8", 6)
    assert main(["export", weights, "--format", "openvino", "--out", str(tmp_path / "ir")]) == 0
    assert "wrote" in capsys.readouterr().out and (tmp_path / "ir" / "model.xml").is_file()
    assert main(["export", weights, "--format", "onnx", "--precision", "int8", "--out", str(tmp_path / "x")]) == 2
    assert "--precision int8 writes an OpenVINO IR" in capsys.readouterr().err
