import dataclasses
import re

import pytest
import yaml

from resmlp.config import ConfigError, config_from_dict, config_to_dict, load_config, parse_override, resolve_recipe


def test_defaults_recipe_and_overrides_compose():
    cfg = load_config("digits", ["optim.lr=1e-3", "data.scale=[0.5, 1]", "model.depth=2", "run.time_limit_min=null"])
    assert cfg.optim.lr == 1e-3 and cfg.data.scale == [0.5, 1.0] and cfg.model.depth == 2
    assert cfg.model.overrides() == {"depth": 2, "drop_path_rate": 0.05}  # None fields keep the variant's value
    assert cfg.data.source == "digits" and cfg.model.name == "resmlp_micro8"
    assert cfg.run.time_limit_min is None
    assert load_config(None).optim.name == "lamb"


def test_int_is_accepted_for_float_but_not_the_reverse():
    assert load_config(None, ["optim.lr=1"]).optim.lr == 1.0
    with pytest.raises(ConfigError, match=r"optim.epochs: expected an integer, got 1.5"):
        load_config(None, ["optim.epochs=1.5"])


@pytest.mark.parametrize(
    "item,msg",
    [
        ("optim.lrr=1", "unknown key optim.lrr"),
        ("foo.bar=1", "unknown key foo"),
        ("run.compile=maybe", "run.compile: expected true/false"),
        ("data.batch_size=abc", "data.batch_size: expected an integer"),
        ("optim", "must look like section.key=value"),
        ("model.depth=2.5", "model.depth: expected an integer"),
        ("data.source=imagenet", "data.source: expected one of digits, cifar10, cifar100, folder, got 'imagenet'"),
        ("data.on_bad=ignore", "data.on_bad: expected one of skip, fail, got 'ignore'"),
        ("data.crop=center", "data.crop: expected one of rrc, pad, got 'center'"),
        ("data.interpolation=lanczos", "data.interpolation: expected one of bilinear, bicubic, nearest, got 'lanczos'"),
        ("data.mean=cifar", "data.mean: expected one of dataset, imagenet, got 'cifar'"),
        ("data.std=[0.2, x, 0.2]", r"data.std\[1\]: expected a number, got 'x'"),
        ("optim.name=adam", "optim.name: expected one of lamb, adamw, sgd, muon, got 'adam'"),
        ("distill.kind=medium", "distill.kind: expected one of hard, soft, got 'medium'"),
        ("run.precision=fp8", "run.precision: expected one of auto, fp32, bf16, fp16, got 'fp8'"),
    ],
)
def test_bad_overrides_name_the_key(item, msg):
    with pytest.raises(ConfigError, match=msg):
        load_config(None, [item])


def test_bundled_recipes_all_parse():
    for name in [
        "digits",
        "cifar10_cpu",
        "imagenet_s12",
        "imagenet_s24",
        "imagenet_s36",
        "imagenet_b24",
        "cifar10_finetune",
        "cifar10_teacher",
        "cifar10_fast_teacher",
    ]:
        load_config(name)
    s12 = load_config("imagenet_s12")
    assert (s12.optim.name, s12.optim.lr, s12.optim.weight_decay, s12.optim.epochs, s12.optim.warmup_epochs) == (
        "lamb",
        5e-3,
        0.2,
        400,
        5,
    )
    assert (
        s12.model.drop_path_rate == 0.05 and s12.data.repeated_aug and s12.data.auto_augment == "rand-m9-mstd0.5-inc1"
    )


def test_choice_fields_accept_their_values():
    cfg = load_config(
        None,
        [
            "data.mean=imagenet",
            "data.std=[0.2, 0.25, 0.3]",
            "run.precision=bf16",
            "distill.kind=soft",
            "data.interpolation=bilinear",
        ],
    )
    assert cfg.data.mean == "imagenet" and cfg.data.std == [0.2, 0.25, 0.3] and cfg.run.precision == "bf16"
    assert cfg.distill.kind == "soft" and cfg.data.interpolation == "bilinear"


def test_legacy_keys_migrate_to_the_model_fields(tmp_path):
    """Run directories and recipes written before img_size and the constructor arguments became model fields."""
    old = config_to_dict(load_config("digits"))
    old["model"] = {"name": "resmlp_micro8", "drop_path_rate": 0.05, "overrides": {"embed_dim": 16, "depth": 1}}
    old["data"]["img_size"] = 12
    cfg = config_from_dict(old)
    assert (cfg.model.embed_dim, cfg.model.depth, cfg.model.img_size) == (16, 1, 12)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({**old, "data": {**old["data"], "img_size": None}}))
    assert load_config(str(tmp_path / "config.yaml")).model.img_size is None
    assert load_config(None, ["model.overrides={depth: 3}", "data.img_size=16"]).model.overrides() == {
        "drop_path_rate": 0.0,
        "depth": 3,
        "img_size": 16,
    }
    with pytest.raises(ConfigError, match="unknown key model.depht; valid keys in model: act, blocks_per_stage"):
        load_config(None, ["model.overrides={depht: 3}"])


def test_recipe_base_is_deep_merged_and_relative_to_the_recipe(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "parent.yaml").write_text("base: digits\noptim:\n  lr: 0.5\n  epochs: 7\n")
    (tmp_path / "child.yaml").write_text("base: sub/parent.yaml\noptim:\n  epochs: 9\n")
    cfg = load_config(str(tmp_path / "child.yaml"))
    digits = load_config("digits")
    assert (cfg.optim.lr, cfg.optim.epochs, cfg.optim.name) == (0.5, 9, digits.optim.name)
    assert cfg.data == digits.data and cfg.model == digits.model


def test_recipe_base_errors_name_the_file_and_the_cycle(tmp_path):
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(ConfigError, match=r"recipe base cycle: .*a.yaml -> .*b.yaml -> .*a.yaml"):
        load_config(str(tmp_path / "a.yaml"))
    (tmp_path / "c.yaml").write_text("optim:\n  lrr: 1\n")
    (tmp_path / "d.yaml").write_text("base: c.yaml\n")
    with pytest.raises(ConfigError, match=r"c.yaml: unknown key optim.lrr"):
        load_config(str(tmp_path / "d.yaml"))
    (tmp_path / "e.yaml").write_text("base: missing.yaml\n")
    with pytest.raises(ConfigError, match="missing.yaml does not exist"):
        load_config(str(tmp_path / "e.yaml"))


def test_deeper_imagenet_recipes_are_s12_with_their_model():
    s12 = load_config("imagenet_s12")
    for name, model, drop_path_rate in [
        ("imagenet_s24", "resmlp_s24", 0.1),
        ("imagenet_s36", "resmlp_s36", 0.15),
        ("imagenet_b24", "resmlp_b24", 0.2),
    ]:
        assert load_config(name) == dataclasses.replace(
            s12, model=dataclasses.replace(s12.model, name=model, drop_path_rate=drop_path_rate)
        )


def test_recipe_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown recipe 'nope'; bundled recipes: .*digits"):
        resolve_recipe("nope")
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim:\n  lr: [1\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_config(str(bad))
    bad.write_text("optim:\n  learning_rate: 1\n")
    with pytest.raises(ConfigError, match="bad.yaml: unknown key optim.learning_rate"):
        load_config(str(bad))


def test_parse_override_reads_yaml_values():
    assert parse_override("optim.lr=5e-3") == {"optim": {"lr": 0.005}}
    assert parse_override("data.auto_augment=null") == {"data": {"auto_augment": None}}


def test_training_levers_are_checked_choices_and_not_constructor_arguments():
    cfg = load_config(
        None,
        [
            "run.precision=auto",
            "run.tta=flip+shift1",
            "model.token_mixing_init=local",
            "model.stem_init=pca",
            "model.embed_dim=32",
        ],
    )
    assert cfg.model.overrides() == {"drop_path_rate": 0.0, "embed_dim": 32}  # the levers are not model args
    for item, valid in (
        ("run.tta=mirror", "none, flip, flip+shift1"),
        ("run.final_tta=shift", "none, flip, flip+shift1"),
        ("model.stem_init=lda", "default, pca, zca"),
        ("optim.sched=step", "cosine, linear"),
        ("model.token_mixing_init=conv", "default, identity, local"),
    ):
        with pytest.raises(ConfigError, match=re.escape(valid)):
            load_config(None, [item])


def test_lever_choices_match_what_the_models_package_implements():
    import typing

    from resmlp.config import TTA, StemInit, TokenMixingInit
    from resmlp.models import TOKEN_MIXING_INITS, WHITENINGS, tta_views

    assert typing.get_args(TokenMixingInit) == TOKEN_MIXING_INITS
    assert typing.get_args(StemInit) == ("default", *WHITENINGS)
    assert [tta_views(v) for v in typing.get_args(TTA)]  # every choice parses


def test_ablation_choices_match_what_the_models_package_implements():
    import typing

    from resmlp.config import Activation, Norm, Pooling, TokenMixing
    from resmlp.models import ACTIVATIONS, NORMS, POOLINGS, TOKEN_MIXINGS

    assert typing.get_args(Norm) == NORMS
    assert typing.get_args(TokenMixing) == TOKEN_MIXINGS
    assert typing.get_args(Pooling) == POOLINGS
    assert typing.get_args(Activation) == tuple(ACTIVATIONS)


def test_ablation_options_reach_the_model_arguments():
    from resmlp.train.run import model_arguments

    cfg = load_config(
        None,
        [
            "model.name=resmlp_micro8",
            "model.token_mixing=conv3x3_depthwise",
            "model.norm=batchnorm",
            "model.pooling=class_mlp",
            "model.act=silu",
        ],
    )
    args = model_arguments(cfg.model)
    assert (args["token_mixing"], args["norm"], args["pooling"], args["act"]) == (
        "conv3x3_depthwise",
        "batchnorm",
        "class_mlp",
        "silu",
    )
    with pytest.raises(ConfigError, match="linear, mlp, conv3x3"):
        load_config(None, ["model.token_mixing=attention"])
    mixer = load_config(None, ["model.name=mixer_tiny32", "model.norm=layernorm"])
    with pytest.raises(ConfigError, match="model.norm"):
        model_arguments(mixer.model)


def test_progressive_modes_match_the_transforms_and_the_resample_methods():
    import typing

    from resmlp.config import ProgressiveMode
    from resmlp.data.transforms import OUTPUT_MODES
    from resmlp.models import RESAMPLE_METHODS
    from resmlp.train.progressive import METHODS

    assert typing.get_args(ProgressiveMode) == OUTPUT_MODES == tuple(METHODS)
    assert set(METHODS.values()) <= set(RESAMPLE_METHODS)
