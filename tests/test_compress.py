"""Structured pruning of the channel MLPs (resmlp.deploy.compress) and `resmlp compress` (resmlp.train.compress):
exactness of what is kept, per-block widths through every loader, and the whole prune -> recover -> int8 path."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

import resmlp
from resmlp.cli import main
from resmlp.deploy.compress import (
    block_scores,
    channel_scores,
    drop_blocks,
    keep_channels,
    keep_units,
    prune_channel_mlps,
    prune_units,
    prune_width,
    refit_channel_mlps,
    unit_scores,
)
from resmlp.hub import from_pretrained, save_pretrained
from resmlp.infer_arch import infer_architecture
from resmlp.loading import load_model
from resmlp.train.compress import CompressSettings, recovery_config

pytestmark = pytest.mark.openvino


def _model(seed=0):
    torch.manual_seed(seed)
    model = resmlp.create_model("resmlp_micro8", num_classes=3).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def _images(n=32, seed=1):
    return torch.randn(n, 3, 8, 8, generator=torch.Generator().manual_seed(seed))


def test_units_that_add_nothing_are_the_ones_removed_and_the_rest_compute_the_same():
    model, x = _model(), _images()
    with torch.no_grad():
        for b in model.blocks:  # every odd hidden unit writes nothing to the residual stream
            b.mlp_channels.fc2.weight[:, 1::2] = 0
    scores = unit_scores(model, x)
    assert all((s[1::2] == 0).all() and (s[0::2] > 0).all() for s in scores)
    pruned = prune_channel_mlps(model, 0.5, x)
    assert pruned.spec.args["mlp_hidden"] == [256] * len(model.blocks)  # micro8: D=128, 4D=512
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), model(x), rtol=0, atol=1e-5)
    assert resmlp.count_params(pruned) < 0.6 * resmlp.count_params(model)
    with pytest.raises(ValueError, match=r"keep: expected a fraction .* got 0"):
        prune_channel_mlps(model, 0, x)
    with pytest.raises(ValueError, match="structured pruning takes a ResMLP"):
        prune_channel_mlps(resmlp.create_model("mixer_tiny32"), 0.5, torch.randn(2, 3, 32, 32))


def test_the_block_the_predictions_need_least_is_the_one_dropped_and_the_rest_compute_the_same():
    model, x = _model(), _images()
    with torch.no_grad():
        model.blocks[2].ls1.zero_()  # block 2 adds nothing to the residual stream: it is the identity
        model.blocks[2].ls2.zero_()
        model.blocks[0].ls2.mul_(20)  # block 0 adds the most
    scores = block_scores(model, x)
    assert scores[2] == 0 and (scores[[0, 1, 3]] > 0).all() and scores.argmax() == 0
    smaller = drop_blocks(model, 3, x)
    assert smaller.spec.args["depth"] == 3 and len(smaller.blocks) == 3
    with torch.no_grad():
        torch.testing.assert_close(smaller(x), model(x), rtol=0, atol=1e-5)
        torch.testing.assert_close(smaller.blocks[2].ls2, model.blocks[3].ls2)  # later blocks moved up, in order
    narrow = drop_blocks(prune_channel_mlps(model, 0.5, x), 1, x)  # per-block widths follow the blocks kept
    assert narrow.spec.args["mlp_hidden"] == [256] and len(narrow.blocks) == 1
    with pytest.raises(ValueError, match=r"depth: expected a number of blocks to keep in \[1, 4\], got 5"):
        drop_blocks(model, 5, x)


@pytest.mark.parametrize("mixing", ["linear", "conv3x3_depthwise"])
def test_channels_that_carry_nothing_are_the_ones_removed_and_the_rest_compute_the_same(mixing, tmp_path):
    torch.manual_seed(0)
    model = resmlp.create_model("resmlp_micro8", num_classes=3, token_mixing=mixing).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))  # every Aff shift (beta) nonzero: the removed ones must be folded
        for t in [model.stem.proj.weight, model.stem.proj.bias] + [p for b in model.blocks for p in (b.ls1, b.ls2)]:
            t[1::2] = 0  # odd channels: nothing writes to them, so the residual stream holds 0 there
    x = _images()
    scores = channel_scores(model, x)
    assert (scores[1::2] == 0).all() and (scores[0::2] > 0).all()
    kept = keep_channels(model, 0.5, x)
    assert kept.tolist() == list(range(0, 128, 2))
    narrow = prune_width(model, kept)
    assert narrow.spec.args["embed_dim"] == 64 and narrow.blocks[0].mlp_channels.fc1.in_features == 64
    with torch.no_grad():
        torch.testing.assert_close(narrow(x), model(x), rtol=0, atol=1e-5)
    save_pretrained(narrow, tmp_path / "pkg")
    with torch.no_grad():
        torch.testing.assert_close(from_pretrained(tmp_path / "pkg")(x), narrow(x))
        fit = _images(64, seed=2)
        refit_channel_mlps(narrow, model, fit, channels=kept, ridge=1e-9)  # fitted to the kept channels' targets
        torch.testing.assert_close(narrow(fit), model(fit), rtol=0, atol=1e-4)
    with pytest.raises(ValueError, match=r"width: expected a fraction .* got 1.5"):
        keep_channels(model, 1.5, x)
    with pytest.raises(ValueError, match="width pruning takes a ResMLP with a token mixing that keeps channels apart"):
        channel_scores(resmlp.create_model("resmlp_micro8", token_mixing="conv3x3"), x)
    with pytest.raises(ValueError, match=r"width pruning takes a ResMLP with Aff norms \(norm=affine\)"):
        channel_scores(resmlp.create_model("resmlp_micro8", norm="layernorm"), x)


def test_refit_puts_what_the_removed_units_wrote_onto_the_kept_ones():
    model, x = _model(), _images(64)
    with torch.no_grad():
        for b in model.blocks:  # units 256..511 repeat units 0..255, writing a tenth as much: removed, not lost
            fc1, fc2 = b.mlp_channels.fc1, b.mlp_channels.fc2
            fc1.weight[256:] = fc1.weight[:256]
            fc1.bias[256:] = fc1.bias[:256]
            fc2.weight[:, 256:] = 0.1 * fc2.weight[:, :256]
    units = keep_units(model, 0.5, x)
    assert all(u.tolist() == list(range(256)) for u in units)  # the larger writers of each pair
    pruned = prune_units(model, units)
    with torch.no_grad():
        before = (pruned(x) - model(x)).abs().max()
        refit_channel_mlps(pruned, model, x, units=units, ridge=1e-9)  # B refitted too: already exact, kept so
        after = (pruned(x) - model(x)).abs().max()
        refitted, original = pruned.blocks[0].mlp_channels.fc2.weight, model.blocks[0].mlp_channels.fc2.weight
        torch.testing.assert_close(refitted, 1.1 * original[:, :256], rtol=1e-3, atol=1e-4)
    assert before > 1e-3 and after < 1e-4


def test_per_block_widths_survive_every_way_of_loading(tmp_path):
    model = prune_channel_mlps(_model(), 0.3, _images())
    widths = model.spec.args["mlp_hidden"]
    assert widths == [154] * 4
    assert infer_architecture(model.state_dict()) == ("resmlp_micro8", {"mlp_ratio": 154 / 128, "num_classes": 3})
    state = model.state_dict()
    state["blocks.1.mlp_channels.fc1.weight"] = state["blocks.1.mlp_channels.fc1.weight"][:100]
    assert infer_architecture(state)[1]["mlp_hidden"] == [154, 100, 154, 154]
    x = _images(4, seed=5)
    save_pretrained(model, tmp_path / "pkg")
    torch.save(model.state_dict(), tmp_path / "bare.pt")
    with torch.no_grad():
        want = model(x)
        for loaded in (from_pretrained(tmp_path / "pkg"), load_model(tmp_path / "bare.pt").model):
            torch.testing.assert_close(loaded(x), want)
            assert [b.mlp_channels.fc1.out_features for b in loaded.blocks] == widths
    fused = resmlp.fuse(model)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), want, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match=r"mlp_hidden: expected 4 hidden widths >= 1"):
        resmlp.create_model("resmlp_micro8", mlp_hidden=[8, 8])


def test_compress_prunes_recovers_and_quantises_a_run(tmp_path, capsys):
    rng = np.random.default_rng(0)
    for c, name in enumerate(["a", "b", "c"]):
        (tmp_path / "data" / name).mkdir(parents=True)
        for i in range(16):  # three classes of different mean brightness
            pixels = np.clip(rng.normal(60 + 70 * c, 30, (8, 8, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(tmp_path / "data" / name / f"{i}.png")
    tiny = ["model.depth=2", "data.batch_size=8", "run.progress=false", "run.tensorboard=false"]
    run = tmp_path / "run"
    argv = ["train", "--recipe", "digits", "--data", str(tmp_path / "data"), "--epochs", "2", "--out", str(run)]
    assert main([*argv, "--set", *tiny]) == 0
    out = tmp_path / "small"
    flags = ["--keep", "0.25", "--depth", "1", "--img-size", "6", "--minutes", "0.05", "--calibration", "8"]
    assert main(["compress", str(run), "--out", str(out), *flags]) == 0
    printed = capsys.readouterr().out
    assert "compressed int8" in printed and "images/s" in printed
    report = json.loads((out / "report.json").read_text())
    assert report["depth"] == 1 and report["mlp_hidden"] == [128] and report["recovery"]["epochs"] >= 1
    steps = {r["step"]: r for r in report["rows"]}
    assert set(steps) == {
        "original fp32",
        "original int8",
        "pruned fp32 (before recovery)",
        "compressed fp32",
        "compressed int8",
    }
    assert steps["compressed fp32"]["params"] < 0.4 * steps["original fp32"]["params"]
    assert steps["compressed fp32"]["gflops"] < 0.3 * steps["original fp32"]["gflops"]
    assert all(r["images_per_s"] > 0 for r in report["rows"]) and report["speedup_int8"] > 0
    packaged = from_pretrained(out / "model")
    assert packaged.spec.args["mlp_hidden"] == [128] and packaged.spec.classes == ("a", "b", "c")
    assert (out / "openvino-int8" / "model.xml").is_file() and (out / "recovery" / "summary.json").is_file()
    config = resmlp.config.load_config(str(out / "recovery" / "config.yaml"))
    assert config.distill.teacher == str(out / "original.pt") and config.model.mlp_hidden == [128]
    assert config.distill.teacher_runtime == "openvino"  # the original's forward pass, compiled by OpenVINO
    assert config.model.depth == 1 and len(packaged.blocks) == 1
    # 6 px images: 9 patches instead of 16, the model and its recovery at that size, the images resized to it
    assert config.model.img_size == 6 and packaged.spec.input_shape == (3, 6, 6) and report["settings"]["img_size"] == 6
    assert steps["compressed fp32"]["gflops"] < 9 / 16 * steps["original fp32"]["gflops"] / 2  # 1 of 2 blocks too
    assert main(["compress", str(run), "--out", str(tmp_path / "bad"), "--img-size", "5"]) == 2
    assert "error: --img-size 5: expected a multiple of the model's patch size, 2" in capsys.readouterr().err
    report_before = (out / "report.json").read_bytes()
    assert main(["compress", str(run), "--out", str(out), *flags]) == 2  # not written over
    assert f"error: --out {out}: holds an earlier compression" in capsys.readouterr().err
    assert (out / "report.json").read_bytes() == report_before


def test_compress_view_crop_recovers_on_windows_with_the_teacher_on_full_images(tmp_path, capsys):
    rng = np.random.default_rng(1)
    for c, name in enumerate(["a", "b"]):
        (tmp_path / "data" / name).mkdir(parents=True)
        for i in range(16):
            pixels = np.clip(rng.normal(70 + 90 * c, 30, (8, 8, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(tmp_path / "data" / name / f"{i}.png")
    tiny = ["model.depth=2", "data.batch_size=8", "run.progress=false", "run.tensorboard=false"]
    run, out = tmp_path / "run", tmp_path / "small"
    argv = ["train", "--recipe", "digits", "--data", str(tmp_path / "data"), "--epochs", "1", "--out", str(run)]
    assert main([*argv, "--set", *tiny, "data.batch_augment=true"]) == 0
    flags = ["--keep", "0.5", "--img-size", "6", "--view", "crop", "--minutes", "0.05", "--calibration", "8"]
    extra = ["--width", "0.5", "--teacher-runtime", "eager", "--set", "optim.lr=0.002"]
    assert main(["compress", str(run), "--out", str(out), *flags, *extra]) == 0
    config = resmlp.config.load_config(str(out / "recovery" / "config.yaml"))
    assert config.distill.teacher_runtime == "eager" and config.optim.lr == 0.002  # --set reached the recovery
    # half the residual stream's channels as well: the recovery trains, and the package holds, a D = 64 model
    assert config.model.embed_dim == 64 and json.loads((out / "report.json").read_text())["embed_dim"] == 64
    # the recovery: the model at its own 8 px, every epoch on 6 px windows, the teacher on the full 8 px images
    assert config.model.img_size in (None, 8) and config.progressive.mode == "crop"
    assert config.progressive.sizes == [[0, 6]]
    assert config.distill.teacher_view == "full" and config.data.mixup_alpha == config.data.cutmix_alpha == 0
    packaged = from_pretrained(out / "model")  # takes the central 6 px window of an 8 px image
    assert packaged.spec.input_shape == (3, 6, 6) and packaged.spec.preprocess.crop_pct == pytest.approx(0.75)
    assert packaged.spec.args["embed_dim"] == 64 and packaged.blocks[0].mlp_channels.fc1.weight.shape == (256, 64)
    report = json.loads((out / "report.json").read_text())
    assert report["settings"]["view"] == "crop" and report["speedup_int8"] > 0
    capsys.readouterr()
    assert main([*argv[:-1], str(tmp_path / "plain"), "--set", *tiny]) == 0  # no batch augmentation
    assert main(["compress", str(tmp_path / "plain"), "--out", str(tmp_path / "o"), *flags]) == 2
    assert "error: --view crop: the recovery cuts its windows from batch-augmented images" in capsys.readouterr().err
    assert main(["compress", str(run), "--out", str(tmp_path / "o"), "--width", "0"]) == 2
    assert "error: --keep 0.5 / --width 0: --keep and --width must lie in (0, 1]" in capsys.readouterr().err


def test_recovery_overrides_apply_after_compress_own_settings(tmp_path):
    cfg = resmlp.config.load_config("cifar10_cpu")
    start, teacher = tmp_path / "pruned.pt", tmp_path / "original.pt"
    plain = recovery_config(cfg, 72, [256] * 8, start, teacher, CompressSettings())
    assert plain.data.cutmix_alpha == 1.0 and plain.optim.lr == pytest.approx(0.25 * cfg.optim.lr)
    sets = ("data.cutmix_alpha=0", "optim.lr=1e-3", "distill.alpha=0.5")
    tuned = recovery_config(cfg, 72, [256] * 8, start, teacher, CompressSettings(recovery_set=sets))
    assert tuned.data.cutmix_alpha == 0 and tuned.optim.lr == 1e-3 and tuned.distill.alpha == 0.5
    # what compress itself decides stays unless a --set names it: the pruned shape, the teacher, the budget
    assert tuned.model.embed_dim == 72 and tuned.model.mlp_hidden == [256] * 8 and tuned.model.finetune == str(start)
    assert tuned.distill.teacher == str(teacher) and tuned.budget.time_limit_min == 10.0
    with pytest.raises(resmlp.config.ConfigError, match=r"compress --set \(the recovery run's config\): .*optim\.lrr"):
        recovery_config(cfg, 72, [256] * 8, start, teacher, CompressSettings(recovery_set=("optim.lrr=1",)))


def test_compress_needs_a_run(tmp_path, capsys):
    save_pretrained(_model(), tmp_path / "pkg")
    assert main(["compress", str(tmp_path / "pkg"), "--out", str(tmp_path / "o")]) == 2
    assert "compress needs a run directory or one of its checkpoints" in capsys.readouterr().err
