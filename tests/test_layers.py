import os

import pytest
import torch
import torch.nn.functional as F

from resmlp import create_model
from resmlp.models.layers import ACTIVATIONS, ReLU


def relu_input() -> torch.Tensor:
    x = torch.randn(64, 48, generator=torch.Generator().manual_seed(0))
    x[0, :8] = 0.0  # exact zeros, where the two forms' gradients differ
    return x


def value_and_grad(fn, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.clone().requires_grad_(True)
    y = fn(x)
    (y * torch.arange(y.numel(), dtype=y.dtype).view_as(y)).sum().backward()  # a different weight per element
    return y.detach(), x.grad


def test_relu_eager_is_pytorchs_own():
    x = relu_input()
    want_y, want_g = value_and_grad(F.relu, x)
    y, g = value_and_grad(ReLU(), x)
    assert torch.equal(y, want_y) and torch.equal(g, want_g)
    assert ACTIVATIONS["relu"] is ReLU and isinstance(ReLU(), torch.nn.ReLU)  # isinstance checks still hold
    model = create_model("resmlp_tiny32", act="relu")
    assert all(type(b.mlp_channels.act) is ReLU for b in model.blocks)


def test_relu_traced_form_gives_the_same_values_and_gradients_away_from_zero(monkeypatch):
    """What torch.compile traces: the mask-free (x + |x|) / 2 (inductor's bool-mask kernels are slow)."""
    x = relu_input()
    want_y, want_g = value_and_grad(F.relu, x)
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    y, g = value_and_grad(ReLU(), x)
    assert torch.equal(y, want_y)
    zero = x == 0
    assert torch.equal(g[~zero], want_g[~zero])
    assert torch.equal(g[zero], 0.5 * value_and_grad(lambda t: t, x)[1][zero])  # 1/2 at exactly 0, not 0


@pytest.mark.skipif(
    not os.environ.get("RESMLP_TEST_COMPILE"),
    reason="torch.compile takes 15-60 s on a 2-core CPU; set RESMLP_TEST_COMPILE=1 to run",
)
def test_relu_compiled_matches_eager():
    x = relu_input()
    x[0, :8] = 0.5  # away from zero
    want_y, want_g = value_and_grad(F.relu, x)
    y, g = value_and_grad(torch.compile(ReLU(), dynamic=False), x)
    assert torch.equal(y, want_y) and torch.allclose(g, want_g)
