"""The config schema (config/schema.py): the choice lists match what the other packages implement."""

import re
import typing

import pytest

from resmlp.config.load import load_config
from resmlp.config.schema import (
    TTA,
    Activation,
    ConfigError,
    ConvInit,
    Norm,
    Pooling,
    ProgressiveMode,
    StemInit,
    TokenMixing,
    TokenMixingInit,
)


def test_training_levers_are_checked_choices_and_not_constructor_arguments():
    cfg = load_config(
        None,
        [
            "run.precision=auto",
            "run.tta=flip+shift1",
            "model.token_mixing_init=local",
            "model.stem_init=pca",
            "model.embed_dim=32",
            "model.stem_frozen=true",
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
    from resmlp.models import TOKEN_MIXING_INITS, WHITENINGS
    from resmlp.models.convnet import CONV_INITS

    assert typing.get_args(TokenMixingInit) == TOKEN_MIXING_INITS
    assert typing.get_args(StemInit) == ("default", *WHITENINGS)
    assert typing.get_args(ConvInit) == CONV_INITS


def test_airbench_levers_are_checked():
    cfg = load_config(None, ["model.name=convnet_cifar", "model.conv_init=dirac", "model.batchnorm_scale=false"])
    assert cfg.model.overrides()["conv_init"] == "dirac" and cfg.model.overrides()["batchnorm_scale"] is False
    for item, message in (
        ("optim.norm_lr_scale=0", "optim.norm_lr_scale: expected a factor > 0, got 0"),
        ("optim.lookahead_every=0", "optim.lookahead_every: expected steps >= 1, got 0"),
        ("model.conv_init=zeros", "kaiming, dirac"),
    ):
        with pytest.raises(ConfigError, match=re.escape(message)):
            load_config(None, [item])
    with pytest.raises(ConfigError, match="optim.norm_lr_scale: not with optim.name=muon"):
        load_config(None, ["optim.name=muon", "optim.norm_lr_scale=64"])


def test_tta_choices_are_views_that_models_tta_implements_and_the_cli_offers():
    """The config owns the list; models.tta parses a spec grammar without importing config. Every choice
    names a distinct set of views that models.tta implements, and both CLI --tta flags offer exactly it."""
    from resmlp.cli import build_parser
    from resmlp.models.tta import tta_view_count, tta_views, view_list

    choices = typing.get_args(TTA)
    views = [tuple(view_list(*tta_views(c))) for c in choices]
    assert [len(v) for v in views] == [tta_view_count(c) for c in choices] == [1, 2, 6]
    assert len(set(views)) == len(choices)  # no two choices average the same views
    subparsers = next(a for a in build_parser()._actions if a.dest == "command")
    offered = {
        name: action.choices
        for name, parser in subparsers.choices.items()
        for action in parser._actions
        if action.dest == "tta"
    }
    assert offered and set(offered.values()) == {choices}, offered


def test_ablation_choices_match_what_the_models_package_implements():
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
    from resmlp.data.transforms import OUTPUT_MODES
    from resmlp.models import RESAMPLE_METHODS
    from resmlp.train.progressive import METHODS

    assert typing.get_args(ProgressiveMode) == OUTPUT_MODES == tuple(METHODS)
    assert set(METHODS.values()) <= set(RESAMPLE_METHODS)
