"""The packaged model directory (resmlp.hub.packaged): save_pretrained <-> from_pretrained, timm's config.json
schema, directories timm wrote, the format-1 config, and the config every export carries."""

import json

import pytest
import torch
from conftest import TIMM_IN1K_EVAL
from test_export import CLASSES, PRE, images, model_with_weights

import resmlp
from resmlp.hub.packaged import packaged_config, save_pretrained
from resmlp.models import Preprocess
from resmlp.weights import WeightsError


def test_from_pretrained_round_trip(tmp_path):
    model = model_with_weights(drop_path_rate=0.1)
    out = save_pretrained(model, tmp_path / "pkg", preprocess=PRE, classes=CLASSES)
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    config = json.loads((out / "config.json").read_text())
    ours = config["resmlp"]  # our spec rides along under a key timm ignores
    assert ours["model_name"] == "resmlp_micro8" and ours["model_args"]["drop_path_rate"] == 0.1
    assert config["architecture"] == "resmlp_micro8"  # timm has no function for this body
    assert config["num_classes"] == 3 and config["pretrained_cfg"]["crop_pct"] == 0.875

    loaded = resmlp.from_pretrained(tmp_path / "pkg")
    assert not loaded.training and loaded.spec.class_names() == CLASSES and loaded.spec.preprocess == PRE
    x = images(3)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    assert resmlp.from_pretrained(tmp_path / "pkg" / "config.json").spec.class_names() == CLASSES  # the file works too


# timm's config.json schema, from timm/models/_hub.py (save_config_for_hf) and _pretrained.py (PretrainedCfg):
# root keys, and the pretrained_cfg keys its loader turns into the model's input/preprocessing settings.
TIMM_ROOT_KEYS = {"architecture", "num_classes", "num_features", "global_pool", "pretrained_cfg", "label_names"}
TIMM_PRETRAINED_CFG_KEYS = {
    "input_size",
    "fixed_input_size",
    "interpolation",
    "crop_pct",
    "crop_mode",
    "mean",
    "std",
    "num_classes",
    "first_conv",
    "classifier",
    "label_names",
}


def test_packaged_config_follows_timms_schema(tmp_path):
    """A ResMLP-S12 body at 32 px with 3 classes: timm's resmlp_12_224 built with model_args img_size=32."""
    torch.manual_seed(0)
    model = resmlp.create_model("resmlp_s12", img_size=32, num_classes=3)
    pre = Preprocess(img_size=32, crop_pct=0.95, interpolation="bilinear", mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))
    save_pretrained(model, tmp_path / "pkg", preprocess=pre, classes=CLASSES)
    config = json.loads((tmp_path / "pkg" / "config.json").read_text())
    assert TIMM_ROOT_KEYS <= set(config) and TIMM_PRETRAINED_CFG_KEYS <= set(config["pretrained_cfg"])
    assert config["architecture"] == "resmlp_12_224"
    assert config["num_classes"] == 3 and config["num_features"] == 384 and config["global_pool"] == "avg"
    assert config["model_args"] == {"img_size": 32}  # patch size, width and depth are fixed by resmlp_12_224
    cfg = config["pretrained_cfg"]
    assert cfg["input_size"] == [3, 32, 32] and cfg["fixed_input_size"] is True and cfg["crop_mode"] == "center"
    assert cfg["crop_pct"] == 0.95 and cfg["interpolation"] == "bilinear"
    assert cfg["mean"] == [0.5, 0.4, 0.3] and cfg["std"] == [0.2, 0.25, 0.3] and cfg["num_classes"] == 3
    assert cfg["first_conv"] == "stem.proj" and cfg["classifier"] == "head"
    assert config["label_names"] == cfg["label_names"] == CLASSES
    assert "architecture" not in cfg  # timm pops it from pretrained_cfg to the root
    # Weights in timm's key layout: its module names (resmlp_12_224 = MlpMixer of ResBlocks) and shapes.
    from safetensors.torch import load_file

    sd = load_file(str(tmp_path / "pkg" / "model.safetensors"))
    assert sd["stem.proj.weight"].shape == (384, 3, 16, 16) and sd["blocks.11.linear_tokens.weight"].shape == (4, 4)
    assert sd["blocks.0.norm1.alpha"].shape == (1, 1, 384) and sd["blocks.0.ls1"].shape == (384,)
    assert sd["blocks.0.mlp_channels.fc1.weight"].shape == (1536, 384) and sd["head.weight"].shape == (3, 384)
    assert {k.split(".")[0] for k in sd} == {"stem", "blocks", "norm", "head"}
    mixer = resmlp.create_model("mixer_b16", img_size=32, in_chans=1, num_classes=2)
    save_pretrained(mixer, tmp_path / "mix")
    config = json.loads((tmp_path / "mix" / "config.json").read_text())
    assert config["architecture"] == "mixer_b16_224" and config["model_args"] == {"img_size": 32, "in_chans": 1}
    assert config["pretrained_cfg"]["input_size"] == [1, 32, 32]


def test_a_convnet_teacher_packages_and_reloads(tmp_path):
    """Architectures timm does not build keep the schema (architecture = our name) and round-trip."""
    model = model_with_weights("resnet20_cifar")
    save_pretrained(model, tmp_path / "pkg", classes=CLASSES)
    config = json.loads((tmp_path / "pkg" / "config.json").read_text())
    assert config["architecture"] == "resnet20_cifar" and config["num_features"] == 64
    assert config["pretrained_cfg"]["first_conv"] == "stem.0"
    x = images(2, 32)
    with torch.no_grad():
        torch.testing.assert_close(resmlp.from_pretrained(tmp_path / "pkg")(x), model(x), rtol=0, atol=0)


def timm_written_directory(tmp_path, model, **cfg):
    """A directory as timm's push_to_hub writes it (no "resmlp" key): config.json + model.safetensors."""
    from safetensors.torch import save_file

    folder = tmp_path / "timm_dir"
    folder.mkdir()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))
    config = {
        "architecture": "resmlp_12_224",
        "num_classes": 3,
        "num_features": 384,
        "global_pool": "avg",
        "model_args": {"img_size": 32},
        "pretrained_cfg": {
            "tag": "fb_in1k",
            "custom_load": False,
            "input_size": [3, 32, 32],
            **TIMM_IN1K_EVAL,
            "num_classes": 3,
            "pool_size": None,
            "first_conv": "stem.proj",
            "classifier": "head",
            **cfg,
        },
        "label_names": CLASSES,
    }
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_from_pretrained_reads_a_directory_timm_wrote(tmp_path):
    torch.manual_seed(0)
    model = resmlp.create_model("resmlp_s12", img_size=32, num_classes=3).eval()
    loaded = resmlp.from_pretrained(timm_written_directory(tmp_path, model))
    assert loaded.spec.name == "resmlp_s12" and loaded.spec.args["img_size"] == 32
    assert loaded.spec.class_names() == CLASSES and loaded.spec.preprocess.crop_pct == 0.875
    x = images(2, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


def test_from_pretrained_still_reads_format_1_directories(tmp_path):
    """Directories packaged before the timm schema: our spec at the root with format=resmlp-pretrained."""
    model = model_with_weights()
    save_pretrained(model, tmp_path / "pkg", preprocess=PRE, classes=CLASSES)
    config = json.loads((tmp_path / "pkg" / "config.json").read_text())
    old = {
        "format": "resmlp-pretrained",
        "format_version": 1,
        "architectures": ["ResMLP"],
        "arch": "resmlp",
        **{k: config["resmlp"][k] for k in ("model_name", "model_args", "preprocess", "classes")},
        "num_classes": 3,
    }
    (tmp_path / "pkg" / "config.json").write_text(json.dumps(old))
    loaded = resmlp.from_pretrained(tmp_path / "pkg")
    assert loaded.spec.class_names() == CLASSES and loaded.spec.preprocess == PRE
    x = images(2)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


def test_from_pretrained_errors(tmp_path):
    with pytest.raises(WeightsError, match="no config.json"):
        resmlp.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text('{"format": "something-else"}')
    with pytest.raises(WeightsError, match="not a resmlp config .* nor a timm config"):
        resmlp.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text('{"architecture": "vit_base_patch16_224", "pretrained_cfg": {}}')
    with pytest.raises(
        WeightsError, match="config.json: architecture 'vit_base_patch16_224' is not a timm architecture resmlp builds"
    ):
        resmlp.from_pretrained(tmp_path)


def test_the_flat_format_1_config_is_what_onnx_and_torchscript_carry(tmp_path):
    """Format 1: our spec at the root; class names default to class_0..; `preprocess` / `classes` replace
    the model's own, as in config.json (format 2, our spec under "resmlp")."""
    model = model_with_weights()
    flat = packaged_config(model, version=1)
    assert flat["format"] == "resmlp-pretrained" and flat["format_version"] == 1
    assert flat["architectures"] == ["ResMLP"] and flat["arch"] == "resmlp" and flat["num_classes"] == 3
    assert flat["classes"] == ["class_0", "class_1", "class_2"]
    flat = packaged_config(model, preprocess=PRE, classes=CLASSES, version=1)
    timm = packaged_config(model, preprocess=PRE, classes=CLASSES)
    assert {k: flat[k] for k in ("model_name", "model_args", "preprocess", "classes")} == {
        k: timm["resmlp"][k] for k in ("model_name", "model_args", "preprocess", "classes")
    }
    assert timm["resmlp"]["format"] == "resmlp-pretrained" and timm["resmlp"]["format_version"] == 2
    with pytest.raises(ValueError, match="packaged format version 3"):
        packaged_config(model, version=3)
    (tmp_path / "file").write_text("")
    with pytest.raises(NotADirectoryError, match="exists and is not a directory"):
        save_pretrained(model, tmp_path / "file")
