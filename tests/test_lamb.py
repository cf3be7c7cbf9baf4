"""Lamb against a plain-Python reference written from the algorithm's definition."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from resmlp.optim import Lamb, global_grad_norm


def _norm(xs: list[float]) -> float:
    return math.sqrt(sum(x * x for x in xs))


def _reference_lamb(
    w: list[float],
    grads: list[list[float]],
    *,
    lr: float,
    betas: tuple[float, float],
    eps: float,
    weight_decay: float,
    adapt: bool,
) -> list[float]:
    """Run len(grads) LAMB steps on one tensor with plain floats (grads already clipped)."""
    b1, b2 = betas
    m = [0.0] * len(w)
    v = [0.0] * len(w)
    w = list(w)
    for t, g in enumerate(grads, start=1):
        m = [b1 * mi + (1 - b1) * gi for mi, gi in zip(m, g)]
        v = [b2 * vi + (1 - b2) * gi * gi for vi, gi in zip(v, g)]
        m_hat = [mi / (1 - b1**t) for mi in m]
        v_hat = [vi / (1 - b2**t) for vi in v]
        u = [mh / (math.sqrt(vh) + eps) + weight_decay * wi for mh, vh, wi in zip(m_hat, v_hat, w)]
        ratio = 1.0
        if adapt and _norm(w) > 0 and _norm(u) > 0:
            ratio = _norm(w) / _norm(u)
        w = [wi - lr * ratio * ui for wi, ui in zip(w, u)]
    return w


W0 = [0.5, -1.0, 2.0]
# Gradients comparable to eps so that eps (and hence bias correction at step 2) matters.
GRADS = [[0.02, -0.01, 0.005], [-0.01, 0.03, 0.002]]
HP = dict(lr=0.1, betas=(0.9, 0.99), eps=0.01)


def _run(w0: list[float], grads: list[list[float]], **kwargs) -> tuple[torch.Tensor, Lamb]:
    p = nn.Parameter(torch.tensor(w0, dtype=torch.float64))
    opt = Lamb([p], **kwargs)
    for g in grads:
        p.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
    return p.detach(), opt


@pytest.mark.parametrize("weight_decay", [0.0, 0.2])
def test_two_steps_match_reference(weight_decay: float) -> None:
    got, _ = _run(W0, GRADS, weight_decay=weight_decay, max_grad_norm=None, **HP)
    want = _reference_lamb(W0, GRADS, weight_decay=weight_decay, adapt=weight_decay != 0, **HP)
    torch.testing.assert_close(got, torch.tensor(want, dtype=torch.float64))


def test_trust_ratio_only_with_weight_decay_unless_always_adapt() -> None:
    plain, _ = _run(W0, GRADS[:1], weight_decay=0.0, max_grad_norm=None, **HP)
    adapted, _ = _run(W0, GRADS[:1], weight_decay=0.0, max_grad_norm=None, always_adapt=True, **HP)
    want_plain = _reference_lamb(W0, GRADS[:1], weight_decay=0.0, adapt=False, **HP)
    want_adapted = _reference_lamb(W0, GRADS[:1], weight_decay=0.0, adapt=True, **HP)
    assert abs(want_plain[0] - want_adapted[0]) > 1e-3  # the case discriminates
    torch.testing.assert_close(plain, torch.tensor(want_plain, dtype=torch.float64))
    torch.testing.assert_close(adapted, torch.tensor(want_adapted, dtype=torch.float64))


def test_trust_clip_caps_ratio_at_one() -> None:
    # ||w|| is large relative to ||u||, so the unclipped ratio would exceed 1.
    w0 = [10.0, -20.0, 30.0]
    got, _ = _run(w0, GRADS[:1], weight_decay=0.01, max_grad_norm=None, trust_clip=True, **HP)
    want = _reference_lamb(w0, GRADS[:1], weight_decay=0.01, adapt=False, **HP)
    torch.testing.assert_close(got, torch.tensor(want, dtype=torch.float64))


def test_zero_weight_uses_ratio_one() -> None:
    w0 = [0.0, 0.0, 0.0]
    got, _ = _run(w0, GRADS[:1], weight_decay=0.2, max_grad_norm=None, **HP)
    want = _reference_lamb(w0, GRADS[:1], weight_decay=0.2, adapt=True, **HP)
    assert all(x != 0.0 for x in want)
    torch.testing.assert_close(got, torch.tensor(want, dtype=torch.float64))


def test_global_clipping_spans_all_groups() -> None:
    # Two tensors in two groups; global grad norm sqrt(6^2 + 8^2) = 10, clipped to 1.
    w_a, w_b = [1.0, 2.0], [-1.0, 0.5]
    g_a, g_b = [6.0, 0.0], [0.0, 8.0]
    hp = dict(lr=0.1, betas=(0.9, 0.99), eps=0.5)  # eps large: the clip changes the update
    a = nn.Parameter(torch.tensor(w_a, dtype=torch.float64))
    b = nn.Parameter(torch.tensor(w_b, dtype=torch.float64))
    opt = Lamb([{"params": [a], "weight_decay": 0.1}, {"params": [b]}], max_grad_norm=1.0, **hp)
    a.grad = torch.tensor(g_a, dtype=torch.float64)
    b.grad = torch.tensor(g_b, dtype=torch.float64)
    opt.step()

    clipped_a, clipped_b = [x / 10 for x in g_a], [x / 10 for x in g_b]
    want_a = _reference_lamb(w_a, [clipped_a], weight_decay=0.1, adapt=True, **hp)
    want_b = _reference_lamb(w_b, [clipped_b], weight_decay=0.0, adapt=False, **hp)
    unclipped_b = _reference_lamb(w_b, [g_b], weight_decay=0.0, adapt=False, **hp)
    assert abs(unclipped_b[1] - want_b[1]) > 1e-2
    torch.testing.assert_close(a.detach(), torch.tensor(want_a, dtype=torch.float64))
    torch.testing.assert_close(b.detach(), torch.tensor(want_b, dtype=torch.float64))
    # The moments saw the clipped gradient; p.grad itself is left untouched.
    torch.testing.assert_close(opt.state[b]["exp_avg"], torch.tensor([0.0, 0.1 * 0.8], dtype=torch.float64))
    torch.testing.assert_close(opt.state[b]["exp_avg_sq"], torch.tensor([0.0, 0.01 * 0.64], dtype=torch.float64))
    torch.testing.assert_close(b.grad, torch.tensor(g_b, dtype=torch.float64))


def test_no_clipping_below_threshold() -> None:
    got, _ = _run(W0, GRADS, weight_decay=0.2, max_grad_norm=1.0, **HP)
    want = _reference_lamb(W0, GRADS, weight_decay=0.2, adapt=True, **HP)
    torch.testing.assert_close(got, torch.tensor(want, dtype=torch.float64))


def test_global_grad_norm() -> None:
    a, b, c = (nn.Parameter(torch.zeros(2)) for _ in range(3))
    a.grad, b.grad = torch.tensor([3.0, 0.0]), torch.tensor([0.0, 4.0])
    torch.testing.assert_close(global_grad_norm([a, b, c]), torch.tensor(5.0))
    assert global_grad_norm([c]) is None


def _model_and_batches(seed: int) -> tuple[nn.Module, list[tuple[torch.Tensor, torch.Tensor]]]:
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 8), nn.GELU(), nn.Linear(8, 3))
    batches = [(torch.randn(5, 4, generator=gen), torch.randn(5, 3, generator=gen)) for _ in range(4)]
    return model, batches


def _train(model: nn.Module, opt: Lamb, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    for x, y in batches:
        opt.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        opt.step()


def test_state_dict_round_trip_resumes_identically() -> None:
    model, batches = _model_and_batches(seed=0)
    resumed = copy.deepcopy(model)
    hp = dict(lr=1e-2, weight_decay=0.05, max_grad_norm=0.5)

    full_opt = Lamb(model.parameters(), **hp)
    _train(model, full_opt, batches)

    first_opt = Lamb(resumed.parameters(), **hp)
    _train(resumed, first_opt, batches[:2])
    saved_model = copy.deepcopy(resumed.state_dict())
    saved_opt = copy.deepcopy(first_opt.state_dict())

    fresh, _ = _model_and_batches(seed=1)  # different init: everything must come from the state
    fresh.load_state_dict(saved_model)
    second_opt = Lamb(fresh.parameters(), **hp)
    second_opt.load_state_dict(saved_opt)
    _train(fresh, second_opt, batches[2:])

    for p_full, p_resumed in zip(model.parameters(), fresh.parameters()):
        torch.testing.assert_close(p_full, p_resumed, rtol=0, atol=0)


@pytest.mark.parametrize(
    "kwargs, word",
    [
        (dict(lr=-1.0), "lr"),
        (dict(betas=(0.9, 1.0)), "betas"),
        (dict(max_grad_norm=0.0), "max_grad_norm"),
        (dict(weight_decay=-0.1), "weight_decay"),
    ],
)
def test_bad_hyperparameters_are_named(kwargs: dict, word: str) -> None:
    with pytest.raises(ValueError, match=word):
        Lamb([nn.Parameter(torch.zeros(1))], **kwargs)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu() -> None:
    got_cpu, _ = _run(W0, GRADS, weight_decay=0.2, max_grad_norm=0.01, **HP)
    p = nn.Parameter(torch.tensor(W0, dtype=torch.float64, device="cuda"))
    opt = Lamb([p], weight_decay=0.2, max_grad_norm=0.01, **HP)
    for g in GRADS:
        p.grad = torch.tensor(g, dtype=torch.float64, device="cuda")
        opt.step()
    torch.testing.assert_close(p.detach().cpu(), got_cpu)
