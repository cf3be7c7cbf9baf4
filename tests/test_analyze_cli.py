"""`resmlp analyze` end to end, in process, on tiny models: files written and the numbers in them."""

import json
from html import escape

import numpy as np
import pytest
import torch
from PIL import Image

import resmlp
from resmlp.analysis.stats import block_weights, layer_stats
from resmlp.checkpoint import atomic_save, model_record
from resmlp.cli import main
from resmlp.weights import convert_state_dict

CLASSES = ["cat", "dog", "eel"]


def tiny_model(seed=0, **kw):
    torch.manual_seed(seed)
    model = resmlp.create_model("resmlp_micro8", num_classes=3, **kw)
    with torch.no_grad():  # stand-in for training: move the weights away from the init
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def make_run(tmp_path, model):
    run = tmp_path / "run"
    atomic_save({**model_record(model, classes=CLASSES), "config": {}}, run / "checkpoints" / "best.pt")
    lines = [
        json.dumps(
            {
                "epoch": e,
                "train_loss": 2.0 - e,
                "val_loss": 2.1 - e,
                "val_top1": 40.0 + e,
                "val_top5": 100.0,
                "lr": 1e-3,
                "images_per_s": 1.0,
                "wall_time_s": 1.0,
            }
        )
        for e in range(2)
    ]
    (run / "metrics.jsonl").write_text("\n".join(lines) + '\n{"epoch": 2, "train_lo', encoding="utf-8")  # cut short
    confusion = [[3, 1, 0], [0, 4, 0], [1, 1, 2]]
    (run / "eval.json").write_text(
        json.dumps(
            {
                "top1": 75.0,
                "top5": 100.0,
                "classes": CLASSES,
                "confusion": confusion,
                "per_class_top1": dict(zip(CLASSES, [75.0, 100.0, 50.0])),
            }
        )
    )
    return run


def make_image_folder(root, per_class=4):
    rng = np.random.default_rng(0)
    for name in CLASSES:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(root / name / f"{i}.png")
    return root


def test_run_directory_end_to_end(tmp_path, capsys):
    model = tiny_model()
    run = make_run(tmp_path, model)
    data = make_image_folder(tmp_path / "val")
    out = tmp_path / "report"
    with pytest.warns(UserWarning, match="not JSON"):
        rc = main(
            [
                "analyze",
                str(run),
                "--out",
                str(out),
                "--prune",
                "0.5,0.9",
                "--prune-targets",
                "A,B",
                "--data",
                str(data),
                "--batch-size",
                "5",
                "--device",
                "cpu",
            ]
        )
    assert rc == 0
    printed = capsys.readouterr().out
    assert f"to {out}" in printed and "prune 0.90" in printed
    for name in (
        "cross_patch_overview.png",
        "offset_profile.png",
        "sparsity.png",
        "locality.png",
        "layer_scale.png",
        "training_curves.png",
        "confusion.png",
        "pruning.png",
        "summary.json",
        "report.html",
        "maps/layer00.png",
        "maps/layer03.png",
        "maps/maps.npz",
    ):
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    expected = layer_stats(model)
    assert summary["source"].endswith("best.pt") and summary["model_name"] == "resmlp_micro8"
    for got, want in zip(summary["layers"], expected):
        assert got["sparsity"] == pytest.approx(want["sparsity"])
        assert got["locality"] == pytest.approx(want["locality"])
        assert got["layer_scale"]["ls1"] == pytest.approx(float(model.blocks[got["layer"]].ls1.detach().abs().mean()))
    assert len(summary["random_init_layers"]) == 4
    assert [m["epoch"] for m in summary["training"]] == [0, 1]
    assert summary["eval"]["confusion"][2] == [1, 1, 2]
    results = summary["pruning"]["results"]
    assert [r["sparsity"] for r in results] == [0.0, 0.5, 0.9]
    assert results[1]["targets"]["A"]["sparsity"] == 0.5  # 128 of 256 entries
    assert results[2]["targets"]["B"]["sparsity"] == pytest.approx(round(0.9 * 128 * 512) / (128 * 512))
    assert all(0 <= r["top1"] <= 100 for r in results)
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == len(summary["figures"]) + 4  # + one map per layer
    assert all(escape(f["caption"]) in html for f in summary["figures"])
    with np.load(out / "maps" / "maps.npz") as maps:
        a = model.blocks[0].linear_tokens.weight.detach()
        np.testing.assert_allclose(maps["layer00"], a[maps["layer00_rows"]].reshape(-1, 4, 4).numpy())


def test_planted_identity_and_shift_give_locality_zero_and_one(tmp_path):
    model = tiny_model()
    with torch.no_grad():
        for i, ws in enumerate(block_weights(model)):
            ws["A"].copy_(torch.eye(16) if i < 2 else torch.diag(torch.ones(12), diagonal=4))  # shift one row
    atomic_save(model_record(model, classes=CLASSES), tmp_path / "m.pt")
    assert main(["analyze", str(tmp_path / "m.pt"), "--out", str(tmp_path / "o")]) == 0
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    loc = [l["locality"] for l in summary["layers"]]
    assert [l["mean_distance"] for l in loc] == pytest.approx([0, 0, 1, 1])
    assert [l["share_3x3"] for l in loc] == pytest.approx([1, 1, 1, 1])
    assert [l["peak_in_3x3"] for l in loc] == [1, 1, 1, 1]
    assert [l["sparsity"]["A"] for l in summary["layers"]] == pytest.approx([15 / 16] * 2 + [1 - 12 / 256] * 2)
    assert summary["depth_trend"]["mean_distance"] == {"first_third": 0.0, "last_third": 1.0}
    assert summary["training"] is None and summary["pruning"] is None


def test_plain_deit_weights_with_inferred_or_named_model(tmp_path, capsys):
    model = tiny_model()
    torch.save({"model": convert_state_dict(model.state_dict(), to="deit")}, tmp_path / "deit.pth")
    assert main(["analyze", str(tmp_path / "deit.pth"), "--out", str(tmp_path / "inferred")]) == 0
    inferred = json.loads((tmp_path / "inferred" / "summary.json").read_text())
    assert inferred["layers"][1]["sparsity"] == pytest.approx(layer_stats(model)[1]["sparsity"])
    rc = main(["analyze", str(tmp_path / "deit.pth"), "--model", "resmlp_micro8", "--out", str(tmp_path / "o")])
    assert rc == 0
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["model_args"]["num_classes"] == 3  # read off the head, the variant's default is 10
    assert summary["layers"][1]["sparsity"] == pytest.approx(layer_stats(model)[1]["sparsity"])


def test_mixer_report_uses_token_mlp_fc1_rows(tmp_path):
    torch.manual_seed(0)
    model = resmlp.create_model("mixer_tiny32", depth=2, embed_dim=16, img_size=16, num_classes=3)
    atomic_save(model_record(model), tmp_path / "mixer.pt")
    assert main(["analyze", str(tmp_path / "mixer.pt"), "--out", str(tmp_path / "o"), "--prune", "0.5"]) == 0
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["architecture"] == "mixer" and summary["locality_centre"].startswith("peak")
    assert "peak_mean_distance" in summary["layers"][0]["locality"]
    assert not (tmp_path / "o" / "layer_scale.png").exists() and not (tmp_path / "o" / "offset_profile.png").exists()
    assert summary["pruning"]["results"][1]["targets"]["A"]["sparsity"] == 0.5
    assert "Token-mixing" in (tmp_path / "o" / "report.html").read_text()


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--prune", "0.5,2"], "outside [0, 1]"),
        (["--prune-targets", "A,Z"], "unknown target Z"),
    ],
)
def test_bad_arguments_exit_2_naming_the_problem(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as e:
        main(["analyze", str(tmp_path), "--out", str(tmp_path / "o"), *argv])
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_user_errors_are_one_line(tmp_path, capsys):
    assert main(["analyze", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "o")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["analyze", str(tmp_path), "--out", str(tmp_path / "o")]) == 2  # a folder with no checkpoints
    assert "checkpoints/best.pt" in capsys.readouterr().err
    atomic_save(model_record(tiny_model(), classes=CLASSES), tmp_path / "m.pt")
    (tmp_path / "val" / "yak").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "val" / "yak" / "0.png")
    assert main(["analyze", str(tmp_path / "m.pt"), "--out", str(tmp_path / "o"), "--data", str(tmp_path / "val")]) == 2
    assert "add --prune" in capsys.readouterr().err
    argv = [
        "analyze",
        str(tmp_path / "m.pt"),
        "--out",
        str(tmp_path / "o"),
        "--prune",
        "0.5",
        "--data",
        str(tmp_path / "val"),
    ]
    assert main(argv) == 2
    assert "class folders yak are not among the model's classes" in capsys.readouterr().err


@pytest.mark.parametrize("mixing", ["conv3x3", "conv3x3_depthwise", "conv3x3_separable"])
def test_conv_variants_get_their_kernels_plotted_in_place_of_a(tmp_path, mixing):
    model = tiny_model(token_mixing=mixing)
    with torch.no_grad():  # a planted kernel: only the centre and the tap to the right
        for block in model.blocks:
            w = block.conv_tokens.conv.weight
            w.zero_()
            w[..., 1, 1] = 1.0
            w[..., 1, 2] = 0.5
    atomic_save(model_record(model, classes=CLASSES), tmp_path / "m.pt")
    assert main(["analyze", str(tmp_path / "m.pt"), "--out", str(tmp_path / "o"), "--prune", "0.5"]) == 0
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["architecture"] == "resmlp" and (tmp_path / "o" / "offset_profile.png").is_file()
    offsets = np.load(tmp_path / "o" / "maps" / "maps.npz")["layer00_offsets"]
    centre = offsets.shape[0] // 2
    kernel = offsets[centre - 1 : centre + 2, centre - 1 : centre + 2] / offsets[centre, centre]
    np.testing.assert_allclose(kernel, [[0, 0, 0], [0, 1, 0.5], [0, 0, 0]], atol=1e-6)  # the planted taps
    assert summary["layers"][0]["locality"]["share_3x3"] == pytest.approx(1.0)
    assert "kernel" in (tmp_path / "o" / "report.html").read_text()


def test_no_token_mixing_is_a_one_line_error(tmp_path, capsys):
    atomic_save(model_record(tiny_model(token_mixing="none"), classes=CLASSES), tmp_path / "m.pt")
    assert main(["analyze", str(tmp_path / "m.pt"), "--out", str(tmp_path / "o")]) == 2
    assert "token_mixing='none'" in capsys.readouterr().err
