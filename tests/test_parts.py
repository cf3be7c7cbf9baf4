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


def test_a_compiled_step_with_nonfinite_gradients_falls_back_to_eager(monkeypatch, capsys):
    from resmlp.train.engine import StepContext

    monkeypatch.setattr(torch, "compile", lambda model, **kwargs: ("compiled", model))
    model = torch.nn.Linear(2, 2)
    ctx = StepContext(
        model=("compiled", model), optimizer=None, schedule=None, criterion=None, device=torch.device("cpu")
    )
    run = parts.Run(None, None, 0, 1, None, None, model, ctx, *[None] * 7, compiled=True)  # rank 0 of 1
    assert run.fall_back_from_compile() and not run.compiled and ctx.model is model
    assert "the step runs eager from now on" in capsys.readouterr().out
    assert not run.fall_back_from_compile()  # eager already: the gradients are the model's own, the run stops
