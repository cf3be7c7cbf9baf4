"""optim/muon.py: Muon on the blocks' matrices + AdamW on the rest, and normalised Muon on a conv net's kernels +
Nesterov SGD on the rest, each as one optimizer."""

import pytest
import torch

import resmlp
from resmlp.optim import CosineWarmupSchedule, MuonAdamW, build_optimizer, muon_param_names


def tiny():
    torch.manual_seed(0)
    return resmlp.create_model("resmlp_micro8", depth=2, embed_dim=16, num_classes=3)


def test_every_parameter_is_in_exactly_one_group_and_muon_gets_the_block_matrices():
    model = tiny()
    opt = build_optimizer(model, name="muon", lr=1e-3, weight_decay=0.05)
    assert isinstance(opt, MuonAdamW)
    grouped = [p for g in opt.param_groups for p in g["params"]]
    assert len(grouped) == len({id(p) for p in grouped}) == len(list(model.parameters()))
    muon = {id(p) for g in opt.muon.param_groups for p in g["params"]}
    names = {n for n, p in model.named_parameters() if id(p) in muon}
    assert (
        names
        == set(muon_param_names(model))
        == {
            f"blocks.{i}.{m}"
            for i in range(2)
            for m in ("linear_tokens.weight", "mlp_channels.fc1.weight", "mlp_channels.fc2.weight")
        }
    )
    no_decay = [g for g in opt.adamw.param_groups if g["weight_decay"] == 0]
    assert any(p is model.blocks[0].ls1 for g in no_decay for p in g["params"])  # LayerScale is not decayed


def test_without_token_mixing_muon_leaves_a_and_mixers_token_mlp_to_adamw_with_decay():
    for model, token in (
        (tiny(), ("linear_tokens.weight",)),
        (
            resmlp.create_model("mixer_tiny32", depth=2, embed_dim=16),
            ("mlp_tokens.fc1.weight", "mlp_tokens.fc2.weight"),
        ),
    ):
        opt = build_optimizer(model, name="muon", lr=1e-3, weight_decay=0.05, muon_token_mixing=False)
        grouped = [p for g in opt.param_groups for p in g["params"]]
        assert len(grouped) == len({id(p) for p in grouped}) == len(list(model.parameters()))
        params = dict(model.named_parameters())
        muon = {id(p) for g in opt.muon.param_groups for p in g["params"]}
        assert {n for n, p in params.items() if id(p) in muon} == {
            f"blocks.{i}.mlp_channels.{fc}.weight" for i in range(2) for fc in ("fc1", "fc2")
        }
        decayed = {id(p) for g in opt.adamw.param_groups if g["weight_decay"] == 0.05 for p in g["params"]}
        assert all(id(params[f"blocks.{i}.{t}"]) in decayed for i in range(2) for t in token)


def train_steps(model, opt, x, y, n):
    """`n` optimizer steps on the one batch (x, y); the last loss."""
    for _ in range(n):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad()
    return loss.item()


def test_muon_trains_resumes_and_follows_the_schedule():
    x, y = torch.randn(16, 3, 8, 8), torch.randint(0, 3, (16,))

    def steps(model, opt, n):
        return train_steps(model, opt, x, y, n)

    model = tiny()
    opt = build_optimizer(model, name="muon", lr=2e-2, weight_decay=0.0)
    first = torch.nn.functional.cross_entropy(model(x), y).item()
    assert steps(model, opt, 40) < 0.5 * first  # overfits one batch
    sched = CosineWarmupSchedule(opt, total_steps=10, warmup_steps=0, base_lr=1e-2, min_lr=0.0)
    assert {g["lr"] for g in opt.muon.param_groups + opt.adamw.param_groups} == {1e-2}
    sched.step()
    assert opt.muon.param_groups[0]["lr"] == opt.adamw.param_groups[0]["lr"] < 1e-2

    a, b = tiny(), tiny()  # k steps + save/load + k steps == 2k steps
    oa, ob = (build_optimizer(m, name="muon", lr=3e-3, weight_decay=0.05) for m in (a, b))
    steps(a, oa, 6)
    steps(b, ob, 3)
    b2 = tiny()
    b2.load_state_dict(b.state_dict())
    ob2 = build_optimizer(b2, name="muon", lr=3e-3, weight_decay=0.05)
    ob2.load_state_dict(ob.state_dict())
    steps(b2, ob2, 3)
    for pa, pb in zip(a.parameters(), b2.parameters()):
        torch.testing.assert_close(pa, pb)


def test_fp32_newton_schulz_is_torchs_iteration_without_the_bf16_rounding():
    import torch.optim._muon as torch_muon

    from resmlp.optim.muon import newton_schulz_fp32

    torch.manual_seed(0)
    coefficients, steps, eps = (3.4445, -4.7750, 2.0315), 5, 1e-7
    for shape in [(12, 20), (20, 12), (16, 16)]:
        g = torch.randn(*shape)
        ours = newton_schulz_fp32(g, coefficients, steps, eps)
        assert ours.dtype == torch.float32 and ours.shape == g.shape
        torch.testing.assert_close(
            ours, torch_muon._zeropower_via_newtonschulz(g, coefficients, steps, eps).float(), atol=0.03, rtol=0.05
        )  # torch's own result is rounded to bf16
        s = torch.linalg.svdvals(ours)  # "orthogonal" in Muon's sense: singular values pushed into ~(0.5, 1.5)
        assert s.min() > 0.3 and s.max() < 1.6


def test_muon_orthogonalises_in_fp32_only_where_bf16_is_emulated(monkeypatch):
    import torch.optim._muon as torch_muon

    import resmlp.optim.muon as muon_module

    torch_version, fp32_version = torch_muon._zeropower_via_newtonschulz, muon_module.newton_schulz_fp32
    calls = []

    def spy(grad, *args):
        calls.append(grad.dtype)
        return fp32_version(grad, *args)

    monkeypatch.setattr(muon_module, "newton_schulz_fp32", spy)
    x, y = torch.randn(8, 3, 8, 8), torch.randint(0, 3, (8,))
    for native, expect_fp32 in [(False, True), (True, False)]:
        monkeypatch.setattr(muon_module, "native_bf16", lambda device, native=native: native)
        model = tiny()
        opt = build_optimizer(model, name="muon", lr=1e-2, weight_decay=0.0)
        assert opt.orthogonalise_in_fp32 is expect_fp32
        calls.clear()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        before = model.blocks[0].mlp_channels.fc1.weight.detach().clone()
        opt.step()
        assert torch_muon._zeropower_via_newtonschulz is torch_version  # the swap ends with the step
        assert len(calls) == (len(muon_param_names(model)) if expect_fp32 else 0)
        assert not torch.equal(before, model.blocks[0].mlp_channels.fc1.weight)


def tiny_convnet():
    torch.manual_seed(0)
    return resmlp.create_model("convnet_cifar", width=1, num_classes=3, batchnorm_scale=False)


def test_muon_sgd_gives_the_block_kernels_to_muon_and_everything_else_to_sgd():
    from resmlp.optim.muon import MuonSGD, NormalizedMuon

    model = tiny_convnet()
    opt = build_optimizer(model, name="muon_sgd", lr=0.5, muon_lr=0.2, weight_decay=1e-3, norm_lr_scale=8)
    assert isinstance(opt, MuonSGD) and isinstance(opt.muon, NormalizedMuon)
    grouped = [p for g in opt.param_groups for p in g["params"]]
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert len(grouped) == len({id(p) for p in grouped}) == len(trainable)
    muon = {n for n, p in model.named_parameters() if any(p is q for q in opt.muon.param_groups[0]["params"])}
    assert muon == {f"blocks.{i}.conv{j}.weight" for i in range(3) for j in (1, 2)}  # not the stem
    lrs = {g.get("name"): g["lr"] for g in opt.sgd.param_groups}
    assert lrs == {"decay": 0.5, "no_decay": 0.5, "norms": 4.0} and opt.muon.param_groups[0]["lr"] == 0.2
    sched = CosineWarmupSchedule(opt, total_steps=4, warmup_steps=0, min_lr=0.0, decay="linear")
    sched.step()  # each group keeps its own peak, scaled by the one schedule
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.15, 0.375, 0.375, 3.0])


def test_muon_sgd_is_refused_for_a_model_without_conv_kernels_in_its_blocks():
    with pytest.raises(ValueError, match="muon_sgd: ResMLP has no conv kernels"):
        build_optimizer(tiny(), name="muon_sgd", lr=0.1, weight_decay=0.0)


def test_normalized_muon_step_renormalises_the_kernel_then_subtracts_the_orthogonalised_momentum():
    from resmlp.optim.muon import NS_COEFFICIENTS, NormalizedMuon, newton_schulz_fp32

    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(8, 4, 3, 3) * 3.0)
    opt = NormalizedMuon([w], lr=0.1, momentum=0.5)
    grads = [torch.randn_like(w) for _ in range(2)]
    expect, buf = w.detach().clone(), torch.zeros_like(w)
    for g in grads:
        w.grad = g.clone()
        with torch.no_grad():
            buf = 0.5 * buf + g
            nesterov = g + 0.5 * buf
            update = newton_schulz_fp32(nesterov.reshape(8, -1), NS_COEFFICIENTS, 5, 1e-7).view_as(w)
            expect = expect * (8**0.5 / expect.norm()) - 0.1 * update
        with fp32_only():
            opt.step()
        torch.testing.assert_close(w.detach(), expect, atol=2e-5, rtol=1e-4)
    w.grad = None
    opt.step()  # no gradient: untouched
    torch.testing.assert_close(w.detach(), expect, atol=2e-5, rtol=1e-4)


def fp32_only():
    import unittest.mock

    import resmlp.optim.muon as muon_module

    return unittest.mock.patch.object(muon_module, "native_bf16", lambda device: False)


def test_muon_sgd_trains_a_conv_net_and_resumes_exactly():
    x, y = torch.randn(16, 3, 32, 32), torch.randint(0, 3, (16,))

    def steps(model, opt, n):
        return train_steps(model, opt, x, y, n)

    def make():
        model = tiny_convnet()
        return model, build_optimizer(model, name="muon_sgd", lr=0.05, muon_lr=0.05, weight_decay=1e-4)

    with fp32_only():
        model, opt = make()
        first = torch.nn.functional.cross_entropy(model(x), y).item()
        assert steps(model, opt, 30) < 0.5 * first  # overfits one batch
        (a, oa), (b, ob) = make(), make()
        steps(a, oa, 4)
        steps(b, ob, 2)
        b2, ob2 = make()
        b2.load_state_dict(b.state_dict())
        ob2.load_state_dict(ob.state_dict())
        steps(b2, ob2, 2)
    for pa, pb in zip(a.state_dict().values(), b2.state_dict().values()):
        torch.testing.assert_close(pa, pb)
