"""The backbone seams of PatchClassifier (ResMLP and Mixer): forward_intermediates, prune_intermediate_layers,
features_only backbones and gradient checkpointing."""

import pytest
import torch

import resmlp
from resmlp.models import FeatureMaps, get_variant, list_models, take_indices

PATCH_MODELS = [n for n in list_models() if get_variant(n).arch in ("resmlp", "mixer")]


def model(name="resmlp_micro16", seed=0, **kw):
    torch.manual_seed(seed)
    return resmlp.create_model(name, **kw).eval()


def images(n, size, seed=1):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def by_hand(m, x):
    """Every block's (B, N, D) output, running the blocks one by one."""
    outs, t = [], m.stem(x)
    for block in m.blocks:
        t = block(t)
        outs.append(t)
    return outs


def test_take_indices():
    assert take_indices(6, None) == [0, 1, 2, 3, 4, 5]
    assert take_indices(6, 2) == [4, 5]
    assert take_indices(6, [0, -1, 3]) == [0, 3, 5]
    with pytest.raises(ValueError, match="block index 6 out of range for a model with 6 blocks"):
        take_indices(6, [6])
    with pytest.raises(ValueError, match="between 1 and 6"):
        take_indices(6, 0)


@pytest.mark.parametrize("name", ["resmlp_micro16", "mixer_tiny32"])
def test_forward_intermediates_equals_slicing_the_blocks_by_hand(name):
    m = model(name, depth=4)
    size = m.spec.args["img_size"]
    x = images(2, size)
    g = size // m.spec.args["patch_size"]
    with torch.no_grad():
        hand = by_hand(m, x)
        final, maps = m.forward_intermediates(x, indices=[1, -1])
        torch.testing.assert_close(final, m.forward_features(x), rtol=0, atol=0)
        assert [t.shape for t in maps] == [(2, m.embed_dim, g, g)] * 2
        for got, want in zip(maps, (hand[1], hand[3])):
            # NCHW map = the tokens laid back on their row-major grid: token n = row * g + col
            torch.testing.assert_close(got, want.transpose(1, 2).reshape(2, -1, g, g), rtol=0, atol=0)
            torch.testing.assert_close(got[:, :, 1, 0], want[:, g], rtol=0, atol=0)
        tokens = m.forward_intermediates(x, indices=2, output_fmt="NLC", norm=True, intermediates_only=True)
        assert len(tokens) == 2
        torch.testing.assert_close(tokens[0], m.norm(hand[2]), rtol=0, atol=0)
        torch.testing.assert_close(tokens[1], m.norm(hand[3]), rtol=0, atol=0)
    with pytest.raises(ValueError, match="output_fmt='NHWC'"):
        m.forward_intermediates(x, output_fmt="NHWC")


def test_prune_intermediate_layers_keeps_what_is_asked_for():
    m = model(depth=6)
    x = images(2, 16)
    with torch.no_grad():
        want = by_hand(m, x)[2]
        kept = m.prune_intermediate_layers([1, 2])
        assert kept == [1, 2] and len(m.blocks) == 3 and m.num_classes == 0
        assert isinstance(m.head, torch.nn.Identity)
        torch.testing.assert_close(
            m.forward_intermediates(x, indices=kept, output_fmt="NLC", intermediates_only=True)[1], want, rtol=0, atol=0
        )
    m.prune_intermediate_layers(1, prune_norm=True)
    assert isinstance(m.norm, torch.nn.Identity)


@pytest.mark.parametrize("name", PATCH_MODELS)
def test_features_only_shapes_for_every_variant(name):
    variant = get_variant(name)
    patch = variant.args["patch_size"]
    size = 4 * patch  # a 4x4 grid keeps even the large variants quick
    with torch.device("meta"):  # shapes only for the large variants' sake; values are tested below
        backbone = resmlp.create_model(name, img_size=size, features_only=True, out_indices=(0, -1))
        maps = backbone(torch.zeros(2, 3, size, size))
    dim, depth = variant.args["embed_dim"], variant.args["depth"]
    assert isinstance(backbone, FeatureMaps) and backbone.out_indices == [0, depth - 1]
    assert [tuple(t.shape) for t in maps] == [(2, dim, 4, 4)] * 2
    assert backbone.feature_info == [
        dict(num_chs=dim, reduction=patch, module="blocks.0", index=0),
        dict(num_chs=dim, reduction=patch, module=f"blocks.{depth - 1}", index=depth - 1),
    ]
    with torch.device("meta"):
        last3 = resmlp.create_model(name, img_size=size, features_only=True, out_indices=3)
    assert last3.out_indices == [depth - 3, depth - 2, depth - 1]


def test_features_only_values_and_pruned_tail():
    full = model("resmlp_micro16")
    backbone = model("resmlp_micro16", features_only=True, out_indices=[1, 3])
    assert len(backbone.model.blocks) == 4 and not any(k.startswith("model.head") for k in backbone.state_dict())
    x = images(3, 16)
    with torch.no_grad():
        hand = by_hand(full, x)
        maps = backbone(x)
    for got, want in zip(maps, (hand[1], hand[3])):
        torch.testing.assert_close(got, want.transpose(1, 2).reshape(3, 128, 8, 8), rtol=0, atol=0)
    assert backbone.spec.name == "resmlp_micro16"
    with pytest.raises(ValueError, match="features_only needs a ResMLP or Mixer model, not CifarResNet"):
        resmlp.create_model("resnet20_cifar", features_only=True)


@pytest.mark.parametrize("name", ["resmlp_micro16", "mixer_tiny32"])
def test_gradient_checkpointing_gives_the_same_gradients(name):
    """Also with stochastic depth on: the recomputation must redraw the same DropPath masks."""

    def grads(checkpointing):
        m = model(name, depth=3, drop_path_rate=0.3).train()
        m.set_grad_checkpointing(checkpointing)
        size = m.spec.args["img_size"]
        torch.manual_seed(7)
        loss = m(images(4, size)).logsumexp(1).mean() + m.forward_intermediates(images(4, size))[1][0].square().mean()
        loss.backward()
        return loss.detach(), {k: p.grad for k, p in m.named_parameters()}

    loss, want = grads(False)
    loss_ckpt, got = grads(True)
    torch.testing.assert_close(loss_ckpt, loss, rtol=0, atol=0)
    assert set(got) == set(want)
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-6, atol=1e-7, msg=k)


def test_gradient_checkpointing_stores_fewer_activations():
    """Checkpointed blocks keep only their inputs for backward: count the tensors autograd saves."""

    def saved_bytes(checkpointing):
        m = model("resmlp_micro16", depth=4).train()
        m.set_grad_checkpointing(checkpointing)
        total = []

        def pack(t):
            total.append(t.numel() * t.element_size())
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            m(images(8, 16)).sum()
        return sum(total)

    assert saved_bytes(True) < 0.5 * saved_bytes(False)
