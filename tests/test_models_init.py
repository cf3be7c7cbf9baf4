"""Structured init of A (models/init.py) and the whitened patch stem (models/whiten.py)."""

import pytest
import torch
import torch.nn.functional as F

import resmlp
from resmlp.models import (
    TOKEN_MIXING_INITS,
    freeze_stem,
    init_token_mixing,
    local_token_matrix,
    patch_vectors,
    whiten_patch_embedding,
)


def tiny(name="resmlp_tiny32", **kw):
    torch.manual_seed(0)
    return resmlp.create_model(name, **{"depth": 2, "embed_dim": 32, **kw})


def test_kinds_are_the_documented_ones():
    assert TOKEN_MIXING_INITS == ("default", "identity", "local")


def test_default_leaves_the_weights_untouched():
    model = tiny()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    init_token_mixing(model, "default")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_identity_gives_a_equal_to_i_and_zero_bias():
    model = init_token_mixing(tiny(), "identity")
    for block in model.blocks:
        assert torch.equal(block.linear_tokens.weight, torch.eye(64))
        assert torch.equal(block.linear_tokens.bias, torch.zeros(64))


def test_block_with_identity_a_matches_the_equations():
    # Eq. (2) with A = I: Z = X + ls1 * Aff_1(X); eq. (3): Y = Z + ls2 * C GELU(B Aff_2(Z)).
    block = init_token_mixing(tiny(), "identity").blocks[0]
    with torch.no_grad():
        block.norm1.alpha.normal_()
        block.norm1.beta.normal_()
        block.ls1.normal_()
    x = torch.randn(3, 64, 32)
    z = x + block.ls1 * (block.norm1.alpha * x + block.norm1.beta)
    aff2 = block.norm2.alpha * z + block.norm2.beta
    mlp = block.mlp_channels
    y = z + block.ls2 * F.linear(F.gelu(F.linear(aff2, mlp.fc1.weight, mlp.fc1.bias)), mlp.fc2.weight, mlp.fc2.bias)
    torch.testing.assert_close(block(x), y)


def test_local_kernels_are_local_translation_invariant_and_seeded():
    model = init_token_mixing(tiny(), "local", generator=torch.Generator().manual_seed(0), kernel_size=3)
    grid = 8
    pos = torch.stack(torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij"), -1).view(-1, 2)
    far = (pos[:, None] - pos[None]).abs().amax(-1) > 1  # (N, N) Chebyshev distance > 1: outside 3 x 3
    kernels = []
    for block in model.blocks:
        a = block.linear_tokens.weight
        assert torch.equal(a[far], torch.zeros(int(far.sum())))
        # Every interior output patch reads the same 3 x 3 kernel; the centre is dominant.
        windows = [
            a[i * grid + j].view(grid, grid)[i - 1 : i + 2, j - 1 : j + 2]
            for i in range(1, grid - 1)
            for j in range(1, grid - 1)
        ]
        assert all(torch.equal(w, windows[0]) for w in windows)
        assert windows[0][1, 1] == 1 and windows[0].abs().flatten()[[0, 1, 2, 3, 5, 6, 7, 8]].max() < 0.5
        kernels.append(windows[0])
    assert not torch.equal(kernels[0], kernels[1])  # each block its own kernel
    again = init_token_mixing(tiny(), "local", generator=torch.Generator().manual_seed(0))
    assert torch.equal(again.blocks[1].linear_tokens.weight, model.blocks[1].linear_tokens.weight)


@pytest.mark.parametrize("h,w,k", [(4, 4, 3), (3, 5, 3), (5, 2, 5), (6, 7, 1)])
def test_local_token_matrix_is_a_zero_padded_convolution(h, w, k):
    # Independent reference: A @ x over the row-major grid == 'same' cross-correlation (F.conv2d), any h x w.
    torch.manual_seed(0)
    kernel = torch.randn(k, k, dtype=torch.float64)
    x = torch.randn(4, h, w, dtype=torch.float64)
    a = local_token_matrix(kernel, h, w)
    assert a.shape == (h * w, h * w)
    ref = F.conv2d(x[:, None], kernel[None, None], padding=k // 2).flatten(1)
    torch.testing.assert_close(x.flatten(1) @ a.T, ref)


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="unknown token-mixing init 'conv'.*identity"):
        init_token_mixing(tiny(), "conv")
    with pytest.raises(ValueError, match="applies to ResMLP's linear_tokens"):
        init_token_mixing(tiny("mixer_tiny32"), "identity")
    with pytest.raises(ValueError, match="this model has token_mixing='conv3x3'"):
        init_token_mixing(resmlp.create_model("resmlp_micro8", token_mixing="conv3x3"), "local")
    init_token_mixing(tiny("mixer_tiny32"), "default")  # the default is valid for every model
    with pytest.raises(ValueError, match="odd k"):
        local_token_matrix(torch.ones(2, 2), 4, 4)


def correlated_images(n=600, size=8, seed=0):
    """Non-white images: smoothed noise with mixed channels, an offset and unequal scales."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, size, size, generator=g, dtype=torch.float64)
    x = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="circular"), 2, stride=1)[..., :size, :size]
    mix = torch.tensor([[1.0, 0.5, 0.2], [0.0, 1.0, 0.7], [0.0, 0.0, 0.3]], dtype=torch.float64)
    return (torch.einsum("dc,bchw->bdhw", mix, x) + torch.tensor([0.5, -1.0, 2.0]).view(1, 3, 1, 1)).float()


def stem_outputs(model, images):
    with torch.no_grad():
        return model.stem(images).flatten(0, 1).double()  # (B, N, D) -> (B*N, D)


@pytest.mark.parametrize("kind,embed_dim", [("pca", 32), ("zca", 32), ("pca", 8)])
def test_whitened_stem_outputs_have_identity_covariance_and_zero_mean(kind, embed_dim):
    # resmlp_micro8: 2 x 2 patches of 3 channels, P = 12; D = 32 > P gets +w, -w, then 8 default rows.
    model = tiny("resmlp_micro8", embed_dim=embed_dim)
    images = correlated_images()
    default_rows = model.stem.proj.weight[24:].clone()
    whiten_patch_embedding(model, images, eps=1e-9, kind=kind)
    out = stem_outputs(model, images)
    p = min(embed_dim, 12)
    white = out[:, :p]
    torch.testing.assert_close(white.mean(0), torch.zeros(p, dtype=torch.float64), atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.cov(white.T), torch.eye(p, dtype=torch.float64), atol=1e-4, rtol=0)
    if embed_dim > 12:
        torch.testing.assert_close(out[:, 12:24], -white, atol=1e-5, rtol=0)  # the negated rows
        assert torch.equal(model.stem.proj.weight[24:], default_rows)  # the rest keep the default init


def test_pca_with_fewer_channels_keeps_the_top_variance_directions():
    images = correlated_images()
    full, small = tiny("resmlp_micro8", embed_dim=32), tiny("resmlp_micro8", embed_dim=8)
    whiten_patch_embedding(full, images, kind="pca")
    whiten_patch_embedding(small, images, kind="pca")
    torch.testing.assert_close(small.stem.proj.weight, full.stem.proj.weight[:8])
    # Top direction first: its un-whitened variance (1 / |row|^2 - eps) is the largest eigenvalue.
    cov = torch.cov(patch_vectors(images, 2).double().T)
    top = 1 / full.stem.proj.weight.view(32, 12)[0].double().square().sum()
    torch.testing.assert_close(top, torch.linalg.eigvalsh(cov)[-1] + 5e-4, rtol=1e-4, atol=0)


def test_zca_is_symmetric_and_needs_enough_channels():
    model = whiten_patch_embedding(tiny("resmlp_micro8", embed_dim=12), correlated_images(), kind="zca")
    w = model.stem.proj.weight.view(12, 12)
    torch.testing.assert_close(w, w.T)
    with pytest.raises(ValueError, match="ZCA whitening needs embed_dim >= patch dim C\\*p\\*p = 12, got 8"):
        whiten_patch_embedding(tiny("resmlp_micro8", embed_dim=8), correlated_images(), kind="zca")
    with pytest.raises(ValueError, match="needs a patch stem"):
        whiten_patch_embedding(resmlp.create_model("resnet20_cifar"), correlated_images(size=32))


def test_patch_vectors_follow_the_conv_weight_layout():
    model = tiny()
    images = torch.randn(2, 3, 32, 32)
    proj = model.stem.proj
    by_hand = patch_vectors(images, 4) @ proj.weight.view(32, -1).T + proj.bias
    torch.testing.assert_close(by_hand, stem_outputs(model, images).float())


def test_freeze_stem_toggles_only_the_stem():
    model = freeze_stem(tiny(), True)
    assert [n for n, p in model.named_parameters() if not p.requires_grad] == ["stem.proj.weight", "stem.proj.bias"]
    assert all(p.requires_grad for p in freeze_stem(model, False).parameters())
