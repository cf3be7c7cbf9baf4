import pytest
import torch

import resmlp
from resmlp.models import count_macs, count_params, get_variant

PAPER_PARAMS = {
    "resmlp_s12": 15_350_872,
    "resmlp_s24": 30_020_680,
    "resmlp_s36": 44_690_488,
    "resmlp_b24": 115_736_776,
    "resmlp_b24_p8": 129_138_280,
    "mixer_s16": 18_528_264,
    "mixer_b16": 59_880_472,
    "mixer_l16": 208_196_168,
}
PAPER_GFLOPS = {"resmlp_s12": 3.0, "resmlp_s24": 6.0, "resmlp_s36": 8.9, "resmlp_b24": 23.0}


def meta_model(name, **kw):
    with torch.device("meta"):
        return resmlp.create_model(name, **kw)


@pytest.mark.parametrize("name", sorted(PAPER_PARAMS))
def test_parameter_counts_match_paper_tables(name):
    assert count_params(meta_model(name)) == PAPER_PARAMS[name]


@pytest.mark.parametrize("name", sorted(PAPER_GFLOPS))
def test_gflops_match_paper(name):
    assert round(count_macs(meta_model(name), (1, 3, 224, 224)) / 1e9, 1) == PAPER_GFLOPS[name]


def test_macs_of_a_single_linear_are_exact():
    layer = torch.nn.Linear(5, 7)
    assert count_macs(layer, (3, 4, 5)) == 3 * 4 * 5 * 7


def test_list_models_has_paper_variants_and_small_ones():
    names = resmlp.list_models()
    assert set(PAPER_PARAMS) <= set(names)
    assert {"resmlp_micro8", "resmlp_micro16", "resmlp_tiny32", "mixer_tiny32"} <= set(names)


def test_preprocessing_metadata():
    p = get_variant("resmlp_s12").preprocess
    assert (p.img_size, p.crop_pct, p.interpolation) == (224, 0.9, "bicubic")
    assert p.mean == (0.485, 0.456, 0.406) and p.std == (0.229, 0.224, 0.225)
    assert meta_model("resmlp_s12", img_size=64).spec.preprocess.img_size == 64


def test_overrides_change_token_count_and_classes():
    m = meta_model("resmlp_s12", img_size=64, num_classes=7, in_chans=1)
    assert m.num_patches == 16
    assert m.blocks[0].linear_tokens.weight.shape == (16, 16)
    assert m.head.out_features == 7 and m.stem.proj.in_channels == 1


def test_unknown_model_and_override_errors_name_the_problem():
    with pytest.raises(ValueError, match="unknown model 'resmlp_s13'.*resmlp_s12"):
        resmlp.create_model("resmlp_s13")
    with pytest.raises(ValueError, match="does not accept layer_scale_init"):
        resmlp.create_model("mixer_s16", layer_scale_init=0.1)
    with pytest.raises(ValueError, match="not divisible by patch_size=16"):
        resmlp.create_model("resmlp_s12", img_size=100)


# Paper Table 3 at 224 px and 1000 classes: ResMLP-S12 with one option changed (rounded in the paper to
# 14.9 / 18.6 / 30.8 / 14.9 / 16.7 / 17.7 / 15.6 / 22.1 M), and class-MLP pooling on S24 / S36 (32.4 / 47.1 M).
ABLATION_PARAMS = [
    ("resmlp_s12", dict(token_mixing="none"), 14_887_528),
    ("resmlp_s12", dict(token_mixing="mlp"), 18_587_224),
    ("resmlp_s12", dict(token_mixing="conv3x3"), 30_817_384),
    ("resmlp_s12", dict(token_mixing="conv3x3_depthwise"), 14_933_608),
    ("resmlp_s12", dict(token_mixing="conv3x3_separable"), 16_707_688),
    ("resmlp_s12", dict(pooling="class_mlp"), 17_719_396),
    ("resmlp_s24", dict(pooling="class_mlp"), 32_389_204),
    ("resmlp_s36", dict(pooling="class_mlp"), 47_059_012),
    ("resmlp_s12_p14", {}, 15_607_912),
    ("resmlp_s12_p8", {}, 22_051_624),
    ("resmlp_s12", dict(norm="layernorm"), 15_350_872),  # same as Aff: a scale and a shift per channel
    ("resmlp_s12", dict(norm="batchnorm"), 15_350_872),
    ("resmlp_s12", dict(act="relu"), 15_350_872),
]


@pytest.mark.parametrize("name,options,params", ABLATION_PARAMS, ids=lambda v: str(v))
def test_ablation_parameter_counts_match_table_3(name, options, params):
    assert count_params(meta_model(name, **options)) == params
