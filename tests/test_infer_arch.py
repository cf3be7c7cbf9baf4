"""Architecture of a bare state dict from its tensor shapes."""

import pytest
import torch

import resmlp
from resmlp.infer_arch import infer_architecture
from resmlp.weights import WeightsError, convert_state_dict

PATCH_MODELS = [n for n in resmlp.list_models() if resmlp.models.get_variant(n).arch in ("resmlp", "mixer")]


def meta_state_dict(name, **overrides):
    with torch.device("meta"):  # shapes only
        return resmlp.create_model(name, **overrides).state_dict()


@pytest.mark.parametrize("name", PATCH_MODELS)
def test_every_registered_variant_is_recognised_without_overrides(name):
    assert infer_architecture(meta_state_dict(name)) == (name, {})


def test_size_classes_and_channels_become_overrides():
    sd = meta_state_dict("resmlp_s12", img_size=64, num_classes=10, in_chans=1)
    assert infer_architecture(sd) == ("resmlp_s12", {"img_size": 64, "num_classes": 10, "in_chans": 1})
    assert infer_architecture(meta_state_dict("mixer_b16", num_classes=0)) == ("mixer_b16", {"num_classes": 0})


def test_deit_layout_after_conversion():
    sd = convert_state_dict(meta_state_dict("resmlp_s24"), to="deit")
    assert infer_architecture(convert_state_dict(sd, to="timm")) == ("resmlp_s24", {})


def test_unregistered_body_gets_the_nearest_variant_plus_overrides_that_fit():
    torch.manual_seed(0)
    src = resmlp.create_model("resmlp_micro8", depth=3, embed_dim=48, mlp_ratio=3.0, num_classes=4)
    name, overrides = infer_architecture(src.state_dict())
    assert resmlp.models.get_variant(name).arch == "resmlp"
    assert overrides["depth"] == 3 and overrides["embed_dim"] == 48 and overrides["mlp_ratio"] == 3.0
    rebuilt = resmlp.load_weights(resmlp.create_model(name, **overrides), src.state_dict())
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.eval()(x), src.eval()(x), rtol=0, atol=0)


def test_mixer_token_ratio_is_read_from_shapes():
    sd = meta_state_dict("mixer_tiny32", token_mlp_ratio=0.25)
    assert infer_architecture(sd) == ("mixer_tiny32", {"token_mlp_ratio": 0.25})


def test_errors_name_the_problem():
    with pytest.raises(WeightsError, match="stem.proj.weight"):
        infer_architecture({"head.weight": torch.zeros(2, 2)})
    sd = dict(meta_state_dict("resmlp_micro8"))
    sd["blocks.0.linear_tokens.weight"] = torch.zeros(15, 15, device="meta")
    with pytest.raises(WeightsError, match="15 tokens is not a square grid"):
        infer_architecture(sd)
    sd = {k: v for k, v in meta_state_dict("mixer_tiny32").items() if "mlp_tokens" not in k}
    with pytest.raises(WeightsError, match="neither linear_tokens"):
        infer_architecture(sd)
    # A ResMLP (LayerScale ls1) without any token layer is the token_mixing="none" ablation, not an error.
    sd = {k: v for k, v in meta_state_dict("resmlp_micro8").items() if "linear_tokens" not in k}
    assert infer_architecture(sd)[1] == {"token_mixing": "none"}


@pytest.mark.parametrize(
    "options",
    [
        dict(norm="batchnorm"),
        dict(norm="layernorm"),
        dict(token_mixing="mlp"),
        dict(token_mixing="conv3x3", pooling="class_mlp"),
        dict(token_mixing="conv3x3_depthwise", pooling="class_mlp"),
        dict(token_mixing="conv3x3_separable", pooling="class_mlp"),
        dict(token_mixing="none", pooling="class_mlp"),
        dict(pooling="class_mlp"),
    ],
    ids=str,
)
def test_ablation_options_are_read_from_key_names(options):
    assert infer_architecture(meta_state_dict("resmlp_s12", **options)) == ("resmlp_s12", options)


def test_conv_token_mixing_without_a_patch_count_keeps_the_variant_size():
    name, overrides = infer_architecture(meta_state_dict("resmlp_tiny32", token_mixing="conv3x3_depthwise"))
    assert (name, overrides) == ("resmlp_tiny32", {"token_mixing": "conv3x3_depthwise"})
