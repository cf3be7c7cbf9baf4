"""Test-time augmentation wrapper (models/tta.py)."""

import pytest
import torch
from torch import nn

import resmlp
from resmlp.models import TestTimeAugment, shift_image, tta_views, with_tta


def tiny():
    torch.manual_seed(0)
    return resmlp.create_model("resmlp_tiny32", depth=2, embed_dim=32).eval()


def test_output_is_the_mean_of_the_views_computed_by_hand():
    model = tiny()
    x = torch.randn(3, 3, 32, 32)
    flipped = x.flip(-1)
    pad = lambda t: nn.functional.pad(t, (1, 1, 1, 1), mode="reflect")  # noqa: E731
    # +1 px: content moves down/right, so row 0 is the reflection of row 1; -1 px: the other way.
    views = [v for t in (x, flipped) for v in (t, pad(t)[..., :32, :32], pad(t)[..., 2:, 2:])]
    with torch.no_grad():
        expected = torch.stack([model(v) for v in views]).mean(0)
        got = TestTimeAugment(model, flip=True, shifts=1)(x)
    assert got.shape == (3, 10)
    torch.testing.assert_close(got, expected)


class Lambda(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


def test_flip_only_of_a_flip_symmetric_model_equals_the_model():
    model = tiny()
    symmetric = lambda x: model(x) + model(x.flip(-1))  # noqa: E731
    wrapper = TestTimeAugment(Lambda(symmetric), flip=True)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(wrapper(x), symmetric(x))
        assert not torch.allclose(TestTimeAugment(model, flip=True)(x), model(x))  # a plain model is not symmetric


def test_shift_image_moves_content_and_fills_the_border():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    down_right = shift_image(x, 1, 1)
    assert torch.equal(down_right[..., 1:, 1:], x[..., :3, :3])
    assert torch.equal(down_right[0, 0, 0, 1:], x[0, 0, 1, :3])  # reflect: the new top row is row 1
    assert torch.equal(shift_image(x, -1, 0, "replicate")[0, 0, 3], x[0, 0, 3])  # replicate: row 3 again
    assert shift_image(x, 0, 0) is x


def test_views_attributes_and_parsing():
    model = tiny()
    assert len(TestTimeAugment(model, flip=False).views) == 1
    assert len(TestTimeAugment(model, flip=True, shifts=2).views) == 6
    wrapped = with_tta(model, "flip+shift1")
    assert wrapped.inner is model and wrapped.num_classes == 10
    assert wrapped.spec is model.spec and wrapped.embed_dim == 32
    assert list(wrapped.state_dict()) == ["inner." + k for k in model.state_dict()]
    assert with_tta(model, "none") is model
    assert tta_views("none") == (False, 0)
    assert tta_views("flip") == (True, 0)
    assert tta_views("shift1") == (False, 1)
    assert tta_views("flip+shift2") == (True, 2)


@pytest.mark.parametrize("spec", ["", "flip+flip", "shift0", "shift", "rotate", "flip+shift1+shift2", "none+flip"])
def test_bad_specs_name_the_problem(spec):
    with pytest.raises(ValueError, match="bad test-time augmentation"):
        tta_views(spec)
