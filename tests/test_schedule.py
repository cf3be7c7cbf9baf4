"""Warmup + cosine (or linear) lr schedule and the lr scaling rule."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from resmlp.optim import CosineWarmupSchedule, cosine_warmup_lr, scale_lr

BASE, WARMUP_LR, MIN_LR = 5e-3, 1e-6, 1e-5
TOTAL, WARMUP = 100, 10


def _optimizer(lrs: tuple[float, ...] = (BASE,)) -> torch.optim.Optimizer:
    groups = [{"params": [nn.Parameter(torch.zeros(1))], "lr": lr} for lr in lrs]
    return torch.optim.SGD(groups, lr=lrs[0])


def _schedule(opt: torch.optim.Optimizer, **kwargs) -> CosineWarmupSchedule:
    return CosineWarmupSchedule(
        opt, total_steps=TOTAL, warmup_steps=WARMUP, warmup_lr=WARMUP_LR, min_lr=MIN_LR, **kwargs
    )


def _lr_sequence(opt: torch.optim.Optimizer, sched: CosineWarmupSchedule, n: int) -> list[float]:
    lrs = []
    for _ in range(n):
        lrs.append(opt.param_groups[0]["lr"])
        sched.step()
    return lrs


def test_key_points() -> None:
    kw = dict(base_lr=BASE, total_steps=TOTAL, warmup_steps=WARMUP, warmup_lr=WARMUP_LR, min_lr=MIN_LR)
    assert cosine_warmup_lr(0, **kw) == WARMUP_LR
    assert cosine_warmup_lr(WARMUP // 2, **kw) == pytest.approx((WARMUP_LR + BASE) / 2)
    assert cosine_warmup_lr(WARMUP, **kw) == pytest.approx(BASE)
    assert cosine_warmup_lr((WARMUP + TOTAL) // 2, **kw) == pytest.approx((BASE + MIN_LR) / 2)
    assert cosine_warmup_lr(TOTAL - 1, **kw) == pytest.approx(MIN_LR, abs=1e-3 * BASE)
    assert cosine_warmup_lr(TOTAL, **kw) == MIN_LR
    assert cosine_warmup_lr(TOTAL + 7, **kw) == MIN_LR


def test_schedule_sets_lr_on_construction_and_each_step() -> None:
    opt = _optimizer()
    sched = _schedule(opt)
    assert opt.param_groups[0]["lr"] == WARMUP_LR
    lrs = _lr_sequence(opt, sched, TOTAL)
    assert lrs == [sched.lr_at(t) for t in range(TOTAL)]
    assert lrs[WARMUP] == pytest.approx(BASE)
    assert all(a < b for a, b in zip(lrs[:WARMUP], lrs[1 : WARMUP + 1]))  # warmup increases
    assert all(a > b for a, b in zip(lrs[WARMUP:], lrs[WARMUP + 1 :]))  # cosine decreases
    assert lrs[-1] == pytest.approx(MIN_LR, abs=1e-3 * BASE)


def test_per_group_base_lrs_from_optimizer() -> None:
    opt = _optimizer(lrs=(BASE, 2 * BASE))
    sched = _schedule(opt)
    for _ in range(WARMUP):
        sched.step()
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([BASE, 2 * BASE])
    assert sched.get_last_lr() == [g["lr"] for g in opt.param_groups]


def test_explicit_base_lr_overrides_groups() -> None:
    opt = _optimizer(lrs=(1.0, 2.0))
    sched = _schedule(opt, base_lr=BASE)
    assert sched.lr_at(WARMUP, group=1) == pytest.approx(BASE)


def test_resume_gives_identical_sequence() -> None:
    opt = _optimizer()
    sched = _schedule(opt)
    full = _lr_sequence(opt, sched, TOTAL)

    opt_a = _optimizer()
    sched_a = _schedule(opt_a)
    first = _lr_sequence(opt_a, sched_a, 37)
    state = sched_a.state_dict()

    # Resume into an optimizer whose lr was left at some other value, as after a restart.
    opt_b = _optimizer(lrs=(123.0,))
    sched_b = _schedule(opt_b)
    sched_b.load_state_dict(state)
    second = _lr_sequence(opt_b, sched_b, TOTAL - 37)
    assert first + second == full


def test_end_at_ends_the_cosine_earlier_and_caps_the_warmup() -> None:
    opt = _optimizer()
    sched = _schedule(opt)
    _lr_sequence(opt, sched, 5)
    sched.end_at(20)  # warmup 10 > 20 // 4: capped to 5, so step 5 is the peak of the new schedule
    assert (sched.total_steps, sched.warmup_steps) == (20, 5)
    assert opt.param_groups[0]["lr"] == pytest.approx(BASE)
    lrs = _lr_sequence(opt, sched, 16)
    assert lrs == sorted(lrs, reverse=True) and lrs[-1] == MIN_LR
    with pytest.raises(ValueError, match=r"end_at: total_steps must be > 0, got 0"):
        sched.end_at(0)


def test_end_at_a_later_step_stretches_the_decay_from_where_it_is() -> None:
    opt = _optimizer()
    sched = _schedule(opt, decay="linear")
    _lr_sequence(opt, sched, 40)
    before = opt.param_groups[0]["lr"]
    sched.end_at(2 * TOTAL)  # a time budget that fits more: the lr at step 40 rises to the longer line's
    assert sched.warmup_steps == WARMUP  # the warmup it had (already passed)
    after = opt.param_groups[0]["lr"]
    assert after == pytest.approx(MIN_LR + (BASE - MIN_LR) * (2 * TOTAL - 40) / (2 * TOTAL - WARMUP)) and after > before
    lrs = _lr_sequence(opt, sched, 2 * TOTAL - 40 + 1)  # steps 40 .. 2 x TOTAL
    assert lrs == sorted(lrs, reverse=True) and lrs[-2] > lrs[-1] == MIN_LR


def test_warmup_longer_than_run_is_pure_warmup() -> None:
    kw = dict(base_lr=1.0, total_steps=5, warmup_steps=10, warmup_lr=0.0, min_lr=0.0)
    assert [cosine_warmup_lr(t, **kw) for t in range(5)] == [0.0, 0.1, 0.2, 0.3, 0.4]
    assert math.isfinite(cosine_warmup_lr(5, **kw))


def test_linear_decay_falls_in_equal_steps_to_min_lr() -> None:
    kw = dict(base_lr=BASE, total_steps=TOTAL, warmup_steps=WARMUP, warmup_lr=WARMUP_LR, min_lr=MIN_LR)
    linear = [cosine_warmup_lr(t, decay="linear", **kw) for t in range(TOTAL + 2)]
    assert linear[: WARMUP + 1] == [cosine_warmup_lr(t, **kw) for t in range(WARMUP + 1)]  # the same warmup
    drops = [a - b for a, b in zip(linear[WARMUP : TOTAL + 1], linear[WARMUP + 1 : TOTAL + 1])]
    assert drops == pytest.approx([(BASE - MIN_LR) / (TOTAL - WARMUP)] * (TOTAL - WARMUP))  # a straight line
    assert linear[TOTAL] == linear[TOTAL + 1] == MIN_LR
    quarter = WARMUP + (TOTAL - WARMUP) // 4  # above the cosine early, below it late
    assert linear[quarter] < cosine_warmup_lr(quarter, **kw)
    assert linear[TOTAL - quarter + WARMUP] > cosine_warmup_lr(TOTAL - quarter + WARMUP, **kw)


def test_the_decay_shape_survives_end_at_and_resume() -> None:
    opt = _optimizer()
    sched = _schedule(opt, decay="linear")
    _lr_sequence(opt, sched, 30)
    sched.end_at(60)
    resumed = _schedule(_optimizer())  # constructed as cosine, as a config edited after the run started would
    resumed.load_state_dict(sched.state_dict())
    assert resumed.decay == "linear"
    assert [resumed.lr_at(t) for t in range(60)] == [sched.lr_at(t) for t in range(60)]
    assert sched.lr_at(45) == pytest.approx(MIN_LR + (BASE - MIN_LR) * (60 - 45) / (60 - WARMUP))
    with pytest.raises(ValueError, match="decay must be one of"):
        _schedule(_optimizer(), decay="step")


def test_bad_lengths_are_named() -> None:
    with pytest.raises(ValueError, match="total_steps"):
        CosineWarmupSchedule(_optimizer(), total_steps=0, warmup_steps=0)
    with pytest.raises(ValueError, match="warmup_steps"):
        CosineWarmupSchedule(_optimizer(), total_steps=10, warmup_steps=-1)


def test_scale_lr() -> None:
    assert scale_lr(5e-4, 1024) == pytest.approx(1e-3)
    assert scale_lr(5e-4, 512) == 5e-4
    assert scale_lr(1e-3, 256, reference_batch=1024) == pytest.approx(2.5e-4)
    with pytest.raises(ValueError, match="global_batch"):
        scale_lr(1e-3, 0)
