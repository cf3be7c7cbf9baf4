"""train/parts.py: the model the training step calls."""

import torch

from resmlp.train import parts


def test_wrap_model_compiles_for_static_shapes_only_when_asked(monkeypatch):
    calls = []

    def fake_compile(model, **kwargs):
        calls.append(kwargs)
        return model

    monkeypatch.setattr(torch, "compile", fake_compile)
    model = torch.nn.Linear(2, 2)
    assert parts.wrap_model(model, torch.device("cpu"), compile=False) is model and calls == []
    parts.wrap_model(model, torch.device("cpu"), compile=True)
    # dynamic=False: each batch shape (progressive sizes, the short last batch) gets its own graph;
    # PyTorch's default turns shape-generic at the second shape and lost the compiled step's gain (results.md)
    assert calls == [{"dynamic": False}]
