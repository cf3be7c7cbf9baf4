"""Training objectives (train/losses.py): soft-target cross-entropy and DeiT distillation, by hand."""

import math

import pytest
import torch

from resmlp.train.losses import distillation_loss, soft_target_cross_entropy

S = torch.tensor([[2.0, 0.0, -1.0], [0.5, 1.5, 0.0]])  # student logits
T = torch.tensor([[0.0, 3.0, 0.0], [1.0, 0.0, 2.0]])  # teacher logits: argmax 1 and 2
Y = torch.tensor([[0.9, 0.05, 0.05], [0.05, 0.9, 0.05]])  # smoothed targets


def log_softmax(row):
    m = max(row)
    lse = m + math.log(sum(math.exp(v - m) for v in row))
    return [v - lse for v in row]


def hand_ce(rows, targets):
    return sum(-sum(t * l for t, l in zip(ts, log_softmax(r))) for r, ts in zip(rows, targets)) / len(rows)


def test_hard_distillation_by_hand():
    s, y = S.tolist(), Y.tolist()
    base = hand_ce(s, y)
    hard = (-log_softmax(s[0])[1] - log_softmax(s[1])[2]) / 2
    got = distillation_loss(S, Y, T, kind="hard", alpha=0.5, tau=1.0)
    assert got.item() == pytest.approx(0.5 * base + 0.5 * hard, rel=1e-6)
    assert got.item() == pytest.approx(1.2859, abs=2e-4)  # worked out on paper: base 0.5047, hard 2.0672


def test_soft_distillation_by_hand():
    tau, s, t, y = 2.0, S.tolist(), T.tolist(), Y.tolist()
    kl = 0.0
    for sr, tr in zip(s, t):
        ls, lt = log_softmax([v / tau for v in sr]), log_softmax([v / tau for v in tr])
        kl += sum(math.exp(b) * (b - a) for a, b in zip(ls, lt))
    kl /= 2
    expected = 0.3 * hand_ce(s, y) + 0.7 * kl * tau * tau
    assert distillation_loss(S, Y, T, kind="soft", alpha=0.7, tau=tau).item() == pytest.approx(expected, rel=1e-6)
    assert distillation_loss(S, Y, S, kind="soft", alpha=1.0, tau=tau).item() == pytest.approx(0.0, abs=1e-6)


def test_alpha_zero_is_the_plain_loss():
    plain = distillation_loss(S, Y, T, kind="hard", alpha=0.0, tau=1.0)
    torch.testing.assert_close(plain, soft_target_cross_entropy(S, Y))


def test_soft_targets_of_one_hot_are_plain_cross_entropy():
    labels = torch.tensor([0, 2])
    one_hot = torch.nn.functional.one_hot(labels, 3).float()
    torch.testing.assert_close(soft_target_cross_entropy(S, one_hot), torch.nn.functional.cross_entropy(S, labels))
