"""Export round trips: ONNX (dynamic batch), TorchScript, and `resmlp export` (every format, the CLI)."""

import json

import pytest
import torch

import resmlp
from resmlp.checkpoint import atomic_save, model_record
from resmlp.cli import main
from resmlp.deploy import ExportError, export_onnx, export_torchscript
from resmlp.loading import load_model
from resmlp.models import Preprocess

CLASSES = ["cat", "dog", "emu"]
PRE = Preprocess(img_size=8, crop_pct=0.875, interpolation="bilinear", mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))


def model_with_weights(name="resmlp_micro8", seed=0, **kw):
    torch.manual_seed(seed)
    model = resmlp.create_model(name, num_classes=3, **kw).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return model


def images(n, size=8, seed=1):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", ["resmlp_micro8", "mixer_tiny32"])
@pytest.mark.slow
def test_onnx_round_trip_with_dynamic_batch(tmp_path, name):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    model = model_with_weights(name, depth=2)
    diff = export_onnx(model, tmp_path / "m.onnx")
    assert diff is not None and diff <= 1e-4
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    size = model.spec.args["img_size"]
    for n in (1, 5):  # neither is the batch size traced with
        x = images(n, size)
        (got,) = session.run(None, {"images": x.numpy()})
        with torch.no_grad():
            torch.testing.assert_close(torch.from_numpy(got), model(x), rtol=0, atol=1e-4)
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "m.onnx")).metadata_props}
    assert json.loads(meta["resmlp.config"])["model_name"] == name


@pytest.mark.slow
def test_onnx_export_that_does_not_match_fails_and_leaves_no_file(tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    from resmlp.deploy.onnx import OnnxRuntimeModel

    monkeypatch.setattr(OnnxRuntimeModel, "forward", lambda self, x: torch.zeros(x.shape[0], 3))
    with pytest.raises(ExportError, match=r"differs from eager by .* > 0.0001"):
        export_onnx(model_with_weights(), tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit.load: deprecated upstream, still shipped
def test_torchscript_round_trip(tmp_path):
    model = model_with_weights()
    diff = export_torchscript(model, tmp_path / "m.pt", config={"classes": CLASSES})
    assert diff <= 1e-4
    extra = {"config.json": ""}
    loaded = torch.jit.load(str(tmp_path / "m.pt"), _extra_files=extra)
    x = images(4)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=1e-5)
    assert json.loads(extra["config.json"])["classes"] == CLASSES


@pytest.mark.slow
def test_cli_export_every_format_from_our_checkpoint(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    model = model_with_weights()
    atomic_save(model_record(model, classes=CLASSES, preprocess=PRE), tmp_path / "ck.pt")
    assert main(["export", str(tmp_path / "ck.pt"), "--format", "onnx", "--out", str(tmp_path / "m.onnx")]) == 0
    assert "max |onnx - eager| = " in capsys.readouterr().out
    assert main(["export", str(tmp_path / "ck.pt"), "--format", "torchscript", "--out", str(tmp_path / "m.ts")]) == 0
    assert main(["export", str(tmp_path / "ck.pt"), "--format", "safetensors", "--out", str(tmp_path / "pkg")]) == 0
    loaded = resmlp.from_pretrained(tmp_path / "pkg")
    assert loaded.spec.class_names() == CLASSES and loaded.spec.preprocess == PRE  # the checkpoint's metadata travelled
    x = images(2)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


def test_cli_export_bare_state_dict_and_reload_everything_the_same(tmp_path):
    model = model_with_weights("resmlp_micro16")
    torch.save(model.state_dict(), tmp_path / "w.pth")
    assert main(["export", str(tmp_path / "w.pth"), "--format", "safetensors", "--out", str(tmp_path / "pkg")]) == 0
    atomic_save(model_record(model), tmp_path / "run" / "checkpoints" / "best.pt")
    x = images(2, 16)
    with torch.no_grad():
        want = model(x)
        for source in ("w.pth", "pkg", "run", "run/checkpoints/best.pt"):
            spec, loaded = load_model(tmp_path / source).spec, load_model(tmp_path / source).model
            assert spec.class_names() == ["class_0", "class_1", "class_2"] and spec.preprocess.img_size == 16, source
            torch.testing.assert_close(loaded(x), want, rtol=0, atol=0)


def test_cli_export_errors_are_one_line(tmp_path, capsys):
    assert main(["export", str(tmp_path / "missing.pth"), "--format", "onnx", "--out", str(tmp_path / "m")]) == 2
    assert "missing.pth: no such file or directory" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize(
    "options",
    [
        dict(norm="batchnorm", token_mixing="conv3x3_separable", pooling="class_mlp"),
        dict(norm="layernorm", token_mixing="mlp", act="hardswish"),
    ],
    ids=str,
)
def test_onnx_export_of_ablation_variants_fused_and_not(tmp_path, options):
    pytest.importorskip("onnxruntime")
    from resmlp.deploy.fuse import fusable, fuse

    model = model_with_weights(depth=2, **options)
    assert export_onnx(model, tmp_path / "m.onnx") <= 1e-4
    if fusable(model):  # BatchNorm folds; a LayerNorm model exports unfused only
        assert export_onnx(fuse(model), tmp_path / "fused.onnx") <= 1e-4


def test_ablation_variant_is_not_passed_off_as_a_timm_architecture():
    from resmlp.models import timm_architecture

    assert timm_architecture(resmlp.create_model("resmlp_s12").spec) == "resmlp_12_224"
    with torch.device("meta"):
        spec = resmlp.create_model("resmlp_s12", token_mixing="conv3x3").spec
    assert timm_architecture(spec) is None  # timm has no function for it: config.json names our variant
