import pytest

from resmlp.train.config import ConfigError, load_config, parse_override, resolve_recipe


def test_defaults_recipe_and_overrides_compose():
    cfg = load_config("digits", ["optim.lr=1e-3", "data.scale=[0.5, 1.0]", "model.overrides={depth: 2}",
                                 "run.time_limit_min=null"])
    assert cfg.optim.lr == 1e-3 and cfg.data.scale == [0.5, 1.0] and cfg.model.overrides == {"depth": 2}
    assert cfg.data.source == "digits" and cfg.model.name == "resmlp_micro8"
    assert cfg.run.time_limit_min is None
    assert load_config(None).optim.name == "lamb"


def test_int_is_accepted_for_float_but_not_the_reverse():
    assert load_config(None, ["optim.lr=1"]).optim.lr == 1.0
    with pytest.raises(ConfigError, match=r"optim.epochs: expected an integer, got 1.5"):
        load_config(None, ["optim.epochs=1.5"])


@pytest.mark.parametrize("item,msg", [
    ("optim.lrr=1", "unknown key optim.lrr"),
    ("foo.bar=1", "unknown key foo"),
    ("run.compile=maybe", "run.compile: expected true/false"),
    ("data.batch_size=abc", "data.batch_size: expected an integer"),
    ("optim", "must look like section.key=value"),
])
def test_bad_overrides_name_the_key(item, msg):
    with pytest.raises(ConfigError, match=msg):
        load_config(None, [item])


def test_bundled_recipes_all_parse():
    for name in ["digits", "cifar10_cpu", "imagenet_s12", "imagenet_s24", "imagenet_s36", "imagenet_b24",
                 "cifar10_finetune", "cifar10_teacher"]:
        load_config(name)
    s12 = load_config("imagenet_s12")
    assert (s12.optim.name, s12.optim.lr, s12.optim.weight_decay, s12.optim.epochs, s12.optim.warmup_epochs) == \
        ("lamb", 5e-3, 0.2, 400, 5)
    assert s12.model.drop_path_rate == 0.05 and s12.data.repeated_aug and s12.data.auto_augment == "rand-m9-mstd0.5-inc1"


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
