"""The teacher stage: a run with `distill.teacher_recipe` trains its teacher first, in <run>/teacher, inside its
own time limit, then distils from it. `run.train` runs the stage: `teacher_plan` says what to train (or that a
finished teacher is reused), `run.train_stage` trains it like any run, `student_config` hands the student the
teacher and the minutes left."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..config import ConfigError, Override, TrainConfig, load_config
from ..rundir import RunDir
from .checkpointing import config_of_run

# What a teacher trained inside a run takes from that run: the same images and the same validation split (it
# must not learn the student's validation images), how they are loaded, the seed, device and logging. Anything
# else of the teacher recipe is changed with `distill.teacher_set`.
SHARED_WITH_TEACHER = (
    "data.source",
    "data.path",
    "data.val_path",
    "data.val_split",
    "data.split_seed",
    "data.on_bad",
    "data.max_image_pixels",
    "data.cache",
    "data.cache_size",
    "data.workers",
    "run.seed",
    "run.device",
    "run.threads",
    "run.tensorboard",
    "run.progress",
)


@dataclass(frozen=True)
class TeacherPlan:
    """What the teacher stage does: train `cfg` in `run_dir` (resuming when `resume`), or nothing when the
    teacher there finished (`finished_s`: its training seconds)."""

    run_dir: RunDir
    cfg: Optional[TrainConfig] = None
    resume: bool = False
    finished_s: Optional[float] = None


def teacher_run_config(cfg: TrainConfig) -> TrainConfig:
    """The configuration of the teacher a run trains first: `distill.teacher_recipe` with the run's data,
    validation split and seed (SHARED_WITH_TEACHER), `distill.teacher_time_min` as its time limit and the
    `distill.teacher_set` overrides."""
    d = cfg.distill
    overrides: list[Override] = []
    for key in SHARED_WITH_TEACHER:
        section, name = key.split(".")
        overrides.append((key, getattr(getattr(cfg, section), name)))
    if d.teacher_time_min is not None:
        overrides.append(("budget.time_limit_min", d.teacher_time_min))
    overrides += d.teacher_set
    try:
        teacher = load_config(d.teacher_recipe, overrides)
    except ConfigError as e:
        raise ConfigError(f"distill.teacher_recipe={d.teacher_recipe}: {e}") from None
    if teacher.distill.active:
        raise ConfigError(
            f"distill.teacher_recipe={d.teacher_recipe}: that recipe distils from a teacher itself; "
            "a teacher recipe learns from the labels (distill.teacher unset)"
        )
    return teacher


def teacher_plan(cfg: TrainConfig, run_dir: RunDir) -> TeacherPlan:
    """Train the teacher of `distill.teacher_recipe` in <run>/teacher, resume it there if it was stopped, or
    reuse it if it finished."""
    teacher_dir = run_dir.teacher
    seconds = teacher_dir.finished_seconds()
    if seconds is not None:
        return TeacherPlan(teacher_dir, finished_s=seconds)
    resume = teacher_dir.last.is_file()
    teacher_cfg = config_of_run(teacher_dir.root) if resume else teacher_run_config(cfg)
    _check_teacher_budget(teacher_cfg.budget.time_limit_min, cfg.budget.time_limit_min, cfg.distill.teacher_recipe)
    return TeacherPlan(teacher_dir, teacher_cfg, resume)


def teacher_error(cfg: TrainConfig, teacher_dir: RunDir, error: ValueError) -> ValueError:
    """A bad-input error of the teacher's training, said as the teacher's (which recipe, where, how to change
    it), of the same type where that type takes a message alone."""
    message = (
        f"the teacher (distill.teacher_recipe={cfg.distill.teacher_recipe}, trained first in {teacher_dir.root}): "
        f"{error}; set the teacher's keys with --set 'distill.teacher_set=[\"KEY=VALUE\"]'"
    )
    try:
        return type(error)(message)
    except TypeError:  # e.g. json.JSONDecodeError(msg, doc, pos)
        return ValueError(message)


def stopped_message(teacher_dir: RunDir, stopped_by: str) -> str:
    return (
        f"stopped by {stopped_by} while training the teacher in {teacher_dir.root}; run the same command "
        "again (same --out): the teacher resumes from its checkpoint"
    )


def student_config(cfg: TrainConfig, teacher_dir: RunDir, seconds: float) -> TrainConfig:
    """The student's config: distil from the teacher in `teacher_dir`, which took `seconds`, with what is left
    of `budget.time_limit_min`."""
    limit = cfg.budget.time_limit_min
    left = None if limit is None else limit - seconds / 60
    if left is not None and left <= 0:
        raise ValueError(
            f"the teacher took {seconds / 60:.1f} min of budget.time_limit_min={limit:g}: no time is left "
            f"for the student; set distill.teacher_time_min lower or raise budget.time_limit_min"
        )
    return dataclasses.replace(
        cfg,
        distill=dataclasses.replace(cfg.distill, teacher=str(teacher_dir.root)),
        budget=dataclasses.replace(cfg.budget, time_limit_min=left),
    )


def handoff_line(cfg: TrainConfig, teacher_dir: RunDir, seconds: float) -> str:
    limit = cfg.budget.time_limit_min
    remaining = "" if limit is None else f"; the student gets the {limit - seconds / 60:.1f} min left of {limit:g}"
    return f"teacher {teacher_dir.root}: {seconds / 60:.1f} min{remaining}"


def _check_teacher_budget(teacher_min: Optional[float], limit_min: Optional[float], recipe: Optional[str]) -> None:
    """Refuse, before it trains, a teacher whose own time limit would leave the student no time."""
    if limit_min is not None and teacher_min is not None and teacher_min >= limit_min:
        raise ConfigError(
            f"distill.teacher_recipe={recipe} trains for {teacher_min:g} min (its budget.time_limit_min), "
            f"which leaves no time of budget.time_limit_min={limit_min:g} for the student; set "
            "distill.teacher_time_min lower, raise budget.time_limit_min, or distill.teacher=none"
        )


def own_teacher_seconds(cfg: TrainConfig, run_dir: RunDir) -> Optional[float]:
    """The training seconds of the teacher a run trained itself, from its summary (None when it distils from
    another one). A resumed student reports these; the session that trained the teacher also counted its data
    loading, so the two may differ by that start-up."""
    teacher_dir = run_dir.teacher
    if cfg.distill.teacher is None or Path(cfg.distill.teacher) != teacher_dir.root:
        return None
    return teacher_dir.finished_seconds()
