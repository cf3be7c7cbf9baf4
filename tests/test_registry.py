import pytest
import torch

import resmlp
from resmlp.models import count_macs, count_params, get_variant

PAPER_PARAMS = {
    "resmlp_s12": 15_350_872, "resmlp_s24": 30_020_680, "resmlp_s36": 44_690_488,
    "resmlp_b24": 115_736_776, "resmlp_b24_p8": 129_138_280,
    "mixer_s16": 18_528_264, "mixer_b16": 59_880_472, "mixer_l16": 208_196_168,
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
