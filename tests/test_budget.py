"""Fitting a run to its time budget (train/budget.py): the plan after the first epoch, the re-check after
every later one, the time kept for the final TTA evaluation."""
import json

import pytest

from resmlp.checkpoint import read_checkpoint
from resmlp.config import RunConfig, load_config
from resmlp.train import budget
from resmlp.train import run as run_module
from resmlp.train.budget import BudgetFit, final_tta_cost, fit_epochs
from resmlp.train.run import train

TINY = ["model.embed_dim=16", "model.depth=1", "data.batch_size=64", "data.workers=0", "optim.warmup_epochs=1",
        "run.progress=false", "run.tensorboard=false"]


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
    fit = BudgetFit(budget_s=1000.0, epoch_cost=cost)  # 2 % (20 s) of it kept free for timing noise
    assert fit.replan(10, 0, 60.0, reserve_s=0.0) == 10  # 60 x (5 + 10) = 900 <= 980
    assert fit.done_cost == 1.0
    # Epoch 2 took 150 - 60 s (its own pace: 85 s training and evaluation), so the mean unit is 75 s and the
    # epoch's pace 85 s: the slower one counts. 7 epochs need 150 + 85 x (1 + 4 x 2) = 915 s, and 0.35 of an
    # eighth (2 units) fits in the rest: 974.5 <= 980 < 983 (0.4).
    assert BudgetFit(1000.0, cost, done_cost=1.0).replan(10, 1, 150.0, reserve_s=0.0) == 8.5  # the mean: 75 s
    assert fit.replan(10, 1, 150.0, reserve_s=0.0, epoch_s=85.0) == 7.35
    assert fit.done_cost == 2.0
    assert fit.replan(7.35, 7, 900.0, reserve_s=0.0) == 7.35 and fit.done_cost == 2.0  # the last epoch: nothing left
    assert BudgetFit(1000.0, cost).replan(10, 0, 60.0, reserve_s=200.0) == 8.5  # 60 x (4 + 8 + 1) = 780 <= 780
    assert fit.size_scale((32, 32), (24, 24)) == 1.0  # nothing timed
    timed = BudgetFit(1000.0, cost, {(24, 24): 0.4, (32, 32): 0.7})
    assert timed.size_scale((32, 32), (24, 24)) == pytest.approx(1.75)


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
    monkeypatch.setattr(budget, "fit_epochs", lambda planned, elapsed_s, budget_s, epoch_cost=None, **kw:
                        budgets.append(budget_s) or real(planned, elapsed_s, budget_s, epoch_cost, **kw))
    monkeypatch.setattr(run_module, "final_tta_cost", lambda cfg, row, scale=1.0: 600.0 if cfg.final_tta == "flip"
                        else 0)
    cfg = load_config("digits", TINY + ["optim.epochs=3", "run.time_limit_min=60", "run.fit_to_time_limit=true",
                                        "run.final_tta=flip"])
    train(cfg, out=tmp_path / "r")
    assert budgets == [3600.0 * 0.98 - 600.0] * 2  # checked after each epoch but the last, 2 % kept for noise


class FakeClock:
    """run.py's clock, advanced by a given number of seconds per epoch trained."""

    def __init__(self, epoch_seconds: list[float]) -> None:
        self.now, self.epoch_seconds = 0.0, list(epoch_seconds)

    def perf_counter(self) -> float:
        return self.now

    def strftime(self, fmt: str) -> str:
        return "t"


def test_a_run_that_slows_down_after_the_first_epoch_shortens_its_plan(tmp_path, monkeypatch, capsys):
    """The first epoch takes 100 s of a 1200 s budget (10 epochs fit); every later one 300 s. Re-checked after
    epoch 2, at the latest epoch's pace, the plan shrinks to 4.55 epochs (the last one ends after 55 % of its
    steps) and holds, and the run ends inside its budget with its lr annealed, instead of stopping at the time
    limit in the middle of its schedule."""
    clock = FakeClock([100.0] + [300.0] * 9)
    real_epoch = run_module.train_epoch

    def timed_epoch(*args, **kwargs):
        row = real_epoch(*args, **kwargs)
        seconds = clock.epoch_seconds.pop(0) * row.get("epoch_fraction", 1.0)  # a partial epoch: its part
        clock.now += seconds
        return {**row, "epoch_time_s": seconds}  # the epoch's own pace, as the fit reads it

    monkeypatch.setattr(run_module, "time", clock)
    monkeypatch.setattr(run_module, "train_epoch", timed_epoch)
    cfg = load_config("digits", TINY + ["optim.epochs=10", "run.time_limit_min=20", "run.fit_to_time_limit=true",
                                        "run.final_tta=flip"])
    summary = train(cfg, out=tmp_path / "r")
    rows = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert [r["wall_time_s"] for r in rows[:4]] == [100.0, 400.0, 700.0, 1000.0]
    assert [r.get("epoch_fraction") for r in rows[:4]] == [None] * 4 and rows[4]["epoch_fraction"] == \
        pytest.approx(0.55, abs=0.03)  # steps of an epoch: 0.55 of them, rounded
    assert rows[4]["wall_time_s"] == pytest.approx(1000.0 + 300.0 * rows[4]["epoch_fraction"])
    assert rows[4]["wall_time_s"] <= 1200.0
    assert [r.get("tta") for r in rows] == [None, None, None, None, "flip"]  # the last epoch, known only after it ran
    ckpt = read_checkpoint(tmp_path / "r" / "checkpoints" / "last.pt")
    assert ckpt["planned_epochs"] == summary["planned_epochs"] == summary["epochs"] == 4.55
    assert ckpt["schedule"]["total_steps"] == ckpt["schedule"]["last_step"]  # the lr schedule ran to its end
    out = capsys.readouterr().out
    assert "the plan of 10 epochs fits" in out
    assert "2 epochs took 400 s, slower than planned, so the schedule now ends after 4.55 epochs instead of 10" in out
    assert out.count("slower than planned") == 1  # priced at the latest pace, the plan held
    assert "time limit of" not in out  # never stopped by the limit itself
