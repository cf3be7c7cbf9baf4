"""Fitting a run to its time budget (`budget.time_limit_min` with `budget.fit_to_time_limit`).

After the first epoch the plan is shortened to the epochs that fit, so that the lr anneals fully before the budget
ends (a progressive run prices its later, larger epochs by timed forward/backward passes). After every later epoch
the plan is fitted again, between the epochs done and the configured `optim.epochs`: shortened if the rest would not
fit (a host that slows down after the first epoch, another job, a noisy neighbour, would otherwise overrun),
lengthened if the epochs run faster than they were priced (a 24 -> 32 px hour whose 32 px epochs beat their timed
passes ended at 54.5 minutes when plans could only shrink, docs/results.md#other). Each size's epochs are priced at
the mean of those trained at it, once one has been, times the host's present slowness: the median of the last
`RECENT_EPOCHS` epochs' paces, each relative to its size's mean (one slow epoch alone moves nothing; a host that
stays slow is followed from its second slow epoch on; before three epochs, the latest one's). The time of the final
test-time-augmented evaluation (`run.final_tta`) is kept free. A resumed run takes up its earlier sessions' epochs
from metrics.jsonl (`BudgetFit.take_up`) and goes on fitting, so that a preempted hour still anneals in its budget.
A plan is counted in twentieths of an epoch (`PLAN_QUANTUM`): its last epoch may be a part of one (the first steps
of that epoch's order, then the whole evaluation), so the time a whole last epoch would not fit in is trained too
(with whole epochs, up to 6.3 minutes of an hour went unused on the AVX2 EPYC, docs/results.md#other). Such runs
depend on the machine's speed, so they are not bit-reproducible.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import fmean, median
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import torch
from torch import nn

from ..config import RunConfig, TrainConfig
from ..models.layers import to_pair
from ..models.tta import tta_view_count
from .progressive import relative_epoch_cost, schedule_of, size_at, time_passes

EpochCost = Callable[[float, int], float]  # (plan length, epoch) -> that epoch's cost relative to the first one
UnitPrice = Union[float, Callable[[float], float]]  # seconds of a unit of cost, or: an epoch's cost -> those seconds
PLAN_QUANTUM = 20  # a fitted plan is a whole number of 1/PLAN_QUANTUM epochs
# The share of the budget a fit leaves free for timing noise: a plan that ends in part of an epoch leaves no
# slack of its own (a 15-minute run ended at 912 s of 900 without it, at 864 s with it; docs/results.md#other).
NOISE_MARGIN = 0.02
# How many of the latest epochs tell the host's present speed. With one, a single slow epoch would price the
# whole rest of the run (a noisy host's one slow epoch would shorten the plan and move the progressive switch
# earlier, for good).
RECENT_EPOCHS = 3


def plan_steps(planned: float, steps_per_epoch: int) -> int:
    """Optimizer steps of a plan of `planned` (possibly fractional) epochs."""
    return max(1, round(planned * steps_per_epoch))


def epochs_started(planned: float) -> int:
    """Epochs a plan trains in, the partial last one included."""
    return math.ceil(planned - 1e-9)


def fit_epochs(
    planned: float,
    elapsed_s: float,
    budget_s: float,
    epoch_cost: Optional[EpochCost] = None,
    *,
    done: int = 1,
    done_cost: Optional[float] = None,
    eval_s: float = 0.0,
    unit_s: Optional[UnitPrice] = None,
    allowed: Optional[Callable[[float], bool]] = None,
) -> float:
    """The longest plan of at most `planned` epochs (at least `done`, the epochs already trained), a whole
    number of 1/PLAN_QUANTUM epochs, whose estimated time fits in `budget_s` (and that `allowed` accepts, when
    given). The `done` epochs took `elapsed_s` and cost `done_cost` in units of the first epoch (`done` when
    every epoch costs the same); every later epoch of a plan of n epochs costs `epoch_cost(n, epoch)` of those
    units (1 without progressive resizing), each unit priced at `unit_s` seconds, or at `unit_s(cost)` for an
    epoch of that cost (default: the done epochs' mean, elapsed_s / done_cost). A partial last epoch costs its
    fraction of that, plus the rest of its evaluation (`eval_s` seconds for a whole one), which it runs whole."""
    if unit_s is None:
        unit_s = elapsed_s / (done if done_cost is None else done_cost)
    price = unit_s if callable(unit_s) else (lambda cost: unit_s)
    below = math.ceil(planned * PLAN_QUANTUM - 1e-6) - 1  # the largest quantum step below `planned`
    for n in [planned] + [k / PLAN_QUANTUM for k in range(below, done * PLAN_QUANTUM, -1)]:
        if allowed is not None and not allowed(n):
            continue
        seconds = 0.0
        for e in range(done, epochs_started(n)):
            part = min(1.0, n - e)
            cost = 1.0 if epoch_cost is None else epoch_cost(n, e)
            seconds += part * cost * price(cost) + (1.0 - part) * eval_s
        if elapsed_s + seconds <= budget_s:
            return n
    return done


def final_tta_runs(cfg: RunConfig) -> bool:
    """Whether the last epoch gets the extra `run.final_tta` evaluation (views other than every epoch's)."""
    return cfg.final_tta not in ("none", cfg.tta)


def final_tta_cost(cfg: RunConfig, row: dict[str, Any], size_scale: float = 1.0) -> float:
    """Seconds the final test-time-augmented evaluation (`run.final_tta`) will take: `row`'s evaluation time
    scaled by the ratio of views and by `size_scale` (the final size's pass time over `row`'s; 1 at one
    size). 0 without a final TTA evaluation or without a timed evaluation in `row`."""
    if not final_tta_runs(cfg) or "eval_time_s" not in row:
        return 0.0
    return row["eval_time_s"] * tta_view_count(cfg.final_tta) / tta_view_count(cfg.tta) * size_scale


@dataclass
class BudgetFit:
    """A time-budgeted plan during one training session, at most `longest` epochs (the configured
    `optim.epochs`). `epoch_cost` prices a progressive run's epochs relative to the first one (None: every
    epoch alike); `pass_seconds` is what it was priced from (one training forward/backward pass at each size,
    empty without progressive resizing)."""

    budget_s: float
    longest: float
    epoch_cost: Optional[EpochCost] = None
    pass_seconds: Mapping[tuple[int, int], float] = field(default_factory=dict)
    done_cost: float = 0.0  # the trained epochs' costs in units of the first epoch, summed
    timed: list[tuple[float, float]] = field(default_factory=list)  # (cost, seconds per unit) of each epoch timed

    def cost(self, planned: float, epoch: int) -> float:
        return 1.0 if self.epoch_cost is None else self.epoch_cost(planned, epoch)

    @property
    def paces(self) -> dict[float, list[float]]:
        """cost -> the paces (seconds per unit) of the epochs timed at that cost, in order."""
        paces: dict[float, list[float]] = {}
        for cost, pace in self.timed:
            paces.setdefault(cost, []).append(pace)
        return paces

    def size_scale(self, final_size: tuple[int, int], size: tuple[int, int]) -> float:
        """How much longer a pass at `final_size` takes than one at `size` (1 when not timed)."""
        if final_size not in self.pass_seconds or size not in self.pass_seconds:
            return 1.0
        return self.pass_seconds[final_size] / self.pass_seconds[size]

    def replan(
        self,
        planned: float,
        epoch: int,
        elapsed_s: float,
        reserve_s: float,
        eval_s: float = 0.0,
        epoch_s: float = 0.0,
        may_lengthen: Optional[Callable[[float], bool]] = None,
    ) -> float:
        """After epoch `epoch` (0-based) of a `planned`-epoch plan, `elapsed_s` into the run: the plan's new
        length, up to `longest` (a longer one only where `may_lengthen` accepts it), so that the rest,
        `reserve_s` and `NOISE_MARGIN` of the budget fit in it (`eval_s`: a whole evaluation's seconds, which a
        partial last epoch runs whole). `epoch_s` is this epoch's training and evaluation seconds. A unit of cost
        is priced at the mean pace of the epochs trained at that cost (that size), or of all epochs done for a
        size not trained yet, times `slowness` where that is above 1: the rest runs on the host as it is now."""
        if epoch + 1 >= planned:  # the plan's last epoch is done: nothing left to fit
            return planned
        cost = self.cost(planned, epoch)  # priced at the size it was trained at
        self.done_cost += cost
        latest = epoch_s / cost
        if epoch_s:
            self.timed.append((cost, latest))
        overall = elapsed_s / self.done_cost
        paces = self.paces
        slowness = max(1.0, self.slowness())
        longest = max(planned, self.longest)
        return fit_epochs(
            longest,
            elapsed_s,
            self.budget_s * (1 - NOISE_MARGIN) - reserve_s,
            self.epoch_cost,
            done=epoch + 1,
            eval_s=eval_s,
            unit_s=lambda c: (fmean(paces[c]) if c in paces else overall) * slowness,
            allowed=lambda n: n <= planned or may_lengthen is None or may_lengthen(n),
        )

    def take_up(self, rows: Sequence[Mapping[str, Any]], planned: float) -> None:
        """A resumed run's earlier epochs (their metrics rows, in order), priced as if this fit had timed them in
        a plan of `planned` epochs. An epoch resumed part-way (`epoch_time_from_step`) adds its cost but no pace: its
        time covers only the steps after the resume."""
        for row in rows:
            cost = self.cost(planned, row["epoch"] - 1)
            self.done_cost += cost
            if "epoch_time_s" in row and "epoch_time_from_step" not in row:
                self.timed.append((cost, (row["epoch_time_s"] + row.get("eval_time_s", 0.0)) / cost))

    def slowness(self) -> float:
        """How much slower than its size's mean the host runs now: the median over the last `RECENT_EPOCHS`
        epochs of pace / mean pace at that size (before that many, the latest epoch's; 1 before any)."""
        paces = self.paces
        ratios = [pace / fmean(paces[cost]) for cost, pace in self.timed[-RECENT_EPOCHS:]]
        if not ratios:
            return 1.0
        return median(ratios) if len(ratios) == RECENT_EPOCHS else ratios[-1]


def start_fit(
    cfg: TrainConfig,
    model: nn.Module,
    *,
    base_size: Any,
    steps_per_epoch: int,
    device: torch.device,
    precision: str,
    first_epoch_s: float,
) -> BudgetFit:
    """The time budget's pricing after the first epoch (`first_epoch_s`): a progressive run times one
    forward/backward pass at every size of its schedule and prices each later epoch by its size."""
    budget_s = cfg.budget.time_limit_min * 60
    if not schedule_of(cfg):
        return BudgetFit(budget_s, cfg.optim.epochs)
    sizes = {size for _, size in schedule_of(cfg)} | {size_at(schedule_of(cfg), 0, base_size)}
    seconds = time_passes(
        model,
        sorted(sizes),
        batch_size=cfg.data.batch_size,
        device=device,
        precision=precision,
        mode=cfg.progressive.mode,
    )
    passes = steps_per_epoch * cfg.optim.accum_steps

    def epoch_cost(planned: float, epoch: int) -> float:
        return relative_epoch_cost(schedule_of(cfg, planned), epoch, base_size, seconds, passes, first_epoch_s)

    return BudgetFit(budget_s, cfg.optim.epochs, epoch_cost, seconds)


def passes_line(fit: BudgetFit, batch_size: int) -> str:
    timed = ", ".join(f"{s:.2f} s at {h}x{w}" for (h, w), s in fit.pass_seconds.items())
    return f"one forward/backward pass of a batch of {batch_size}: {timed}"


def replan(
    cfg: TrainConfig,
    fit: BudgetFit,
    *,
    planned: float,
    epoch: int,
    row: dict[str, Any],
    base_size: Any,
    current_size: Optional[tuple[int, int]],
) -> tuple[float, float]:
    """After epoch `epoch` (0-based, its metrics `row`) of a time-budgeted plan of `planned` epochs: the plan
    that fits, and the seconds kept free for the final TTA evaluation (priced from this epoch's evaluation,
    scaled to the last epoch's size). The model trains at `current_size` now (None without progressive
    resizing): a longer plan may not move a progressive switch back past it."""
    scale = 1.0
    if fit.pass_seconds:
        scale = fit.size_scale(
            size_at(schedule_of(cfg, planned), epochs_started(planned) - 1, base_size),
            size_at(schedule_of(cfg, planned), epoch, base_size),
        )
    reserve_s = final_tta_cost(cfg.run, row, scale)
    eval_s = row.get("eval_time_s", 0.0)
    fitted = fit.replan(
        planned,
        epoch,
        row["wall_time_s"],
        reserve_s,
        eval_s * scale,
        epoch_s=0.0 if "epoch_time_from_step" in row else row["epoch_time_s"] + eval_s,  # part of an epoch: no pace
        may_lengthen=lambda longer: not steps_back_in_size(cfg, longer, epoch + 1, base_size, current_size),
    )
    return fitted, reserve_s


def steps_back_in_size(
    cfg: TrainConfig, planned: float, epoch: int, base_size: Any, current: Optional[tuple[int, int]]
) -> bool:
    """Whether a plan of `planned` epochs would train epoch `epoch` at a smaller size than `current`, the
    model's now: a longer plan moves the progressive switches later, past one the run may already have made."""
    schedule = schedule_of(cfg, planned)
    if not schedule or current is None:
        return False
    h, w = size_at(schedule, epoch, base_size)
    now_h, now_w = to_pair(current)
    return h * w < now_h * now_w


def fit_line(
    limit_min: float, epoch: int, elapsed_s: float, fit: BudgetFit, reserve_s: float, planned: float, fitted: float
) -> str:
    """What the time budget's fit did after epoch `epoch` (0-based)."""
    if epoch == 0:
        took = f"the first epoch took {elapsed_s:.0f} s"
        took += " (later epochs priced by their sizes' timed passes)" if fit.epoch_cost is not None else ""
    else:
        pace = "slower" if fitted < planned else "faster"
        took = f"{epoch + 1} epochs took {elapsed_s:.0f} s, {pace} than planned"
    final = f", {reserve_s:.0f} s kept for the final TTA evaluation" if reserve_s else ""
    if fitted != planned:
        plan = f"the schedule now ends after {fitted:g} epochs instead of {planned:g}"
    else:
        plan = f"the plan of {planned:g} epochs fits"
    return f"time budget {limit_min:.4g} min: {took}{final}, so {plan}"
