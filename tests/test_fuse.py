"""resmlp.fuse: the folded eval-only model gives the same logits as the original on every ResMLP and
MLP-Mixer variant."""

import pytest
import torch

import resmlp
from resmlp.deploy.fuse import FusedClassifier, fusable

PATCH_MODELS = [n for n in resmlp.list_models() if resmlp.models.get_variant(n).arch in ("resmlp", "mixer")]


def perturbed(name, depth=2, num_classes=5, seed=0, **kw):
    """Variant `name` at a small size with every Aff / LayerScale / LayerNorm / bias moved away from its
    init (scales by +-30%, shifts by ~0.1), so a forgotten or misplaced fold shows up in the logits, while
    activations stay at a trained network's scale. depth=2: the fold is per block; the width, patch size
    and MLP ratios are the variant's own."""
    torch.manual_seed(seed)
    patch = resmlp.models.get_variant(name).args["patch_size"]
    kw.setdefault("img_size", 3 * patch)
    model = resmlp.create_model(name, depth=depth, num_classes=num_classes, **kw).eval()
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith(("alpha", "ls1", "ls2")) or (".norm" in n or n.startswith("norm")) and n.endswith("weight"):
                p.mul_(1 + 0.3 * torch.randn_like(p))
            elif n.endswith(("beta", "bias")):
                p.add_(0.1 * torch.randn_like(p))
            else:
                p.add_(0.02 * torch.randn_like(p))
        if num_classes:  # logits with std 2 (a confident classifier), so atol=1e-5 is a strict bound
            model.head.weight.mul_(2 / model(images(model, 8, seed=99)).std())
    return model


def images(model, batch=3, seed=1):
    torch.manual_seed(seed)
    return torch.randn(batch, *model.spec.input_shape)


@pytest.mark.parametrize("name", PATCH_MODELS)
def test_fused_logits_match_every_variant(name):
    model = perturbed(name)
    x = images(model)
    with torch.no_grad():
        want = model(x)
        got = resmlp.fuse(model)(x)
    assert got.dtype == torch.float32 and got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


def test_full_depth_and_a_batch_of_one():
    model = perturbed("resmlp_tiny32", depth=12, img_size=32, num_classes=10)  # 12 blocks of rounding
    fused = resmlp.fuse(model)
    for batch in (1, 4):
        x = images(model, batch)
        with torch.no_grad():
            torch.testing.assert_close(fused(x), model(x), rtol=0, atol=1e-5)


def test_every_affine_and_layerscale_is_gone():
    fused = resmlp.fuse(perturbed("resmlp_micro8"))
    names = [n for n, _ in fused.named_parameters()]
    assert not any("alpha" in n or "beta" in n or "ls1" in n or "ls2" in n or "norm" in n for n in names)
    assert not any(isinstance(m, resmlp.Affine) for m in fused.modules())
    # ResMLP block: A, its per-channel scale and (N, D) bias, fc1, fc2 (weights + biases)
    block = dict(fused.blocks[0].named_parameters())
    assert block["token_weight"].shape == (9, 9) and block["token_bias"].shape == (9, 128)  # 6x6 px, 2x2 patches
    assert block["token_scale"].shape == (128,)


def test_mixer_keeps_layernorm_statistics_but_folds_its_affine():
    model = perturbed("mixer_tiny32")
    fused = resmlp.fuse(model)
    assert not any(isinstance(m, torch.nn.LayerNorm) for m in fused.modules())
    d = model.embed_dim
    assert fused.blocks[0].token_fc1_bias.shape == (d // 2, d)  # (H_tok, D), H_tok = 0.5 D: beta through W1


def test_headless_model_returns_pooled_features():
    model = perturbed("resmlp_micro8", num_classes=0)
    x = images(model)
    with torch.no_grad():
        torch.testing.assert_close(resmlp.fuse(model)(x), model(x), rtol=0, atol=1e-5)


def test_original_untouched_and_fused_is_eval_only():
    model = perturbed("resmlp_micro8")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fused = resmlp.fuse(model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert isinstance(fused, FusedClassifier) and not fused.training
    assert not any(p.requires_grad for p in fused.parameters())
    assert fused.spec == model.spec  # the fused model still exports and loads as what it was
    with pytest.raises(RuntimeError, match="inference-only"):
        fused.train()
    fused.eval()  # allowed
    assert resmlp.fuse(fused) is fused


def test_fused_model_in_train_mode_original_is_folded_as_eval():
    model = perturbed("resmlp_micro8", drop_path_rate=0.5).train()  # drop-path is off in the fused model
    x = images(model)
    fused = resmlp.fuse(model)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), model.eval()(x), rtol=0, atol=1e-5)


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="ResMLP or MlpMixer"):
        resmlp.fuse(torch.nn.Linear(2, 2))
    fused = resmlp.fuse(perturbed("resmlp_micro8"))
    with pytest.raises(ValueError, match=r"expects \(B, 3, 6, 6\)"):
        fused(torch.randn(1, 3, 8, 8))


FUSABLE_ABLATIONS = [
    dict(norm="batchnorm"),
    dict(token_mixing="none"),
    dict(token_mixing="mlp"),
    dict(token_mixing="conv3x3"),
    dict(token_mixing="conv3x3_depthwise"),
    dict(token_mixing="conv3x3_separable"),
    dict(pooling="class_mlp"),
    dict(act="hardswish"),
    dict(norm="batchnorm", token_mixing="conv3x3_separable", pooling="class_mlp", act="silu"),
]


@pytest.mark.parametrize("options", FUSABLE_ABLATIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_fused_logits_match_every_ablation_variant(options):
    model = perturbed("resmlp_micro8", img_size=8, **options)  # 4x4 patch grid: the convs see borders everywhere
    with torch.no_grad():  # BatchNorm: statistics away from (0, 1), so a fold that ignores them shows
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.normal_(0, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    x = images(model)
    with torch.no_grad():
        torch.testing.assert_close(resmlp.fuse(model)(x), model(x), rtol=0, atol=1e-5)


def test_layernorm_resmlp_is_refused_with_the_reason():
    model = resmlp.create_model("resmlp_micro8", norm="layernorm")
    with pytest.raises(ValueError, match="normalises each token by its own statistics"):
        resmlp.fuse(model)
    assert not fusable(model)


@pytest.mark.parametrize("name", ["resmlp_micro8", "mixer_tiny32"])
def test_non_square_models_fuse(name):
    patch = resmlp.models.get_variant(name).args["patch_size"]
    model = perturbed(name, img_size=(2 * patch, 3 * patch))
    fused = resmlp.fuse(model)
    x = torch.randn(2, 3, 2 * patch, 3 * patch)
    torch.testing.assert_close(fused(x), model(x), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=f"expects \\(B, 3, {2 * patch}, {3 * patch}\\)"):
        fused(torch.randn(1, 3, 3 * patch, 2 * patch))
