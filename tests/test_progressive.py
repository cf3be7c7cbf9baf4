"""Progressive resizing (train/progressive.py): the schedule, the switch (model, EMA, moments, transforms)
and resuming across a switch."""
import json

import pytest
import torch

from resmlp.checkpoint import read_checkpoint
from resmlp.cli import main
from resmlp.config import ConfigError, load_config
from resmlp.optim import build_optimizer
from resmlp.models import create_model, resample_optimizer_state
from resmlp.train.progressive import size_at
from resmlp.train.run import train

TINY = ["model.embed_dim=16", "model.depth=1", "data.batch_size=64", "data.workers=0", "optim.warmup_epochs=1",
        "run.progress=false", "run.tensorboard=false", "data.crop=pad", "data.padding=1"]
SCHEDULE = "run.progressive_sizes=[[0, 4], [1, 4, 6], [2, 8]]"


def test_size_at_follows_the_schedule():
    schedule = [(0, (4, 4)), (2, (6, 6)), (5, (8, 8))]
    assert [size_at(schedule, e, 8) for e in (0, 1, 2, 4, 5, 9)] == [(4, 4)] * 2 + [(6, 6)] * 2 + [(8, 8)] * 2
    assert size_at([(3, (4, 4))], 0, (8, 10)) == (8, 10)  # before the first entry: model.img_size


def test_schedule_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"run.progressive_sizes\[1\]"):
        load_config("digits", ["run.progressive_sizes=[[0, 4], [2]]"])
    with pytest.raises(ConfigError, match="the epochs must increase"):
        load_config("digits", ["run.progressive_sizes=[[2, 4], [1, 8]]"])
    with pytest.raises(ConfigError, match=r"progressive_sizes\[0\]: size 5x5 is not a multiple of the patch size 2"):
        train(load_config("digits", TINY + ["run.progressive_sizes=[[0, 5]]"]), out=tmp_path / "r")
    with pytest.raises(ConfigError, match="model.img_size: expected an int or"):
        load_config("digits", ["model.img_size=[8, 8, 8]"])


def test_optimizer_moments_follow_the_switch():
    model = create_model("resmlp_micro8")
    opt = build_optimizer(model, name="lamb", lr=1e-3, weight_decay=0.05)
    model(torch.randn(4, 3, 8, 8)).sum().backward()
    opt.step()
    a = model.blocks[0].linear_tokens.weight
    old = {k: v.clone() for k, v in opt.state[a].items() if isinstance(v, torch.Tensor) and v.dim()}
    model.set_input_size(12)
    resample_optimizer_state(opt, model, (4, 4), (6, 6))
    assert {opt.state[a][k].shape for k in old} == {(36, 36)}
    assert (opt.state[a]["exp_avg_sq"] >= 0).all()
    bias = model.blocks[0].linear_tokens.bias
    assert opt.state[bias]["exp_avg"].shape == (36,)
    model(torch.randn(4, 3, 12, 12)).sum().backward()
    opt.step()  # the optimizer keeps working on the resampled parameters and moments


@pytest.mark.slow
def test_progressive_run_switches_sizes_and_resumes_across_a_switch(tmp_path):
    """k epochs + resume + k epochs == 2k epochs when the sizes switch at the resumed epoch (model, moments,
    EMA, data transforms), and every epoch trains at its scheduled size."""
    common = TINY + ["optim.epochs=3", "run.ema=true", "run.ema_decay=0.9", SCHEDULE]
    train(load_config("digits", common), out=tmp_path / "full")
    train(load_config("digits", common + ["run.time_limit_min=0"]), out=tmp_path / "split")  # stops after epoch 1
    first = read_checkpoint(tmp_path / "split" / "checkpoints" / "last.pt")
    assert first["epoch"] == 1 and first["model_args"]["img_size"] == 4
    assert first["model"]["blocks.0.linear_tokens.weight"].shape == (4, 4)
    assert main(["train", "--resume", str(tmp_path / "split"), "--set", "run.time_limit_min=null"]) == 0
    a = read_checkpoint(tmp_path / "full" / "checkpoints" / "last.pt")
    b = read_checkpoint(tmp_path / "split" / "checkpoints" / "last.pt")
    assert a["model_args"]["img_size"] == 8 and a["model"]["blocks.0.linear_tokens.weight"].shape == (16, 16)
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for k in a["ema"]:
        assert torch.equal(a["ema"][k], b["ema"][k]), k
    rows = [json.loads(x) for x in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()]
    assert [r["img_size"] for r in rows] == [4, [4, 6], 8]
    assert all(r["val_top1"] > 10 for r in rows)  # evaluated at each epoch's size (10 classes: chance is 10%)
