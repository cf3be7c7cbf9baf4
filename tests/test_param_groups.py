"""Weight-decay grouping and the optimizer factory."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from resmlp.optim import Lamb, build_optimizer, clips_internally, param_groups, split_decay_names

DIM, TOKENS = 6, 4


class _Affine(nn.Module):
    """Stand-in for the model's Aff: per-channel scale and shift of shape [1, 1, D]."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1, 1, dim))
        self.beta = nn.Parameter(torch.zeros(1, 1, dim))


class _Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.norm1 = _Affine(DIM)
        self.linear_tokens = nn.Linear(TOKENS, TOKENS)
        self.ls1 = nn.Parameter(torch.ones(DIM))
        self.norm2 = _Affine(DIM)
        self.mlp_channels = nn.Sequential(nn.Linear(DIM, 2 * DIM), nn.GELU(), nn.Linear(2 * DIM, DIM))
        self.ls2 = nn.Parameter(torch.ones(DIM))


class _TinyModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, DIM, kernel_size=2, stride=2)
        self.pos_embed = nn.Parameter(torch.zeros(1, TOKENS, DIM))
        self.blocks = nn.ModuleList([_Block()])
        self.token_norm = nn.LayerNorm((TOKENS, DIM))  # 2-D weight: caught by the norm-layer rule
        self.norm = nn.LayerNorm(DIM)
        self.head = nn.Linear(DIM, 10)
        self.frozen = nn.Parameter(torch.zeros(3, 3), requires_grad=False)


BLOCK_NO_DECAY = [
    "blocks.0.norm1.alpha",
    "blocks.0.norm1.beta",
    "blocks.0.linear_tokens.bias",
    "blocks.0.ls1",
    "blocks.0.norm2.alpha",
    "blocks.0.norm2.beta",
    "blocks.0.mlp_channels.0.bias",
    "blocks.0.mlp_channels.2.bias",
    "blocks.0.ls2",
]
EXPECTED_DECAY = [
    "stem.weight",
    "pos_embed",
    "blocks.0.linear_tokens.weight",
    "blocks.0.mlp_channels.0.weight",
    "blocks.0.mlp_channels.2.weight",
    "head.weight",
]
EXPECTED_NO_DECAY = [
    "stem.bias",
    *BLOCK_NO_DECAY,
    "token_norm.weight",
    "token_norm.bias",
    "norm.weight",
    "norm.bias",
    "head.bias",
]


def _names_by_group(model: nn.Module, groups: list[dict]) -> dict[str, list[str]]:
    name_of = {id(p): n for n, p in model.named_parameters()}
    return {g["name"]: sorted(name_of[id(p)] for p in g["params"]) for g in groups}


def test_groups_hold_exactly_the_expected_names() -> None:
    model = _TinyModel()
    groups = param_groups(model, weight_decay=0.05)
    assert [g["name"] for g in groups] == ["decay", "no_decay"]
    assert [g["weight_decay"] for g in groups] == [0.05, 0.0]
    assert _names_by_group(model, groups) == {
        "decay": sorted(EXPECTED_DECAY),
        "no_decay": sorted(EXPECTED_NO_DECAY),
    }
    decay, no_decay = split_decay_names(model)
    assert (sorted(decay), sorted(no_decay)) == (sorted(EXPECTED_DECAY), sorted(EXPECTED_NO_DECAY))


def test_skip_accepts_parameter_names_and_module_paths() -> None:
    model = _TinyModel()
    decay, no_decay = split_decay_names(model, skip=["pos_embed", "stem"])
    assert set(decay) == set(EXPECTED_DECAY) - {"pos_embed", "stem.weight"}
    assert set(no_decay) == set(EXPECTED_NO_DECAY) | {"pos_embed", "stem.weight"}
    # A prefix that is not a whole path component skips nothing.
    assert set(split_decay_names(model, skip=["ste"])[0]) == set(EXPECTED_DECAY)


def test_empty_groups_are_omitted() -> None:
    groups = param_groups(nn.LayerNorm(4), weight_decay=0.1)
    assert [g["name"] for g in groups] == ["no_decay"]


@pytest.mark.parametrize(
    "name, cls, eps",
    [
        ("lamb", Lamb, 1e-6),
        ("adamw", torch.optim.AdamW, 1e-8),
        ("sgd", torch.optim.SGD, None),
    ],
)
def test_build_optimizer_each_name(name: str, cls: type, eps: float | None) -> None:
    torch.manual_seed(0)
    model = _TinyModel()
    opt = build_optimizer(model, name=name, lr=1e-3, weight_decay=0.05)
    assert type(opt) is cls
    assert [g["weight_decay"] for g in opt.param_groups] == [0.05, 0.0]
    assert all(g["lr"] == 1e-3 for g in opt.param_groups)
    if eps is not None:
        assert all(g["eps"] == eps for g in opt.param_groups)
    if name == "sgd":
        assert all(g["nesterov"] and g["momentum"] == 0.9 for g in opt.param_groups)
    if name == "lamb":
        assert opt.defaults["max_grad_norm"] == 1.0

    before = model.head.weight.detach().clone()
    x = torch.randn(2, 3, 4, 8)
    tokens = model.stem(x).flatten(2).transpose(1, 2)  # (B, D, 2, 4) -> (B, 8, D)
    model.head(model.norm(tokens).mean(1)).sum().backward()
    opt.step()
    assert not torch.equal(before, model.head.weight)


def test_build_optimizer_unknown_name_lists_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"'adam'.*lamb, adamw, sgd"):
        build_optimizer(_TinyModel(), name="adam", lr=1e-3, weight_decay=0.05)


@pytest.mark.parametrize(
    "name, max_grad_norm, clips",
    [
        ("lamb", 1.0, True),
        ("lamb", None, False),
        ("adamw", 1.0, False),
        ("sgd", 1.0, False),
    ],
)
def test_only_lamb_with_a_max_grad_norm_clips_internally(name: str, max_grad_norm: float | None, clips: bool) -> None:
    opt = build_optimizer(_TinyModel(), name=name, lr=1e-3, weight_decay=0.05, max_grad_norm=max_grad_norm)
    assert clips_internally(opt) is clips


def test_ablation_variants_decay_only_their_weight_matrices_and_kernels() -> None:
    import resmlp

    model = resmlp.create_model(
        "resmlp_micro8", norm="batchnorm", pooling="class_mlp", token_mixing="conv3x3_separable"
    )
    decay, no_decay = split_decay_names(model)
    assert "cls_token" in no_decay and "blocks.0.norm1.weight" in no_decay  # a class token, a BatchNorm scale
    assert {
        "blocks.0.conv_tokens.conv.weight",
        "blocks.0.conv_tokens.pointwise.weight",
        "class_blocks.0.linear_tokens.weight",
    } <= set(decay)


def test_norm_lr_scale_gives_the_normalisation_layers_their_own_lr():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(2))
    model(torch.randn(2, 3, 5, 5))
    groups = {g["name"]: g for g in param_groups(model, 0.1, lr=0.2, norm_lr_scale=64.0)}
    assert [id(p) for p in groups["norms"]["params"]] == [id(model[1].weight), id(model[1].bias)]
    assert groups["norms"]["lr"] == pytest.approx(12.8) and groups["norms"]["weight_decay"] == 0.0
    assert groups["decay"]["lr"] == groups["no_decay"]["lr"] == 0.2
    assert [id(p) for p in groups["no_decay"]["params"]] == [id(model[3].bias)]  # a bias, not a norm's
    opt = build_optimizer(model, name="sgd", lr=0.2, weight_decay=0.1, norm_lr_scale=64.0)
    assert sorted(g["lr"] for g in opt.param_groups) == pytest.approx([0.2, 0.2, 12.8])
    plain = param_groups(model, 0.1)  # scale 1: the two groups as always, no lr of their own
    assert [g["name"] for g in plain] == ["decay", "no_decay"] and all("lr" not in g for g in plain)
    with pytest.raises(ValueError, match="norm_lr_scale: not with the muon optimizer"):
        build_optimizer(model, name="muon", lr=0.2, weight_decay=0.1, norm_lr_scale=2.0)


def test_the_schedule_keeps_the_norm_groups_lr_ratio():
    from resmlp.optim import CosineWarmupSchedule

    model = nn.Sequential(nn.Linear(3, 3), nn.LayerNorm(3))
    opt = build_optimizer(model, name="sgd", lr=0.1, weight_decay=0.0, norm_lr_scale=10.0)
    schedule = CosineWarmupSchedule(opt, total_steps=10, warmup_steps=0, min_lr=0.0, decay="linear")
    for _ in range(4):
        schedule.step()
    lrs = {g["name"]: g["lr"] for g in opt.param_groups}
    assert lrs["no_decay"] == pytest.approx(0.06) and lrs["norms"] == pytest.approx(0.6)
