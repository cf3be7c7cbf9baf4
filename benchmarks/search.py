"""Search a recipe's options with Optuna (TPE) where a grid (benchmarks/sweep.py) would be too large.

    python benchmarks/search.py --recipe cifar10_cpu --data cifar10/train --out runs/search --trials 12 \
        --set run.tensorboard=false distill.teacher=none optim.epochs=4 \
              "progressive.sizes=[[0, 24], [2, 32]]" budget.time_limit_min=null budget.fit_to_time_limit=false \
        --param "optim.lr=log:0.01:0.1" --param "data.label_smoothing=float:0:0.3" \
        --param "optim.sched=choice:cosine,linear" --param "model.embed_dim=int:96:192:32"

A parameter is `KEY=KIND:...`: `float:LOW:HIGH`, `log:LOW:HIGH` (sampled on a log scale), `int:LOW:HIGH[:STEP]`
or `choice:A,B,...`; KEY is any `--set` key of `resmlp train`. Each trial trains one run (one after the other)
into OUT/STUDY-trial-NNNN through the study runner (benchmarks/study.py) and scores it by `--objective` (the
best validation top-1 by default; tune only on the validation split carved from the training data). The study
lives in an Optuna storage, by default OUT/study.db (SQLite): `--trials N` runs until the study holds N finished
trials, so an interrupted search resumes where it stopped, and several machines given one database URL
(`--storage postgresql://...`) share one study. Writes OUT/search.md (every trial, best first), OUT/search.png
(score per trial and the best so far) and OUT/search.json.

Needs `pip install optuna` (the `search` extra: `pip install -e ".[search]"`).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from common import cpu_model, folder_data
from matplotlib.figure import Figure
from study import Study, add_run_arguments, finish_plot, markdown_table, write_report

from resmlp.config import ConfigError, Override, load_config

OBJECTIVES = ("best_val_top1", "final_val_top1", "final_val_top1_tta")
KINDS = ("float", "log", "int", "choice")


@dataclass(frozen=True)
class Param:
    """One searched option: `key` (a `--set` key), `kind` (one of KINDS) and its range or choices."""

    key: str
    kind: str
    args: tuple

    def suggest(self, trial):
        """Draw this parameter's value for `trial` (an optuna.Trial)."""
        if self.kind == "choice":
            return trial.suggest_categorical(self.key, list(self.args))
        if self.kind == "int":
            low, high, *step = self.args
            return trial.suggest_int(self.key, low, high, step=step[0] if step else 1)
        return trial.suggest_float(self.key, *self.args, log=self.kind == "log")


def parse_param(text: str) -> Param:
    """`KEY=KIND:ARGS` -> Param; a malformed one is an `error:` line naming it."""
    usage = "expected KEY=float:LOW:HIGH, KEY=log:LOW:HIGH, KEY=int:LOW:HIGH[:STEP] or KEY=choice:A,B,..."
    key, eq, spec = text.partition("=")
    kind, _, rest = spec.partition(":")
    if not eq or not key.strip() or kind not in KINDS or not rest:
        raise SystemExit(f"error: --param {text!r}: {usage}")
    key = key.strip()
    if kind == "choice":
        choices = tuple(c.strip() for c in rest.split(","))
        if len(choices) < 2 or not all(choices):
            raise SystemExit(f"error: --param {text!r}: a choice needs at least two non-empty values, A,B,...")
        return Param(key, kind, choices)
    parts = rest.split(":")
    number = int if kind == "int" else float
    try:
        values = tuple(number(p) for p in parts)
    except ValueError:
        raise SystemExit(f"error: --param {text!r}: {kind} bounds must be {number.__name__}s; {usage}") from None
    if len(values) not in ((2, 3) if kind == "int" else (2,)) or values[0] >= values[1]:
        raise SystemExit(f"error: --param {text!r}: needs LOW < HIGH; {usage}")
    if kind == "log" and values[0] <= 0:
        raise SystemExit(f"error: --param {text!r}: a log range needs LOW > 0")
    return Param(key, kind, values)


def check_params(recipe: str, common: list[Override], params: list[Param]) -> None:
    """Every searched key and its range's ends read as a config (before any trial trains)."""
    for param in params:
        ends = param.args if param.kind == "choice" else param.args[:2]
        for value in ends:
            try:
                load_config(recipe, [*common, override(param.key, value)])
            except ConfigError as e:
                raise SystemExit(f"error: --param {param.key}={param.kind}:...: {e}") from None


def override(key: str, value) -> str:
    """The `--set` item for a drawn value (floats with enough digits to be read back exactly)."""
    return f"{key}={value!r}" if isinstance(value, float) else f"{key}={value}"


def finished_trials(study) -> list:
    import optuna

    return [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]


def markdown(study, params: list[Param], runs: Study, objective: str, machine: str) -> str:
    trials = sorted(finished_trials(study), key=lambda t: -t.value)
    head = ["trial", objective, "minutes", *(p.key for p in params)]
    rows = [
        [
            str(t.number),
            f"{t.value:.2f}",
            f"{t.user_attrs.get('minutes', float('nan')):.1f}",
            *(_cell(t.params.get(p.key)) for p in params),
        ]
        for t in trials
    ]
    lines = [
        f"Optuna study `{study.study_name}` (TPE) on recipe `{runs.recipe}` with `{' '.join(runs.common_text())}`; "
        f"{machine}; {time.strftime('%Y-%m-%d')}. {len(trials)} finished trials, best first.",
        "",
        *markdown_table(head, rows),
    ]
    if trials:
        best = trials[0]
        lines += [
            "",
            f"Best: trial {best.number}, {objective} {best.value:.2f}: `"
            + " ".join(override(p.key, best.params[p.key]) for p in params if p.key in best.params)
            + "`",
        ]
    return "\n".join(lines) + "\n"


def _cell(value) -> str:
    return "-" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)


def plot(study, objective: str, path: Path) -> None:
    trials = sorted(finished_trials(study), key=lambda t: t.number)
    fig = Figure(figsize=(6.5, 3.8))
    ax = fig.add_subplot()
    numbers = [t.number for t in trials]
    values = [t.value for t in trials]
    best = [max(values[: i + 1]) for i in range(len(values))]
    ax.plot(numbers, values, "o", ms=4, label="trial")
    ax.step(numbers, best, where="post", color="C3", label="best so far")
    ax.set(xlabel="trial", ylabel=f"{objective} (%)")
    finish_plot(fig, ax, path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(p)
    p.add_argument("--param", action="append", required=True, type=parse_param, help="KEY=KIND:... (see above)")
    p.add_argument("--trials", type=int, required=True, help="finished trials the study should hold")
    p.add_argument("--objective", choices=OBJECTIVES, default="best_val_top1")
    p.add_argument("--seed", type=int, default=0, help="the training seed of every trial (run.seed)")
    p.add_argument("--sampler-seed", type=int, default=0, help="the TPE sampler's seed")
    p.add_argument("--storage", default=None, help="Optuna storage URL (default: sqlite:///OUT/study.db)")
    p.add_argument("--study", default="search", help="study name inside the storage")
    args = p.parse_args(argv)
    try:
        import optuna
    except ImportError:
        raise SystemExit(
            'error: benchmarks/search.py needs optuna: pip install optuna (or pip install -e ".[search]")'
        ) from None

    keys = [param.key for param in args.param]
    if len(set(keys)) != len(keys):
        raise SystemExit(f"error: --param: a key is given twice ({', '.join(keys)})")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs = Study(args.recipe, out, [*args.common, ("run.seed", args.seed), *folder_data(args.data)])
    storage = args.storage or f"sqlite:///{(out / 'study.db').resolve()}"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=args.study,
        storage=storage,
        direction="maximize",
        load_if_exists=True,
        sampler=optuna.samplers.TPESampler(seed=args.sampler_seed),
    )

    check_params(args.recipe, runs.common, args.param)

    def objective(trial) -> float:
        overrides = [override(param.key, param.suggest(trial)) for param in args.param]
        name = f"{args.study}-trial-{trial.number:04d}"
        if (out / name).exists():  # a new trial's number never had a run here, unless the storage was replaced
            raise SystemExit(
                f"error: {out / name} exists but study {args.study!r} has no finished trial "
                f"{trial.number}; was its storage deleted? Move the old trials away or name another "
                f"--study"
            )
        summary = runs.run(name, overrides, title=f"trial {trial.number}: {' '.join(overrides)}")
        trial.set_user_attr("minutes", summary["wall_time_s"] / 60)
        trial.set_user_attr("run_dir", str(out / name))
        if summary.get(args.objective) is None:
            raise SystemExit(
                f"error: --objective {args.objective}: trial {trial.number}'s summary has no such "
                f"score (final_val_top1_tta needs run.final_tta)"
            )
        return float(summary[args.objective])

    remaining = args.trials - len(finished_trials(study))
    if remaining > 0:
        study.optimize(objective, n_trials=remaining)
    else:
        print(f"the study already holds {len(finished_trials(study))} finished trials (>= --trials {args.trials})")
    machine = f"{cpu_model()}, torch threads default"
    trials = [
        {"number": t.number, "value": t.value, "params": t.params, **t.user_attrs} for t in finished_trials(study)
    ]
    write_report(
        out,
        "search",
        markdown(study, args.param, runs, args.objective, machine),
        lambda path: plot(study, args.objective, path),
        runs.record(objective=args.objective, trials=trials),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
