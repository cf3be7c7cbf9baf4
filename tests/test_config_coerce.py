"""Type coercion (config/coerce.py): YAML values checked against the schema, errors that name the key."""

import pytest

from resmlp.config.coerce import build_dataclass, coerce_value, short_repr
from resmlp.config.load import load_config
from resmlp.config.schema import ConfigError, OptimConfig, TrainConfig


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
        ("model.depth=2.5", "model.depth: expected an integer"),
        ("data.source=imagenet", "data.source: expected one of digits, cifar10, cifar100, folder, got 'imagenet'"),
        ("data.on_bad=ignore", "data.on_bad: expected one of skip, fail, got 'ignore'"),
        ("data.crop=center", "data.crop: expected one of rrc, pad, got 'center'"),
        ("data.interpolation=lanczos", "data.interpolation: expected one of bilinear, bicubic, nearest, got 'lanczos'"),
        ("data.mean=cifar", "data.mean: expected one of dataset, imagenet, got 'cifar'"),
        ("data.std=[0.2, x, 0.2]", r"data.std\[1\]: expected a number, got 'x'"),
        ("optim.name=adam", "optim.name: expected one of lamb, adamw, sgd, muon, muon_sgd, got 'adam'"),
        ("distill.kind=medium", "distill.kind: expected one of hard, soft, got 'medium'"),
        ("run.precision=fp8", "run.precision: expected one of auto, fp32, bf16, fp16, got 'fp8'"),
    ],
)
def test_bad_overrides_name_the_key(item, msg):
    with pytest.raises(ConfigError, match=msg):
        load_config(None, [item])


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


def test_build_dataclass_fills_sections_and_names_the_nested_key():
    cfg = build_dataclass(TrainConfig, {"optim": {"lr": 1, "sched": "linear"}}, "")
    assert cfg.optim == OptimConfig(lr=1.0, sched="linear") and isinstance(cfg.optim.lr, float)
    with pytest.raises(ConfigError, match="optim: expected a mapping of name, lr"):
        build_dataclass(TrainConfig, {"optim": 3}, "")
    with pytest.raises(
        ConfigError,
        match=r"unknown key 3; valid keys in the config: budget, data, distill, model, optim, progressive, run",
    ):
        build_dataclass(TrainConfig, {3: {}}, "")


def test_coerce_value_and_short_repr_keep_messages_short():
    assert coerce_value([1, 2], list[float], "data.scale") == [1.0, 2.0]
    with pytest.raises(ConfigError, match=r"data.scale\[1\]: expected a number, got 'x'"):
        coerce_value([1, "x"], list[float], "data.scale")
    with pytest.raises(ConfigError, match="run.seed: an integer of about 30 digits is too large"):
        coerce_value(10**30, int, "run.seed")
    assert short_repr("a" * 100) == repr("a" * 100)[:60] + "..."
    assert short_repr(10**5000).startswith("an integer of about")
