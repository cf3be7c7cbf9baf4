"""Fitting a run to its time budget (train/budget.py): the plan after the first epoch, the re-check after
every later one, the time kept for the final TTA evaluation."""

import json

import pytest

from resmlp.checkpoint import read_checkpoint
from resmlp.config import RunConfig, load_config
from resmlp.train import budget, loop
from resmlp.train.budget import BudgetFit, final_tta_cost, fit_epochs
from resmlp.train.run import train

TINY = [
    "model.embed_dim=16",
    "model.depth=1",
    "data.batch_size=64",
    "data.workers=0",
    "optim.warmup_epochs=1",
    "run.progress=false",
    "run.tensorboard=false",
]


def test_fit_epochs_keeps_the_longest_plan_that_fits():
    assert fit_epochs(25, 100.0, 1000.0) == 10  # every epoch like the first
    assert fit_epochs(5, 100.0, 1000.0) == 5  # never longer than planned
    assert fit_epochs(25, 5000.0, 1000.0) == 1  # at least the epoch already done
    doubling = lambda planned, epoch: 2.0 if epoch else 1.0  # noqa: E731  every epoch after the first costs 2x
    # 100 + 4 x 200 = 900 s for 5 epochs; the 100 s left train half of a sixth (a plan ends in part of an epoch)
    assert fit_epochs(25, 100.0, 1000.0, doubling) == 5.5
    # The partial epoch evaluates whole (40 s for a whole epoch's evaluation, included in its 200 s):
    # 900 + 0.35 x 200 + 0.65 x 40 = 996 <= 1000 < 900 + 0.4 x 200 + 0.6 x 40 = 1004
    assert fit_epochs(25, 100.0, 1000.0, doubling, eval_s=40.0) == 5.35
    seen = []
    fit_epochs(2, 1.0, 0.0, lambda planned, epoch: seen.append((planned, epoch)) or 1.0)
    assert seen[:3] == [(2, 1), (1.95, 1), (1.9, 1)]  # each candidate plan priced with its own schedule
    assert seen[-1] == (1.05, 1) and len(seen) == 20  # in twentieths of an epoch, down to the epoch done


def test_fit_epochs_later_prices_the_rest_at_the_mean_of_the_epochs_done():
    assert fit_epochs(10, 300.0, 1000.0, done=2) == 6.65  # 150 s an epoch: 300 + 4.65 x 150 = 997.5 <= 1000
    assert fit_epochs(10, 300.0, 1000.0, done=2, done_cost=3.0) == 9  # those 2 epochs cost 3 units: 100 s a unit
    assert fit_epochs(10, 1200.0, 1000.0, done=4) == 4  # already over: end with the epochs done
    seen = []
    fit_epochs(4, 1.0, 0.0, lambda planned, epoch: seen.append((planned, epoch)) or 1.0, done=2)
    assert seen[:3] == [(4, 2), (4, 3), (3.95, 2)]  # only the epochs still to come are priced
    assert seen[-1] == (2.05, 2)


def test_replan_adds_each_epoch_at_its_own_cost_and_keeps_the_reserve_free():
    cost = lambda planned, epoch: 1.0 if epoch < planned // 2 else 2.0  # noqa: E731  second half costs 2x
    fit = BudgetFit(budget_s=1000.0, longest=10, epoch_cost=cost)  # 2 % (20 s) of it kept free for timing noise
    assert fit.replan(10, 0, 60.0, reserve_s=0.0) == 10  # 60 x (5 + 10) = 900 <= 980
    assert fit.done_cost == 1.0
    # Epoch 2 took 150 - 60 s (its own pace: 85 s training and evaluation), so the mean unit is 75 s. The first
    # size is priced at its epochs' pace (85 s: only epoch 2's was timed), the second, not trained yet, at the
    # mean: 8 epochs need 150 + 2 x 85 + 4 x 2 x 75 = 920 s, and 0.4 of a ninth (2 units, 150 s) fits in the
    # rest: 920 + 0.4 x 150 = 980 <= 980 < 987.5 (0.45).
    assert BudgetFit(1000.0, 10, cost, done_cost=1.0).replan(10, 1, 150.0, reserve_s=0.0) == 8.5  # the mean: 75 s
    assert fit.replan(10, 1, 150.0, reserve_s=0.0, epoch_s=85.0) == 8.4
    assert fit.done_cost == 2.0
    assert fit.replan(7.35, 7, 900.0, reserve_s=0.0) == 7.35 and fit.done_cost == 2.0  # the last epoch: nothing left
    assert BudgetFit(1000.0, 10, cost).replan(10, 0, 60.0, reserve_s=200.0) == 8.5  # 60 x (4 + 8 + 1) = 780 <= 780
    assert fit.size_scale((32, 32), (24, 24)) == 1.0  # nothing timed
    timed = BudgetFit(1000.0, 10, cost, {(24, 24): 0.4, (32, 32): 0.7})
    assert timed.size_scale((32, 32), (24, 24)) == pytest.approx(1.75)


def test_fit_epochs_skips_plans_not_allowed_and_may_price_each_cost_at_its_own_unit():
    assert fit_epochs(25, 100.0, 1000.0, allowed=lambda n: n <= 6.5) == 6.5
    doubling = lambda planned, epoch: 2.0 if epoch else 1.0  # noqa: E731
    # A 2-unit epoch priced at 50 s a unit costs what the first did: 10 epochs fit, not 5.5.
    assert fit_epochs(25, 100.0, 1000.0, doubling, unit_s=lambda cost: 100.0 if cost == 1.0 else 50.0) == 10


def test_replan_lengthens_a_plan_whose_epochs_run_faster_up_to_the_configured_one():
    fit = BudgetFit(1000.0, longest=20)  # 980 s after the 2 % noise margin
    assert fit.replan(20, 0, 200.0, reserve_s=0.0, epoch_s=200.0) == 4.9  # 200 + 3.9 x 200 = 980
    # The second epoch took 100 s: 150 s an epoch (the mean; the latest was faster), 300 + 4.5 x 150 = 975.
    assert fit.replan(4.9, 1, 300.0, reserve_s=0.0, epoch_s=100.0) == 6.5
    assert BudgetFit(1000.0, longest=5).replan(4.9, 1, 300.0, reserve_s=0.0, epoch_s=100.0) == 5  # never past it
    held = BudgetFit(1000.0, longest=20, timed=[(1.0, 200.0)], done_cost=1.0)
    assert held.replan(4.9, 1, 300.0, reserve_s=0.0, epoch_s=100.0, may_lengthen=lambda n: False) == 4.9


def test_replan_prices_a_size_at_the_pace_of_its_own_epochs_once_trained():
    """The timed passes priced the 2-unit epochs at 100 s; the first one took 60 s. The rest of them is priced
    at that, not at the mean unit of all epochs done (160 s for 4 units: 40 s a unit, 80 s an epoch)."""
    cost = lambda planned, epoch: 1.0 if epoch < 2 else 2.0  # noqa: E731
    fit = BudgetFit(500.0, longest=10, epoch_cost=cost)  # 490 s after the noise margin
    assert fit.replan(10, 0, 50.0, reserve_s=0.0, epoch_s=50.0) == 5.9  # 50 + 50 + 3.9 x 100 = 490
    assert fit.replan(5.9, 1, 100.0, reserve_s=0.0, epoch_s=50.0) == 5.9
    assert fit.replan(5.9, 2, 160.0, reserve_s=0.0, epoch_s=60.0) == 8.5  # 160 + 5.5 x 60 = 490 (the mean: 7.1)
    assert fit.paces == {1.0: [50.0, 50.0], 2.0: [30.0]}


def test_replan_ignores_one_slow_epoch_and_follows_a_host_that_stays_slow():
    """Four 40 s epochs, then one of 110 s: the median of the last three paces relative to their size's mean
    (40/54, 40/54, 110/54) is below 1, so the rest is priced at the mean, 54 s, not at the one slow epoch's
    110 s (which would cut the plan to 11.45 epochs). A second 110 s epoch makes the median 1.74: the host is
    slower now, and the rest is priced at 110 s."""
    fit = BudgetFit(1000.0, longest=20)  # 980 s after the noise margin
    for epoch in range(4):
        assert fit.replan(20, epoch, 40.0 * (epoch + 1), reserve_s=0.0, epoch_s=40.0) == 20  # 24.5 would fit
    assert fit.replan(20, 4, 270.0, reserve_s=0.0, epoch_s=110.0) == 18.1  # 270 + 13.1 x 54 = 977.4
    assert fit.slowness() == pytest.approx(40.0 / 54.0)
    assert fit.replan(18.1, 5, 380.0, reserve_s=0.0, epoch_s=110.0) == 11.45  # 380 + 5.45 x 110 = 979.5
    assert fit.slowness() == pytest.approx(110.0 / (380.0 / 6))


def test_slowness_compares_each_epoch_with_its_own_size():
    """After a switch to a size whose epochs run faster per unit than the first size's, the host is no slower:
    each pace is compared with the mean at its own cost, so the faster size is not priced at the slower one's."""
    fit = BudgetFit(1000.0, longest=20, timed=[(1.0, 50.0), (1.0, 50.0), (2.0, 40.0)])
    assert fit.slowness() == 1.0
    assert BudgetFit(1000.0, longest=20).slowness() == 1.0  # nothing timed yet
    two = BudgetFit(1000.0, longest=20, timed=[(1.0, 50.0), (1.0, 150.0)])
    assert two.slowness() == 1.5  # fewer than three epochs: the latest one's


def test_final_tta_cost_scales_the_evaluation_by_views_and_size():
    row = {"eval_time_s": 10.0}
    assert final_tta_cost(RunConfig(final_tta="flip+shift1"), row) == 60.0  # 6 views of a 1-view evaluation
    assert final_tta_cost(RunConfig(final_tta="flip+shift1"), row, size_scale=1.5) == 90.0  # at a larger last size
    assert final_tta_cost(RunConfig(tta="flip", final_tta="flip+shift1"), row) == 30.0
    assert final_tta_cost(RunConfig(tta="flip", final_tta="flip"), row) == 0.0  # nothing more to evaluate
    assert final_tta_cost(RunConfig(), row) == final_tta_cost(RunConfig(final_tta="flip"), {}) == 0.0


def test_the_budget_fit_keeps_time_for_the_final_tta_evaluation(tmp_path, monkeypatch):
    budgets = []
    real = budget.fit_epochs
    monkeypatch.setattr(
        budget,
        "fit_epochs",
        lambda planned, elapsed_s, budget_s, epoch_cost=None, **kw: (
            budgets.append(budget_s) or real(planned, elapsed_s, budget_s, epoch_cost, **kw)
        ),
    )
    monkeypatch.setattr(budget, "final_tta_cost", lambda cfg, row, scale=1.0: 600.0 if cfg.final_tta == "flip" else 0)
    cfg = load_config(
        "digits",
        TINY + ["optim.epochs=3", "budget.time_limit_min=60", "budget.fit_to_time_limit=true", "run.final_tta=flip"],
    )
    train(cfg, out=tmp_path / "r")
    assert budgets == [3600.0 * 0.98 - 600.0] * 2  # checked after each epoch but the last, 2 % kept for noise


class FakeClock:
    """loop.py's clock, advanced by a given number of seconds per epoch trained."""

    def __init__(self, epoch_seconds: list[float]) -> None:
        self.now, self.epoch_seconds = 0.0, list(epoch_seconds)

    def perf_counter(self) -> float:
        return self.now

    def strftime(self, fmt: str) -> str:
        return "t"


def test_a_run_that_slows_down_after_the_first_epoch_shortens_its_plan(tmp_path, monkeypatch, capsys):
    """The first epoch takes 100 s of a 1200 s budget (10 epochs fit); every later one 300 s. Re-checked after
    epoch 2, at the latest epoch's pace (the slowness of fewer than three epochs), the plan shrinks to 4.55
    epochs (the last one ends after 55 % of its steps) and holds, and the run ends inside its budget with its lr
    annealed, instead of stopping at the time limit in the middle of its schedule."""
    clock = FakeClock([100.0] + [300.0] * 9)
    real_epoch = loop.train_epoch

    def timed_epoch(*args, **kwargs):
        row = real_epoch(*args, **kwargs)
        seconds = clock.epoch_seconds.pop(0) * row.get("epoch_fraction", 1.0)  # a partial epoch: its part
        clock.now += seconds
        return {**row, "epoch_time_s": seconds}  # the epoch's own pace, as the fit reads it

    monkeypatch.setattr(loop, "time", clock)
    monkeypatch.setattr(loop, "train_epoch", timed_epoch)
    cfg = load_config(
        "digits",
        TINY + ["optim.epochs=10", "budget.time_limit_min=20", "budget.fit_to_time_limit=true", "run.final_tta=flip"],
    )
    summary = train(cfg, out=tmp_path / "r")
    rows = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert [r["wall_time_s"] for r in rows[:4]] == [100.0, 400.0, 700.0, 1000.0]
    assert [r.get("epoch_fraction") for r in rows[:4]] == [None] * 4 and rows[4]["epoch_fraction"] == pytest.approx(
        0.55, abs=0.03
    )  # steps of an epoch: 0.55 of them, rounded
    assert rows[4]["wall_time_s"] == pytest.approx(1000.0 + 300.0 * rows[4]["epoch_fraction"])
    assert rows[4]["wall_time_s"] <= 1200.0
    assert [r.get("tta") for r in rows] == [None, None, None, None, "flip"]  # the last epoch, known only after it ran
    ckpt = read_checkpoint(tmp_path / "r" / "checkpoints" / "last.pt")
    assert ckpt["planned_epochs"] == summary["planned_epochs"] == summary["epochs"] == 4.55
    assert ckpt["schedule"]["total_steps"] == ckpt["schedule"]["last_step"]  # the lr schedule ran to its end
    out = capsys.readouterr().out
    assert "the plan of 10 epochs fits" in out
    assert "2 epochs took 400 s, slower than planned, so the schedule now ends after 4.55 epochs instead of 10" in out
    assert out.count("slower than planned") == 1  # priced at the host's present pace, the plan held
    assert "time limit of" not in out  # never stopped by the limit itself


def _timed_epochs(monkeypatch, seconds_of) -> FakeClock:
    """loop.py's clock advanced by `seconds_of(run)` per epoch trained (its part, for a partial epoch)."""
    clock = FakeClock([])
    real_epoch = loop.train_epoch

    def timed_epoch(*args, **kwargs):
        seconds = seconds_of(args[0])
        row = real_epoch(*args, **kwargs)
        seconds *= row.get("epoch_fraction", 1.0)
        clock.now += seconds
        return {**row, "epoch_time_s": seconds}

    monkeypatch.setattr(loop, "time", clock)
    monkeypatch.setattr(loop, "train_epoch", timed_epoch)
    return clock


def test_a_run_whose_epochs_speed_up_lengthens_its_plan(tmp_path, monkeypatch, capsys):
    """The first epoch takes 300 s of a 1200 s budget (3.9 epochs fit), every later one 100 s: re-checked
    after each, the plan grows as the mean pace falls, and the run still ends inside its budget with its lr
    annealed (a plan that only shrank would have ended after 3.9 epochs, at about 600 s)."""
    paces = iter([300.0] + [100.0] * 20)
    _timed_epochs(monkeypatch, lambda run: next(paces))
    cfg = load_config(
        "digits",
        TINY + ["optim.epochs=10", "budget.time_limit_min=20", "budget.fit_to_time_limit=true", "run.final_tta=flip"],
    )
    summary = train(cfg, out=tmp_path / "r")
    rows = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert 9 < summary["planned_epochs"] == summary["epochs"] < 10
    assert len(rows) == 10 and 1100.0 < rows[-1]["wall_time_s"] <= 1200.0
    ckpt = read_checkpoint(tmp_path / "r" / "checkpoints" / "last.pt")
    assert ckpt["schedule"]["total_steps"] == ckpt["schedule"]["last_step"]  # the lr schedule ran to its end
    out = capsys.readouterr().out
    assert "the schedule now ends after 3.9 epochs instead of 10" in out
    assert "2 epochs took 400 s, faster than planned, so the schedule now ends after 5.85 epochs instead of 3.9" in out
    assert "time limit of" not in out


def test_a_progressive_run_lengthened_after_its_switch_never_goes_back_to_the_smaller_size(
    tmp_path, monkeypatch, capsys
):
    """[[0, 4], [10, 8]] of 20 epochs, fitted to about 3.9 after a slow 4 px first epoch, switches at epoch 2.
    The 8 px epochs then take 30 s: a plan long enough for the budget would move the switch past epochs
    already trained at 8 px, so each re-check lengthens the plan only as far as the next epoch stays at 8 px."""
    monkeypatch.setattr(budget, "time_passes", lambda model, sizes, **kw: {s: {4: 0.1, 8: 0.4}[s[0]] for s in sizes})
    _timed_epochs(monkeypatch, lambda run: 300.0 if run.model.stem.img_size in (4, (4, 4)) else 30.0)
    cfg = load_config(
        "digits",
        TINY
        + [
            "optim.epochs=20",
            "progressive.sizes=[[0, 4], [10, 8]]",
            "budget.time_limit_min=20",
            "budget.fit_to_time_limit=true",
        ],
    )
    summary = train(cfg, out=tmp_path / "r")
    sizes = [json.loads(x)["img_size"] for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert sizes[:3] == [4, 4, 8] and set(sizes[2:]) == {8}  # never back to 4 px
    assert summary["planned_epochs"] > 6.9 and summary["wall_time_s"] <= 1200.0
    out = capsys.readouterr().out
    assert "3 epochs took 630 s, faster than planned, so the schedule now ends after 6.95 epochs" in out


def test_a_model_without_a_patch_grid_fits_its_plan_too(tmp_path, monkeypatch):
    """cifar10_cpu's conv-net teacher is fitted to its 15 minutes like the student: a model with no patch stem
    (nothing to resize) is re-planned after every epoch as well."""
    paces = iter([100.0] + [300.0] * 20)
    _timed_epochs(monkeypatch, lambda run: next(paces))
    cfg = load_config(
        "digits",
        [
            "model.name=convnet_cifar",
            "model.img_size=16",
            "model.drop_path_rate=0",
            *TINY[2:],
            "optim.epochs=10",
            "budget.time_limit_min=20",
            "budget.fit_to_time_limit=true",
        ],
    )
    summary = train(cfg, out=tmp_path / "r")
    assert summary["model"] == "convnet_cifar"
    assert summary["planned_epochs"] == summary["epochs"] < 10  # shrunk to what the slower epochs leave
    assert summary["wall_time_s"] <= 1200.0


def test_a_resumed_run_refits_its_plan_from_its_earlier_epochs(tmp_path, monkeypatch, capsys):
    """Two epochs of 100 s in a 1200 s budget (the plan of 10 fits), then the process dies in the third. The
    resumed session runs at 300 s an epoch: it re-fits its plan from the earlier epochs' record (the paces of
    metrics.jsonl) and ends inside the budget with its lr annealed, instead of keeping the old plan and
    stopping at the time limit in the middle of its schedule."""
    paces = iter([100.0, 100.0])

    def pace(run):
        try:
            return next(paces)
        except StopIteration:
            raise RuntimeError("the process dies") from None

    clock = _timed_epochs(monkeypatch, pace)
    cfg = load_config(
        "digits",
        TINY + ["optim.epochs=10", "budget.time_limit_min=20", "budget.fit_to_time_limit=true", "run.final_tta=flip"],
    )
    with pytest.raises(RuntimeError, match="the process dies"):
        train(cfg, out=tmp_path / "r")
    assert read_checkpoint(tmp_path / "r" / "checkpoints" / "last.pt")["planned_epochs"] == 10
    paces = iter([300.0] * 20)
    clock.now += 3600.0  # the time between the sessions is not the run's
    capsys.readouterr()
    summary = train(cfg, resume=tmp_path / "r")
    rows = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert [r["wall_time_s"] for r in rows[:3]] == [100.0, 200.0, 500.0]
    assert 4 < summary["planned_epochs"] == summary["epochs"] < 10
    assert rows[-1]["wall_time_s"] <= 1200.0 and rows[-1]["tta"] == "flip"
    ckpt = read_checkpoint(tmp_path / "r" / "checkpoints" / "last.pt")
    assert ckpt["schedule"]["total_steps"] == ckpt["schedule"]["last_step"]  # the lr schedule ran to its end
    out = capsys.readouterr().out
    assert "slower than planned, so the schedule now ends after" in out
    assert "time limit of" not in out


def test_take_up_prices_earlier_epochs_and_skips_the_pace_of_one_resumed_part_way():
    fit = BudgetFit(1200.0, 10)
    fit.take_up(
        [
            {"epoch": 1, "epoch_time_s": 90.0, "eval_time_s": 10.0},
            {"epoch": 2, "epoch_time_s": 40.0, "eval_time_s": 10.0, "epoch_time_from_step": 7},
            {"epoch": 3},  # a row lost with a damaged metrics file: its cost only
        ],
        planned=10,
    )
    assert fit.done_cost == 3.0 and fit.timed == [(1.0, 100.0)]
