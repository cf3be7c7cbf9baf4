"""Magnitude pruning hits the requested sparsity exactly and keeps the largest weights."""

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import resmlp
from resmlp.analysis.prune import magnitude_prune_, parse_sparsities, parse_targets, prune_model, pruning_sweep
from resmlp.analysis.stats import block_weights


@pytest.mark.parametrize("s", [0.0, 0.3, 0.5, 0.8, 0.9, 1.0])
def test_magnitude_prune_zeros_exactly_the_smallest(s):
    torch.manual_seed(0)
    w = torch.randn(37, 53)
    original = w.clone()
    k = magnitude_prune_(w, s)
    assert k == round(s * w.numel()) == int((w == 0).sum())
    kept, pruned = original[w != 0].abs(), original[w == 0].abs()
    if len(kept) and len(pruned):
        assert kept.min() >= pruned.max()
    torch.testing.assert_close(w[w != 0], original[w != 0])


def test_prune_model_prunes_each_layer_of_the_targets_only_and_copies():
    torch.manual_seed(0)
    model = resmlp.create_model("resmlp_micro8")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pruned, report = prune_model(model, 0.75, targets=("A", "C"))
    for ws in block_weights(pruned):
        assert int((ws["A"] == 0).sum()) == 192  # 0.75 * 16 * 16, in every layer
        assert int((ws["C"] == 0).sum()) == round(0.75 * ws["C"].numel())
        assert int((ws["B"] == 0).sum()) == 0
    assert report["A"]["sparsity"] == 0.75 and report["C"]["sparsity"] == pytest.approx(0.75)
    assert 0 < report["A"]["l1_kept"] < 1
    for k, v in model.state_dict().items():  # the original is untouched
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)
    torch.testing.assert_close(pruned.blocks[0].linear_tokens.bias, model.blocks[0].linear_tokens.bias)


def test_parsers_name_the_bad_value():
    assert parse_sparsities("0.5, 0.8,0.9") == [0.5, 0.8, 0.9]
    assert parse_targets("a,B") == ("A", "B")
    with pytest.raises(ValueError, match="'half' is not a number"):
        parse_sparsities("half")
    with pytest.raises(ValueError, match="1.5 is outside"):
        parse_sparsities("0.5,1.5")
    with pytest.raises(ValueError, match="unknown target D"):
        parse_targets("A,D")


def test_pruning_sweep_reports_accuracy_from_the_unpruned_model_on():
    torch.manual_seed(0)
    model = resmlp.create_model("resmlp_micro8", num_classes=3).eval()
    x = torch.randn(12, 3, 8, 8)
    with torch.no_grad():
        y = model(x).argmax(1)  # labels = the unpruned model's own predictions: top-1 is 100% at 0.0
    loader = DataLoader(TensorDataset(x, y), batch_size=5)
    results = pruning_sweep(model, [1.0, 0.5], ("A", "B", "C"), loader=loader, progress=False)
    assert [r["sparsity"] for r in results] == [0.0, 0.5, 1.0]
    assert results[0]["top1"] == 100.0 and results[0]["top5"] == 100.0
    assert results[2]["targets"]["B"] == {"sparsity": 1.0, "l1_kept": 0.0}
    assert all(0 <= r["top1"] <= 100 and r["loss"] >= 0 for r in results)
    assert "top1" not in pruning_sweep(model, [0.5], loader=None)[1]
