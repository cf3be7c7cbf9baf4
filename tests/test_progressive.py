"""Progressive resizing (train/progressive.py): the schedule, the switch (model, EMA, moments, transforms)
and resuming across a switch."""

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from resmlp.checkpoint import read_checkpoint
from resmlp.cli import main
from resmlp.config import ConfigError, load_config
from resmlp.data.transforms import build_eval_transform, with_output_size
from resmlp.models import create_model, resample_optimizer_state
from resmlp.optim import build_optimizer
from resmlp.train import budget
from resmlp.train.progressive import relative_epoch_cost, schedule_of, size_at, window_crop_pct
from resmlp.train.run import train

TINY = [
    "model.embed_dim=16",
    "model.depth=1",
    "data.batch_size=64",
    "data.workers=0",
    "optim.warmup_epochs=1",
    "run.progress=false",
    "run.tensorboard=false",
    "data.crop=pad",
    "data.padding=1",
]
SCHEDULE = "progressive.sizes=[[0, 4], [1, 4, 6], [2, 8]]"


def test_size_at_follows_the_schedule():
    schedule = [(0, (4, 4)), (2, (6, 6)), (5, (8, 8))]
    assert [size_at(schedule, e, 8) for e in (0, 1, 2, 4, 5, 9)] == [(4, 4)] * 2 + [(6, 6)] * 2 + [(8, 8)] * 2
    assert size_at([(3, (4, 4))], 0, (8, 10)) == (8, 10)  # before the first entry: model.img_size


def test_schedule_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"progressive.sizes\[1\]"):
        load_config("digits", ["progressive.sizes=[[0, 4], [2]]"])
    with pytest.raises(ConfigError, match="the epochs must increase"):
        load_config("digits", ["progressive.sizes=[[2, 4], [1, 8]]"])
    with pytest.raises(ConfigError, match=r"progressive.sizes\[0\]: size 5x5 is not a multiple of the patch size 2"):
        train(load_config("digits", TINY + ["progressive.sizes=[[0, 5]]"]), out=tmp_path / "r")
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
def test_progressive_run_switches_sizes_and_resumes_across_a_switch(tmp_path, capsys):
    """k epochs + resume + k epochs == 2k epochs when the sizes switch at the resumed epoch (model, moments,
    EMA, data transforms), and every epoch trains at its scheduled size. The start line's parameter count
    names the size it counts: the base size before the first switch, the checkpoint's on resuming."""
    common = TINY + ["optim.epochs=3", "run.ema=true", "run.ema_decay=0.9", SCHEDULE]
    train(load_config("digits", common), out=tmp_path / "full")
    train(load_config("digits", common + ["budget.time_limit_min=0"]), out=tmp_path / "split")  # stops after epoch 1
    assert " params at 8 px), " in capsys.readouterr().out
    first = read_checkpoint(tmp_path / "split" / "checkpoints" / "last.pt")
    assert first["epoch"] == 1 and first["model_args"]["img_size"] == 4
    assert first["model"]["blocks.0.linear_tokens.weight"].shape == (4, 4)
    assert main(["train", "--resume", str(tmp_path / "split"), "--set", "budget.time_limit_min=null"]) == 0
    assert " params at 4 px), " in capsys.readouterr().out
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


def test_a_fitted_plan_moves_the_switches_to_the_same_fraction_of_the_run():
    cfg = load_config("digits", ["optim.epochs=10", "progressive.sizes=[[0, 16], [4, 24], [8, 32]]"])
    assert schedule_of(cfg) == [(0, (16, 16)), (4, (24, 24)), (8, (32, 32))]
    assert schedule_of(cfg, 10) == schedule_of(cfg)
    assert schedule_of(cfg, 5) == [(0, (16, 16)), (2, (24, 24)), (4, (32, 32))]
    assert schedule_of(cfg, 1) == [(0, (16, 16)), (1, (24, 24)), (1, (32, 32))]  # a later entry never moves to 0
    late = load_config("digits", ["optim.epochs=10", "progressive.sizes=[[3, 16]]"])
    assert schedule_of(late, 2) == [(1, (16, 16))]


def test_epoch_cost_swaps_the_first_epochs_passes_for_passes_at_the_epochs_size():
    schedule = [(0, (16, 16)), (2, (24, 24)), (4, (32, 32))]
    seconds = {(16, 16): 0.1, (24, 24): 0.3, (32, 32): 0.6}
    costs = [relative_epoch_cost(schedule, e, 32, seconds, passes=100, first_epoch_s=40.0) for e in range(5)]
    assert costs == pytest.approx([1, 1, 1.5, 1.5, 2.25])  # 40 s + 100 x 0.2 s = 60 s; + 100 x 0.5 s = 90 s
    assert relative_epoch_cost(schedule, 4, 32, {**seconds, (32, 32): -9.0}, 100, 40.0) == 0.05  # never free


def test_time_passes_leaves_the_model_and_the_random_streams_as_they_were():
    from resmlp.train.progressive import time_passes

    model = create_model("resmlp_tiny32", embed_dim=16, depth=1, img_size=8, patch_size=2, num_classes=10)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    seconds = time_passes(
        model, [(4, 4), (8, 8)], batch_size=4, device=torch.device("cpu"), precision="fp32", mode="crop", repeats=2
    )
    assert set(seconds) == {(4, 4), (8, 8)} and min(seconds.values()) > 0
    assert torch.equal(torch.get_rng_state(), rng)  # the run's augmentation and dropout draws are not shifted
    assert model.stem.img_size in ((8, 8), 8) and all(p.grad is None for p in model.parameters())
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_a_progressive_run_fitted_to_its_budget_switches_at_the_fitted_epochs(tmp_path, monkeypatch):
    """budget.fit_to_time_limit with progressive.sizes: the plan is priced per epoch by its size, and the
    shortened run switches sizes at the same fractions of its length."""
    priced = {}

    def fake_fit(planned, elapsed_s, budget_s, epoch_cost=None, **kw):
        priced.setdefault("costs", [epoch_cost(planned, e) for e in range(planned)])
        return 2

    timed = {(4, 4): 0.1, (6, 6): 0.2, (8, 8): 0.4}
    monkeypatch.setattr(budget, "time_passes", lambda model, sizes, **kw: {s: timed[s] for s in sizes})
    monkeypatch.setattr(budget, "fit_epochs", fake_fit)
    cfg = load_config(
        "digits",
        TINY
        + [
            "optim.epochs=4",
            "progressive.sizes=[[0, 4], [2, 6], [3, 8]]",
            "budget.time_limit_min=60",
            "budget.fit_to_time_limit=true",
        ],
    )
    train(cfg, out=tmp_path / "r")
    costs = priced["costs"]
    assert costs[:2] == [1, 1] and costs[2] > 1  # each later epoch: the first plus its extra pass time
    assert (costs[3] - 1) / (costs[2] - 1) == pytest.approx((0.4 - 0.1) / (0.2 - 0.1))
    rows = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert [r["img_size"] for r in rows] == [4, 6]  # the 4-epoch schedule squeezed into 2 epochs: 4 px, 6 px
    assert read_checkpoint(tmp_path / "r" / "checkpoints" / "last.pt")["planned_epochs"] == 2


def test_crop_mode_trains_on_full_scale_windows_and_carries_a_by_offset(tmp_path, monkeypatch):
    from resmlp.train import parts

    with pytest.raises(ConfigError, match="progressive.mode"):
        load_config("digits", ["progressive.mode=zoom"])
    with pytest.raises(ConfigError, match=r"progressive.sizes\[0\]: progressive.mode=crop .* 10x10 is larger"):
        train(
            load_config("digits", TINY + ["progressive.mode=crop", "progressive.sizes=[[0, 10]]"]),
            out=tmp_path / "bad",
        )
    methods = []
    real = parts.resample_optimizer_state
    monkeypatch.setattr(
        parts, "resample_optimizer_state", lambda *a, method: methods.append(method) or real(*a, method=method)
    )
    cfg = load_config(
        "digits", TINY + ["optim.epochs=2", "progressive.mode=crop", "progressive.sizes=[[0, 4], [1, 8]]"]
    )
    train(cfg, out=tmp_path / "crop")
    rows = [json.loads(x) for x in (tmp_path / "crop" / "metrics.jsonl").read_text().splitlines()]
    assert [r["img_size"] for r in rows] == [4, 8]
    assert methods == ["offset", "offset"]  # 8 -> 4 px before epoch 0, 4 -> 8 at epoch 1: A keeps its reach in patches
    assert rows[-1]["val_top1"] > 10  # 10 classes: chance is 10%


def test_a_checkpoint_written_at_a_crop_window_prepares_images_as_its_validation_did(tmp_path):
    """A run that ends at a crop-mode window (24 px of 32, as every 15-epoch Table 3 run) is validated on central
    windows at full scale; its checkpoint's preprocessing must say the same, not shrink the whole image."""
    cfg = load_config("digits", TINY + ["optim.epochs=1", "progressive.mode=crop", "progressive.sizes=[[0, 4]]"])
    train(cfg, out=tmp_path / "r")
    spec = read_checkpoint(tmp_path / "r" / "checkpoints" / "last.pt")["preprocess"]
    assert spec["img_size"] == 4 and spec["crop_pct"] == pytest.approx(0.5)
    base = build_eval_transform(8, mean=spec["mean"], std=spec["std"], crop_pct=1.0)
    validation = with_output_size(base, 4, mode="crop", train=False)
    saved = build_eval_transform(4, mean=spec["mean"], std=spec["std"], crop_pct=spec["crop_pct"])
    for size in [(8, 8), (16, 16), (20, 12)]:
        image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (*size, 3), dtype=np.uint8))
        assert torch.allclose(saved(image), validation(image)), size


@pytest.mark.parametrize(
    "crop_pct, old, new, expected",
    [(1.0, (32, 32), (24, 24), 0.75), (0.75, (24, 24), (32, 32), 1.0), (0.875, (224, 224), (160, 160), 0.625)],
)
def test_window_crop_pct_keeps_the_resize_and_centres_the_new_window(crop_pct, old, new, expected):
    pct = window_crop_pct(crop_pct, old, new)
    assert pct == pytest.approx(expected)
    assert math.floor(new[0] / pct) == math.floor(old[0] / crop_pct)  # the same resize, no pixel lost to round-off
    assert window_crop_pct(1.0, (32, 32), (24, 16)) is None  # not one scale on both axes
