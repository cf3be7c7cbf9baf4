"""Loading (config/load.py): recipes, `base:` chains, overrides, older keys, save."""

import dataclasses

import pytest
import yaml

from resmlp.config import ConfigError, config_from_dict, config_to_dict, load_config, parse_override, resolve_recipe
from resmlp.config.load import RECIPES_DIR, save_config


def test_defaults_recipe_and_overrides_compose():
    cfg = load_config("digits", ["optim.lr=1e-3", "data.scale=[0.5, 1]", "model.depth=2", "budget.time_limit_min=null"])
    assert cfg.optim.lr == 1e-3 and cfg.data.scale == [0.5, 1.0] and cfg.model.depth == 2
    assert cfg.model.overrides() == {"depth": 2, "drop_path_rate": 0.05}  # None fields keep the variant's value
    assert cfg.data.source == "digits" and cfg.model.name == "resmlp_micro8"
    assert cfg.budget.time_limit_min is None
    assert load_config(None).optim.name == "lamb"


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
        "cifar10_airbench_teacher",
    ]:
        load_config(name)
    airbench = load_config("cifar10_airbench_teacher")
    assert (airbench.model.width, airbench.model.conv_init, airbench.optim.lookahead) == (4, "dirac", True)
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
    valid = "valid keys in model: act, batchnorm_momentum, batchnorm_scale, blocks_per_stage"
    with pytest.raises(ConfigError, match=f"unknown key model.depht; {valid}"):
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


def test_malformed_override_names_the_form():
    with pytest.raises(ConfigError, match="must look like section.key=value"):
        load_config(None, ["optim"])


def test_bundled_recipes_live_in_the_package_and_saved_configs_load_back(tmp_path):
    assert RECIPES_DIR.name == "recipes" and RECIPES_DIR.parent.name == "resmlp"
    assert resolve_recipe("digits") == RECIPES_DIR / "digits.yaml"
    cfg = load_config("digits", ["optim.lr=1e-3"])
    save_config(cfg, tmp_path / "config.yaml")
    assert load_config(str(tmp_path / "config.yaml")) == cfg


def test_an_older_run_dirs_teacher_bf16_becomes_teacher_precision():
    assert config_from_dict({"distill": {"teacher_bf16": True}}).distill.teacher_precision == "bf16"
    assert config_from_dict({"distill": {"teacher_bf16": False}}).distill.teacher_precision == "fp32"
    assert load_config("digits", ["distill.teacher_bf16=true"]).distill.teacher_precision == "bf16"
    assert config_from_dict({}).distill.teacher_precision == "auto"
    with pytest.raises(ConfigError, match="distill.teacher_bf16 and distill.teacher_precision are the same setting"):
        config_from_dict({"distill": {"teacher_bf16": True, "teacher_precision": "fp32"}})
    with pytest.raises(ConfigError, match="auto, fp32, bf16"):
        load_config("digits", ["distill.teacher_precision=fp16"])


def test_budget_and_progressive_keys_of_older_recipes_and_run_dirs_move_to_their_sections(tmp_path):
    old = {"run": {"seed": 3, "time_limit_min": 12.5, "fit_to_time_limit": True, "progressive_sizes": [[0, 4]]}}
    cfg = config_from_dict({**old, "run": {**old["run"], "progressive_mode": "crop"}})
    assert (cfg.run.seed, cfg.budget.time_limit_min, cfg.budget.fit_to_time_limit) == (3, 12.5, True)
    assert (cfg.progressive.sizes, cfg.progressive.mode) == ([[0, 4]], "crop")
    recipe = tmp_path / "old.yaml"
    recipe.write_text("base: digits\nrun:\n  time_limit_min: 7\n  progressive_sizes: [[0, 4], [2, 8]]\n")
    cfg = load_config(str(recipe), ["run.fit_to_time_limit=true"])  # an old override too
    assert (cfg.budget.time_limit_min, cfg.budget.fit_to_time_limit, cfg.progressive.sizes) == (
        7,
        True,
        [[0, 4], [2, 8]],
    )
    assert "time_limit_min" not in config_to_dict(cfg)["run"]
    with pytest.raises(ConfigError, match="run.time_limit_min and budget.time_limit_min are the same setting"):
        config_from_dict({"run": {"time_limit_min": 1}, "budget": {"time_limit_min": 2}})
    with pytest.raises(ConfigError, match=r"progressive.sizes\[0\]: expected \[epoch, size\]"):
        load_config("digits", ["run.progressive_sizes=[[0]]"])
