"""The fast CIFAR conv net (models/convnet.py): shapes, the scaled max-pool head, its whitened 2 x 2 stem,
NHWC layout as a distillation teacher."""

import pytest
import torch

import resmlp
from resmlp.models import Preprocess, whiten_patch_embedding
from resmlp.train.distill import BatchAdapter, DistillationCriterion


def test_shapes_follow_width_and_the_three_pooling_groups():
    model = resmlp.create_model("convnet_cifar")
    x = torch.randn(2, 3, 32, 32)
    tokens = model.forward_features(x)
    assert tokens.shape == (2, 3 * 3, 128)  # 32 -> 31 (2 x 2 stem) -> 15 -> 7 -> 3
    assert model(x).shape == (2, 10) and model.num_features == 128
    wide = resmlp.create_model("convnet_cifar", width=4, num_classes=7)
    assert [g.conv2.out_channels for g in wide.blocks] == [64, 256, 256] and wide(x).shape == (2, 7)


def test_head_is_the_scaled_linear_map_of_the_global_max_pool():
    model = resmlp.create_model("convnet_cifar").eval()
    x = torch.randn(3, 3, 32, 32)
    tokens = model.forward_features(x)
    expected = model.head(tokens.amax(dim=1)) / 8
    torch.testing.assert_close(model(x), expected)
    model.reset_classifier(5)
    assert model(x).shape == (3, 5)


def test_drop_path_is_refused_for_a_net_without_residual_branches():
    with pytest.raises(ValueError, match="drop_path_rate: the conv net has no residual branches"):
        resmlp.create_model("convnet_cifar", drop_path_rate=0.1)


def test_whitened_stem_decorrelates_the_patches_it_was_fitted_on():
    g = torch.Generator().manual_seed(0)
    base = torch.randn(600, 3, 32, 32, generator=g)
    images = base + 0.8 * base.roll(1, dims=-1) + torch.tensor([0.3, -0.2, 1.0]).view(1, 3, 1, 1)
    model = whiten_patch_embedding(resmlp.create_model("convnet_cifar"), images, eps=1e-9, kind="pca")
    with torch.no_grad():  # stride-1 stem: its outputs at even positions are exactly the fitted, disjoint patches
        out = model.stem.proj(images)[:, :, ::2, ::2].permute(0, 2, 3, 1).flatten(0, 2).double()
    white = out[:, :12]
    torch.testing.assert_close(white.mean(0), torch.zeros(12, dtype=torch.float64), atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.cov(white.T), torch.eye(12, dtype=torch.float64), atol=1e-4, rtol=0)
    torch.testing.assert_close(out[:, 12:24], -white, atol=1e-5, rtol=0)  # 24 channels: +w and -w


def test_a_conv_net_teacher_runs_channels_last():
    teacher = resmlp.create_model("convnet_cifar", img_size=16).eval()
    pre = Preprocess(img_size=16)
    crit = DistillationCriterion(
        teacher, BatchAdapter(pre, pre), kind="soft", alpha=0.5, tau=1.0, device=torch.device("cpu")
    )
    assert crit.teacher.stem.proj.weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.randn(4, 3, 16, 16)
    assert torch.isfinite(crit(x, resmlp.create_model("resmlp_micro16")(x), torch.full((4, 10), 0.1)))


def test_dirac_init_makes_each_conv_the_identity_on_its_first_input_channels():
    model = resmlp.create_model("convnet_cifar", conv_init="dirac")
    x = torch.randn(2, 128, 6, 6)
    conv2 = model.blocks[2].conv2  # 128 -> 128: all of it the identity
    torch.testing.assert_close(conv2(x), x)
    conv1 = model.blocks[1].conv1  # 32 -> 128: the first 32 outputs copy the input, the rest are Kaiming noise
    y = conv1(x[:, :32])
    torch.testing.assert_close(y[:, :32], x[:, :32])
    assert not torch.allclose(y[:, 32:], torch.zeros_like(y[:, 32:]))
    default = resmlp.create_model("convnet_cifar")
    assert not torch.allclose(default.blocks[2].conv2(x), x)
    with pytest.raises(ValueError, match="conv_init: expected one of kaiming, dirac, got 'zeros'"):
        resmlp.create_model("convnet_cifar", conv_init="zeros")


def test_batchnorm_options_freeze_the_scale_and_set_the_momentum():
    from resmlp.optim import build_optimizer

    model = resmlp.create_model("convnet_cifar", batchnorm_scale=False, batchnorm_momentum=0.4)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(bns) == 6 and all(bn.momentum == 0.4 and not bn.weight.requires_grad for bn in bns)
    trained = {
        id(p) for g in build_optimizer(model, name="sgd", lr=0.1, weight_decay=0.0).param_groups for p in g["params"]
    }
    assert not any(id(bn.weight) in trained for bn in bns) and all(id(bn.bias) in trained for bn in bns)
    assert model.spec.args["batchnorm_scale"] is False  # recorded, so a checkpoint rebuilds it frozen
    with pytest.raises(ValueError, match="batchnorm_momentum: expected a value in"):
        resmlp.create_model("convnet_cifar", batchnorm_momentum=0.0)
