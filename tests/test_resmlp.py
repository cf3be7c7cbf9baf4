"""Model behaviour over every registered variant, plus a hand-computed tiny ResMLP."""

import math

import pytest
import torch

import resmlp
from resmlp.models import Affine, ResMLP


def small(name, **kw):
    torch.manual_seed(0)
    variant = resmlp.models.get_variant(name)
    patch = variant.args.get("patch_size", 4)  # the CIFAR ResNets: 8 px
    size = 16 if variant.arch == "convnet" else 2 * patch  # the conv net: 2 x 2 stem, then 3 poolings by 2
    return resmlp.create_model(name, img_size=size, num_classes=5, **kw)


# The full-size ImageNet variants take seconds each on a CPU; resmlp_s12, mixer_s16 and the small ones cover
# every architecture in the quick set.
SLOW_VARIANTS = {"resmlp_s24", "resmlp_s36", "resmlp_b24", "resmlp_b24_p8", "mixer_b16", "mixer_l16"}


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_VARIANTS else n for n in resmlp.list_models()]
)
def test_every_variant_shapes_finite_and_gradients(name):
    model = small(name)
    size = model.spec.args["img_size"]
    x = torch.randn(2, 3, size, size)
    tokens = model.forward_features(x)
    conv_tokens = {"resnet": (size // 4) ** 2, "convnet": ((size - 1) // 8) ** 2}  # stride 4; 2 x 2 stem + 3 pools
    n_tokens = model.num_patches if hasattr(model, "num_patches") else conv_tokens[model.spec.arch]
    assert tokens.shape == (2, n_tokens, model.embed_dim)
    assert model.forward_head(tokens, pre_logits=True).shape == (2, model.embed_dim)
    logits = model(x)
    assert logits.shape == (2, 5) and torch.isfinite(logits).all()
    logits.logsumexp(-1).sum().backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert no_grad == []


@pytest.mark.parametrize(
    "name,value",
    [("resmlp_s12", 0.1), ("resmlp_s24", 1e-5), ("resmlp_s36", 1e-6), ("resmlp_b24", 1e-6), ("resmlp_b24_p8", 1e-6)],
)
def test_layerscale_and_affine_initial_values(name, value):
    with torch.device("meta"):
        arch_args = resmlp.create_model(name).spec.args
    assert arch_args["layer_scale_init"] == value
    model = resmlp.create_model(name, img_size=arch_args["patch_size"] * 2, depth=2)
    for block in model.blocks:
        assert torch.equal(block.ls1, torch.full_like(block.ls1, value))
        assert torch.equal(block.ls2, torch.full_like(block.ls2, value))
    for aff in [m for m in model.modules() if isinstance(m, Affine)]:
        assert aff.alpha.shape == (1, 1, model.embed_dim)
        assert torch.equal(aff.alpha, torch.ones_like(aff.alpha)) and torch.equal(aff.beta, torch.zeros_like(aff.beta))
    lin = model.blocks[0].mlp_channels.fc1
    assert torch.equal(lin.bias, torch.zeros_like(lin.bias))
    # trunc_normal_(std=0.02) with the official code's absolute cut-offs at +-2, as in deit/timm.
    assert 0.019 < lin.weight.std().item() < 0.021 and abs(lin.weight.mean().item()) < 1e-3


def test_drop_path_is_active_in_training_and_off_in_eval():
    model = small("resmlp_micro8", drop_path_rate=0.5)
    assert all(b.drop_path.drop_prob == 0.5 for b in model.blocks)  # uniform over depth
    x = torch.randn(4, 3, 4, 4)
    model.eval()
    assert torch.equal(model(x), model(x))
    model.train()
    torch.manual_seed(1)
    a = model(x)
    torch.manual_seed(2)
    assert not torch.allclose(a, model(x))


@pytest.mark.parametrize("name", ["resmlp_micro8", "mixer_tiny32"])
def test_batch_samples_do_not_leak(name):
    model = small(name).eval()
    size = model.spec.args["img_size"]
    x = torch.randn(4, 3, size, size)
    full = model(x)
    x2 = x.clone()
    x2[1:] = torch.randn(3, 3, size, size) * 10
    torch.testing.assert_close(model(x2)[0], full[0])
    torch.testing.assert_close(model(x[2:3]), full[2:3], rtol=1e-5, atol=1e-6)


def test_wrong_input_size_says_what_is_expected():
    model = resmlp.create_model("resmlp_micro8")
    with pytest.raises(ValueError, match=r"expects \(B, 3, 8, 8\).*img_size=32"):
        model(torch.randn(1, 3, 32, 32))


def test_hand_computed_tiny_resmlp():
    """N = 4 patches (a 2x2 grayscale image, 1x1 patches), D = 2, one block, hidden 2, 2 classes."""
    m = ResMLP(img_size=2, patch_size=1, in_chans=1, num_classes=2, embed_dim=2, depth=1, mlp_ratio=1.0)
    blk = m.blocks[0]
    with torch.no_grad():
        m.stem.proj.weight.copy_(torch.tensor([1.0, -1.0]).view(2, 1, 1, 1))
        m.stem.proj.bias.copy_(torch.tensor([0.0, 1.0]))
        blk.norm1.alpha.copy_(torch.tensor([1.0, 2.0]).view(1, 1, 2))
        blk.norm1.beta.zero_()
        shift = torch.zeros(4, 4)
        for i in range(4):
            shift[i, (i + 1) % 4] = 1.0  # output patch i reads input patch i+1
        blk.linear_tokens.weight.copy_(shift)
        blk.linear_tokens.bias.fill_(0.5)
        blk.ls1.copy_(torch.tensor([1.0, 0.5]))
        blk.norm2.alpha.fill_(1.0)
        blk.norm2.beta.copy_(torch.tensor([0.0, 1.0]).view(1, 1, 2))
        blk.mlp_channels.fc1.weight.copy_(torch.tensor([[1.0, 0.0], [1.0, 1.0]]))
        blk.mlp_channels.fc1.bias.copy_(torch.tensor([-4.0, 0.0]))
        blk.mlp_channels.fc2.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0]]))
        blk.mlp_channels.fc2.bias.zero_()
        blk.ls2.copy_(torch.tensor([0.5, 1.0]))
        m.norm.alpha.copy_(torch.tensor([2.0, 1.0]).view(1, 1, 2))
        m.norm.beta.copy_(torch.tensor([0.0, -1.0]).view(1, 1, 2))
        m.head.weight.copy_(torch.tensor([[1.0, 1.0], [1.0, -1.0]]))
        m.head.bias.copy_(torch.tensor([0.0, 0.25]))
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(1, 1, 2, 2)

    # Worked by hand. Stem tokens (v, 1 - v) for pixels 1..4 -> (1,0) (2,-1) (3,-2) (4,-3).
    # Aff1 -> (v, 2 - 2v); shift + 0.5 -> ch0 [2.5,3.5,4.5,1.5], ch1 [-1.5,-3.5,-5.5,0.5];
    # LayerScale (1, 0.5) and residual -> Z = (3.5,-0.75) (5.5,-2.75) (7.5,-4.75) (5.5,-2.75).
    z = torch.tensor([[3.5, -0.75], [5.5, -2.75], [7.5, -4.75], [5.5, -2.75]])
    captured = {}
    blk.linear_tokens.register_forward_hook(lambda mod, i, o: captured.setdefault("a", o))
    logits = m(x)
    after_cross_patch = torch.tensor([[1.0, 0.0], [2.0, -1.0], [3.0, -2.0], [4.0, -3.0]]) + captured["a"].transpose(
        1, 2
    )[0] * torch.tensor([1.0, 0.5])
    torch.testing.assert_close(after_cross_patch, z)

    # Cross-channel: Aff2 (1,1),(0,1) -> u = (z0, z1 + 1); h = GELU(u0 - 4, u0 + u1); y = (h0, 2 h1) * (0.5, 1).
    def gelu(v):
        return v * 0.5 * (1.0 + math.erf(v / math.sqrt(2.0)))

    out = []
    for z0, z1 in z.tolist():
        u0, u1 = z0, z1 + 1.0
        h0, h1 = gelu(u0 - 4.0), gelu(u0 + u1)
        out.append((z0 + 0.5 * h0, z1 + 2.0 * h1))
    # Final Aff (2,1),(0,-1), average pool over the 4 patches, head.
    pooled = [sum(2.0 * a for a, _ in out) / 4, sum(b - 1.0 for _, b in out) / 4]
    expected = [pooled[0] + pooled[1], pooled[0] - pooled[1] + 0.25]
    torch.testing.assert_close(logits[0], torch.tensor(expected), rtol=1e-6, atol=1e-6)
    # The same numbers worked out on paper with a normal-CDF table: GELU(-0.5) = -0.15427, GELU(1.5) = 1.39979,
    # GELU(3.5) = 3.49919, GELU(3.75) = 3.74967, so pooled = (2 * 25.07205 / 4, (18.99735 - 4) / 4).
    torch.testing.assert_close(torch.tensor(pooled), torch.tensor([12.53602, 3.74934]), atol=5e-4, rtol=0)


# Every ablation option (paper Table 3 / Appendix A), one at a time on a small ResMLP with a 4x4 patch grid.
ABLATIONS = (
    [dict(norm=v) for v in resmlp.models.NORMS]
    + [dict(token_mixing=v) for v in resmlp.models.TOKEN_MIXINGS]
    + [dict(pooling=v) for v in resmlp.models.POOLINGS]
    + [dict(act=v) for v in resmlp.models.ACTIVATIONS]
    + [dict(norm="batchnorm", token_mixing="conv3x3_separable", pooling="class_mlp", act="hardswish")]
)


@pytest.mark.parametrize("options", ABLATIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_every_ablation_variant_trains_a_step(options):
    torch.manual_seed(0)
    model = resmlp.create_model("resmlp_micro8", num_classes=5, **options)  # 8 px, 2 px patches: 4x4 grid
    x, y = torch.randn(6, 3, 8, 8), torch.randint(0, 5, (6,))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    assert torch.isfinite(loss)
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert no_grad == []
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    opt.step()
    assert torch.isfinite(model(x)).all()


def test_token_mixing_modules_are_named_by_kind():
    keys = lambda **o: {
        k.split(".", 2)[2]
        for k in resmlp.create_model("resmlp_micro8", **o).state_dict()  # noqa: E731
        if k.startswith("blocks.0.")
    }
    assert "linear_tokens.weight" in keys()  # timm's key for A, unchanged
    assert {"mlp_tokens.fc1.weight", "mlp_tokens.fc2.weight"} <= keys(token_mixing="mlp")
    assert {"conv_tokens.conv.weight", "conv_tokens.pointwise.weight"} <= keys(token_mixing="conv3x3_separable")
    assert not any("tokens" in k for k in keys(token_mixing="none"))
    assert "norm1.running_mean" in keys(norm="batchnorm") and "norm1.weight" in keys(norm="layernorm")


def test_conv_token_mixing_is_a_3x3_convolution_on_the_patch_grid():
    torch.manual_seed(0)
    block = resmlp.models.ResMLPBlock(dim=4, num_patches=12, grid=(3, 4), token_mixing="conv3x3_depthwise")
    x = torch.randn(2, 12, 4)
    want = torch.nn.functional.conv2d(
        x.transpose(1, 2).reshape(2, 4, 3, 4),
        block.conv_tokens.conv.weight,
        block.conv_tokens.conv.bias,
        padding=1,
        groups=4,
    )
    torch.testing.assert_close(block.mix_tokens(x), want.flatten(2).transpose(1, 2))
    # A planted "read the left neighbour" kernel moves each token's value one column to the right.
    with torch.no_grad():
        block.conv_tokens.conv.weight.zero_()
        block.conv_tokens.conv.weight[:, 0, 1, 0] = 1.0
        block.conv_tokens.conv.bias.zero_()
    grid = block.mix_tokens(x).transpose(1, 2).reshape(2, 4, 3, 4)
    torch.testing.assert_close(grid[..., 1:], x.transpose(1, 2).reshape(2, 4, 3, 4)[..., :-1])
    assert grid[..., 0].abs().max() == 0


def test_class_mlp_updates_only_the_class_token():
    torch.manual_seed(0)
    model = resmlp.create_model("resmlp_micro8", num_classes=5, pooling="class_mlp").eval()
    x = torch.randn(3, 3, 8, 8)
    tokens = model.forward_features(x)
    assert tokens.shape == (3, 1 + model.num_patches, model.embed_dim)
    patches = model.stem(x)
    for block in model.blocks:
        patches = block(patches)
    torch.testing.assert_close(tokens[:, 1:], model.norm(patches))  # the patch tokens pass through untouched
    torch.testing.assert_close(model(x), model.head(tokens[:, 0]))  # the head reads the class token
    with torch.no_grad():
        model.cls_token.add_(1.0)
    moved = model.forward_features(x)
    assert torch.equal(moved[:, 1:], tokens[:, 1:]) and not torch.allclose(moved[:, 0], tokens[:, 0])


@pytest.mark.parametrize(
    "option,value,valid",
    [
        ("norm", "rmsnorm", "affine, layernorm, batchnorm"),
        ("token_mixing", "attention", "linear, mlp, conv3x3"),
        ("pooling", "max", "avg, class_mlp"),
        ("act", "tanh", "gelu, silu, hardswish, relu"),
    ],
)
def test_unknown_ablation_option_names_the_valid_values(option, value, valid):
    with pytest.raises(ValueError, match=f"unknown {option} '{value}'; choose one of: {valid}"):
        resmlp.create_model("resmlp_micro8", **{option: value})


def test_default_options_keep_the_paper_model_bit_for_bit():
    torch.manual_seed(0)
    a = resmlp.create_model("resmlp_micro8")
    torch.manual_seed(0)
    b = resmlp.create_model("resmlp_micro8", norm="affine", token_mixing="linear", pooling="avg", act="gelu")
    assert a.state_dict().keys() == b.state_dict().keys()
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
