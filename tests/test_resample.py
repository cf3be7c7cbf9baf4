"""Resampling the token mixing to another patch grid (models/resample.py, PatchClassifier.set_input_size,
load_weights(resample=...))."""

import pytest
import torch

import resmlp
from resmlp.models.init import local_token_matrix
from resmlp.models.resample import METHODS, offset_decomposition, resample_state_dict, resample_tensor

torch.manual_seed(0)


def shift_kernel(di: int, dj: int) -> torch.Tensor:
    """3x3 kernel reading the neighbour at (di, dj): out[r, c] = in[r + di, c + dj]."""
    k = torch.zeros(3, 3)
    k[1 + di, 1 + dj] = 1.0
    return k


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("kind,shape", [("matrix", (20, 20)), ("in", (7, 20)), ("out", (20, 7)), ("bias", (20,))])
def test_same_grid_is_the_identity(method, kind, shape):
    t = torch.randn(shape)
    torch.testing.assert_close(resample_tensor(t, kind, (4, 5), (4, 5), method=method), t, rtol=0, atol=0)


def test_offset_decomposition_reconstructs_a():
    a = torch.randn(12, 12)  # a 3x4 grid
    kernel, residual = offset_decomposition(a, (3, 4))
    assert kernel.shape == (5, 7) and residual.shape == (3, 4, 5, 7)
    rows, cols = torch.arange(3).repeat_interleave(4), torch.arange(4).repeat(3)
    for o in range(12):
        for i in range(12):
            di, dj = rows[i] - rows[o] + 2, cols[i] - cols[o] + 3
            torch.testing.assert_close(kernel[di, dj] + residual[rows[o], cols[o], di, dj], a[o, i])
    # the mean over positions of the residual is 0 for every offset: K is the whole shared part
    assert residual.sum((0, 1)).abs().max() < 1e-5


@pytest.mark.parametrize("method", ["offset", "kernel"])
@pytest.mark.parametrize("new", [(6, 6), (3, 3), (5, 7), (8, 4)])
def test_a_planted_shift_kernel_stays_the_same_shift(method, new):
    k = shift_kernel(1, -1)
    a = local_token_matrix(k, 4, 4)
    out = resample_tensor(a, "matrix", (4, 4), new, method=method)
    torch.testing.assert_close(out, local_token_matrix(k, *new))
    x = torch.randn(*new)  # and it acts as that shift on a new-grid map (zero outside)
    y = (out @ x.flatten()).view(new)
    torch.testing.assert_close(y[:-1, 1:], x[1:, :-1])


def test_interp_keeps_row_sums_and_moves_a_smooth_kernel_in_image_coordinates():
    a = local_token_matrix(torch.full((3, 3), 1 / 9), 8, 8) + 0.01 * torch.randn(64, 64)
    out = resample_tensor(a, "matrix", (8, 8), (12, 12), method="interp")
    target = torch.nn.functional.interpolate(a.sum(1).view(1, 1, 8, 8), size=(12, 12), mode="bilinear")
    torch.testing.assert_close(out.sum(1), target.flatten(), rtol=1e-4, atol=1e-4)
    # without the rescaling the rows would sum to (12/8)^2 = 2.25x as much
    raw = resample_tensor(a, "matrix", (8, 8), (12, 12), method="interp", keep_sum=False)
    assert 2.0 < (raw.sum(1) / out.sum(1)).median() < 2.5


def test_non_square_models_run_and_resample_in_every_direction():
    model = resmlp.create_model("resmlp_tiny32", img_size=(24, 40)).eval()
    assert model.stem.grid_size == (6, 10) and model.num_patches == 60
    assert model.spec.input_shape == (3, 24, 40)
    assert model(torch.randn(2, 3, 24, 40)).shape == (2, 10)
    for size in [(40, 24), 32, (16, 48)]:
        model.set_input_size(size)
        h, w = (size, size) if isinstance(size, int) else size
        assert model.blocks[0].linear_tokens.weight.shape == ((h // 4) * (w // 4),) * 2
        assert model(torch.randn(1, 3, h, w)).shape == (1, 10)
    mixer = resmlp.create_model("mixer_tiny32").set_input_size((24, 40)).eval()
    assert mixer.blocks[0].mlp_tokens.fc1.in_features == 60 and mixer.blocks[0].mlp_tokens.fc2.out_features == 60
    assert mixer(torch.randn(1, 3, 24, 40)).shape == (1, 10)


@pytest.mark.parametrize("method", ["offset", "kernel"])
def test_set_input_size_there_and_back(method):
    """A translation-invariant A (the `local` init, bias 0) survives 32 -> 48 -> 32 px exactly; spec and
    stem come back, and the parameters that do not depend on the grid are untouched."""
    model = resmlp.create_model("resmlp_tiny32").eval()
    resmlp.models.init_token_mixing(model, "local", generator=torch.Generator().manual_seed(0))
    x = torch.randn(2, 3, 32, 32)
    before, state = model(x), {k: v.clone() for k, v in model.state_dict().items()}
    spec = model.spec
    model.set_input_size(48, method=method)
    assert model.spec.args["img_size"] == 48 and model.spec.preprocess.img_size == 48
    assert model(torch.randn(1, 3, 48, 48)).shape == (1, 10)
    model.set_input_size(32, method=method)
    assert model.spec == spec and model.stem.grid_size == 8
    torch.testing.assert_close(model(x), before)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, state[k], msg=k)


@pytest.mark.parametrize("method", ["interp", "offset"])
@pytest.mark.parametrize("there", [48, (48, 32), (16, 40)], ids=str)
@pytest.mark.parametrize(
    "name,options", [("resmlp_tiny32", {}), ("mixer_tiny32", {}), ("resmlp_tiny32", {"pooling": "class_mlp"})], ids=str
)
def test_any_size_and_back_gives_the_model_back_bit_for_bit(name, options, there, method):
    """Every resize starts from the weights as trained, not from the last resampling: a trained (random) A,
    taken to another size (square or not) and back, is the same tensor, so the logits are bit-identical."""
    torch.manual_seed(0)
    model = resmlp.create_model(name, **options).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        want, state = model(x), {k: v.clone() for k, v in model.state_dict().items()}
        model.set_input_size(there, method=method)
        model.set_input_size(64, method=method)  # a second size in between: still from the trained weights
        model.set_input_size(32, method=method)
        torch.testing.assert_close(model(x), want, rtol=0, atol=0)
    assert list(model.state_dict()) == list(state)  # the remembered source is no state-dict entry
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_weights_changed_at_the_new_size_are_what_the_next_resize_starts_from():
    """Trained (or loaded) at the new size, a parameter is its own source again: progressive resizing
    resamples the weights it trained at each size, as before; an untouched parameter keeps its source."""
    torch.manual_seed(0)
    model = resmlp.create_model("resmlp_tiny32")
    layer = model.blocks[0].linear_tokens
    bias = layer.bias.detach().clone()
    model.set_input_size(48)
    with torch.no_grad():
        layer.weight.add_(0.01 * torch.randn_like(layer.weight))  # an optimizer step on A at 48 px
    trained = layer.weight.detach().clone()
    model.set_input_size(32)
    assert torch.equal(layer.weight, resample_tensor(trained, "matrix", (12, 12), (8, 8)))
    assert torch.equal(layer.bias, bias)  # not updated at 48 px: back to the bias as trained

    model = resmlp.create_model("resmlp_tiny32")  # a load counts as a change too (the same values here)
    layer = model.blocks[0].linear_tokens
    as_trained = layer.weight.detach().clone()
    model.set_input_size(48)
    model.load_state_dict(model.state_dict())
    loaded = layer.weight.detach().clone()
    model.set_input_size(32)
    assert torch.equal(layer.weight, resample_tensor(loaded, "matrix", (12, 12), (8, 8)))
    assert not torch.equal(layer.weight, as_trained)


def test_parameters_keep_their_identity_so_optimizers_follow():
    model = resmlp.create_model("resmlp_micro8")
    a = model.blocks[0].linear_tokens.weight
    model.set_input_size(12)
    assert model.blocks[0].linear_tokens.weight is a and a.shape == (36, 36)
    assert any(p is a for p in model.parameters())


def test_mismatched_grid_error_names_both_grids_and_how_to_resample():
    sd = resmlp.create_model("resmlp_tiny32").state_dict()
    model = resmlp.create_model("resmlp_tiny32", img_size=(24, 40))
    with pytest.raises(resmlp.WeightsError) as e:
        resmlp.load_weights(model, sd)
    msg = str(e.value)
    assert "8x8 patch grid" in msg and "32x32 px" in msg and "6x10 patch grid" in msg and "24x40 px" in msg
    assert "resample=True" in msg and "--resample" in msg
    resmlp.load_weights(model, sd, resample=True)
    expected = resample_state_dict(sd, (6, 10))
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, expected[k], msg=k)


def test_state_dicts_resample_to_a_copy_and_need_the_old_grid_when_not_square():
    sd = resmlp.create_model("resmlp_micro8", img_size=(8, 12)).state_dict()
    with pytest.raises(ValueError, match="not a square grid"):
        resample_state_dict(sd, 4)
    out = resmlp.resample_token_mixing(sd, (4, 4), old_grid=(4, 6), method="interp")
    assert out["blocks.0.linear_tokens.weight"].shape == (16, 16)
    assert sd["blocks.0.linear_tokens.weight"].shape == (24, 24)  # the input is left alone
    assert out["blocks.0.mlp_channels.fc1.weight"] is sd["blocks.0.mlp_channels.fc1.weight"]


def test_unknown_method_and_bad_sizes_are_errors():
    model = resmlp.create_model("resmlp_micro8")
    with pytest.raises(ValueError, match="unknown resampling method 'bicubic'"):
        model.set_input_size(12, method="bicubic")
    with pytest.raises(ValueError, match="not divisible by patch_size=2"):
        model.set_input_size((8, 9))
    with pytest.raises(ValueError, match=r"set_input_size\(12\)"):
        model(torch.randn(1, 3, 12, 12))
    with pytest.raises(ValueError, match=r"set_input_size\(\(12, 16\)\)"):
        model(torch.randn(1, 3, 12, 16))


def test_cli_eval_export_and_predict_at_another_size(tmp_path, capsys):
    from PIL import Image

    from resmlp.checkpoint import atomic_save, model_record
    from resmlp.cli import main
    from resmlp.loading import load_model

    model = resmlp.create_model("resmlp_micro8", num_classes=2)
    atomic_save(model_record(model, classes=["a", "b"]), tmp_path / "ck.pt")
    for c in ("a", "b"):
        (tmp_path / "data" / c).mkdir(parents=True)
        Image.new("RGB", (8, 8), (200 if c == "a" else 20, 0, 0)).save(tmp_path / "data" / c / "x.png")
    assert (
        main(
            [
                "eval",
                "--checkpoint",
                str(tmp_path / "ck.pt"),
                "--data",
                str(tmp_path / "data"),
                "--img-size",
                "12x16",
                "--resample",
                "interp",
                "--workers",
                "0",
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    result = __import__("json").loads((tmp_path / "eval.json").read_text())
    assert result["img_size"] == [12, 16] and result["resample"] == "interp" and result["count"] == 2
    assert (
        main(
            [
                "predict",
                str(tmp_path / "ck.pt"),
                str(tmp_path / "data"),
                "--img-size",
                "12",
                "--format",
                "json",
                "--precision",
                "fp32",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "export",
                str(tmp_path / "ck.pt"),
                "--format",
                "safetensors",
                "--img-size",
                "12x16",
                "--out",
                str(tmp_path / "pkg"),
            ]
        )
        == 0
    )
    packaged = load_model(tmp_path / "pkg")
    assert packaged.spec.input_shape == (3, 12, 16) and packaged.spec.preprocess.img_size == (12, 16)
    assert packaged.model(torch.randn(1, 3, 12, 16)).shape == (1, 2)
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["eval", "--checkpoint", str(tmp_path / "ck.pt"), "--data", str(tmp_path / "data"), "--img-size", "12x"])
    assert "expected a size like 48 or 24x32" in capsys.readouterr().err


@pytest.mark.slow
def test_finetune_at_another_size_resamples_the_weights(tmp_path):
    from resmlp.config import load_config
    from resmlp.train.run import train

    tiny = [
        "model.embed_dim=16",
        "model.depth=1",
        "data.batch_size=64",
        "data.workers=0",
        "optim.epochs=1",
        "run.progress=false",
        "run.tensorboard=false",
    ]
    train(load_config("digits", tiny), out=tmp_path / "a")
    summary = train(
        load_config("digits", tiny + ["model.img_size=[8, 12]", "data.crop=rrc"]),
        out=tmp_path / "b",
        finetune=tmp_path / "a" / "checkpoints" / "last.pt",
    )
    assert summary["epochs"] == 1
    from resmlp.checkpoint import read_checkpoint

    ck = read_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt")
    assert tuple(ck["model_args"]["img_size"]) == (8, 12) and ck["model"]["blocks.0.linear_tokens.weight"].shape == (
        24,
        24,
    )


def test_non_square_models_export_and_analyse(tmp_path):
    from resmlp.analysis.report import build_report
    from resmlp.deploy import export_torchscript

    model = resmlp.create_model("resmlp_micro8", img_size=(8, 12)).eval()
    assert export_torchscript(model, tmp_path / "m.ts") < 1e-4  # traced on (B, 3, 8, 12), checked against eager
    traced = torch.jit.load(str(tmp_path / "m.ts"))
    x = torch.randn(2, 3, 8, 12)
    torch.testing.assert_close(traced(x), model(x), rtol=1e-4, atol=1e-4)
    summary = build_report(model, tmp_path / "report", source="random init")
    assert tuple(summary["grid_size"]) == (4, 6) and summary["num_patches"] == 24
    assert (tmp_path / "report" / "cross_patch_overview.png").is_file()


@pytest.mark.parametrize(
    "options",
    [
        dict(token_mixing="conv3x3_separable"),
        dict(token_mixing="none"),
        dict(token_mixing="conv3x3_depthwise", norm="batchnorm"),
    ],
    ids=str,
)
def test_size_free_ablation_variants_change_input_size_exactly(options):
    # A conv in place of A (or no token mixing) has no size-bound weights: any size, and back, is exact.
    torch.manual_seed(0)
    model = resmlp.create_model("resmlp_micro8", num_classes=3, **options).eval()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        want = model(x)
        model.set_input_size((12, 16))  # 6x8 patches
        assert model(torch.randn(2, 3, 12, 16)).shape == (2, 3)
        model.set_input_size(8)
        torch.testing.assert_close(model(x), want, rtol=0, atol=0)


def test_class_mlp_row_and_token_mlp_follow_the_grid():
    torch.manual_seed(0)
    model = resmlp.create_model("resmlp_micro8", num_classes=3, pooling="class_mlp", token_mixing="mlp").eval()
    row = model.class_blocks[0].linear_tokens.weight.detach().clone()  # (1, 1 + 16)
    model.set_input_size((12, 16))  # 6x8 patches
    new = model.class_blocks[0].linear_tokens.weight
    assert new.shape == (1, 1 + 48) and model.blocks[0].mlp_tokens.fc1.weight.shape == (64, 48)
    assert new[0, 0] == row[0, 0]  # the class token's own weight stays
    torch.testing.assert_close(new[0, 1:].sum(), row[0, 1:].sum())  # what the class token reads in total
    with torch.no_grad():
        assert torch.isfinite(model(torch.randn(2, 3, 12, 16))).all()
    sd = resample_state_dict(model.state_dict(), 4, old_grid=(6, 8))  # a state dict too, back to 4x4
    assert sd["class_blocks.1.linear_tokens.weight"].shape == (1, 17)
