"""A study: named configurations of one recipe trained one after the other into OUT/NAME, each a run directory.
A run that finished before is reused and one stopped by a signal resumes from its checkpoint, so an interrupted
study continues where it stopped and a table can be redrawn without training. The scripts differ only in how
they name their configurations: a grid of variants x seeds (sweep.py), ablation rows x seeds (ablate.py),
Optuna trials drawn one at a time (search.py), or a few fixed alternatives (bench_distill.py, bench_resample.py
finetune). Also here: the Markdown table, the JSON record and the figures every study writes.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

from common import cpu_model, describe, finished_summary, override_text, train_once
from matplotlib.figure import Figure

from resmlp.config import Override
from resmlp.files import write_text_atomic
from resmlp.rundir import RunDir


@dataclass(frozen=True)
class Study:
    """`recipe` (or the config dict `base`, e.g. a finished run's own) with `common` overrides first, then each
    configuration's own, trained into `out`/NAME."""

    recipe: Optional[str]
    out: Path
    common: Sequence[Override] = ()
    base: Optional[dict] = field(default=None, compare=False)

    def run(
        self,
        name: str,
        overrides: Sequence[Override] = (),
        *,
        title: Optional[str] = None,
        finetune: str | Path | None = None,
    ) -> dict[str, Any]:
        """Configuration `name` (trained unless finished); its summary. Announced as `=== TITLE`."""
        print(f"=== {title or f'{name}: {describe(overrides)}'}", flush=True)
        return train_once(self.recipe, [*self.common, *overrides], self.out / name, base=self.base, finetune=finetune)

    def run_all(self, configs: Mapping[str, Sequence[Override]]) -> dict[str, dict[str, Any]]:
        """Every named configuration in order; name -> summary."""
        return {name: self.run(name, overrides) for name, overrides in configs.items()}

    def seeds(
        self, name: str, overrides: Sequence[Override], seeds: Sequence[int], *, only_finished: bool = False
    ) -> dict[int, dict[str, Any]]:
        """Configuration `name` once per seed (`run.seed`, before its own overrides) into OUT/NAME-sSEED;
        seed -> summary. `only_finished`: train nothing, keep the seeds whose run has finished."""
        done = {}
        for seed in seeds:
            run = self.run_name(name, seed)
            if only_finished and finished_summary(RunDir(self.out / run)) is None:
                continue
            title = f"{name} seed {seed}: {describe(overrides)}"
            done[seed] = self.run(run, [("run.seed", seed), *overrides], title=title)
        return done

    @staticmethod
    def run_name(name: str, seed: int) -> str:
        return f"{name}-s{seed}"

    def record(self, **results: Any) -> dict[str, Any]:
        """What OUT/<study>.json holds besides the results: the recipe, the common overrides (as `--set` text)
        and the CPU."""
        return {"recipe": self.recipe, "common": self.common_text(), "cpu": cpu_model(), **results}

    def common_text(self) -> list[str]:
        return [override_text(o) for o in self.common]

    def heading(self, machine: str) -> str:
        """The line above a study's table: recipe, common overrides, machine, date."""
        return f"Recipe `{self.recipe}` with `{' '.join(self.common_text())}`; {machine}; {time.strftime('%Y-%m-%d')}."


class Ledger:
    """What each finished run of a study measured, kept in a JSON file that is committed (benchmarks/records/),
    so that a table needing several sessions' compute grows across machines whose run directories are gone.
    A ledger belongs to one `setting` (the recipe and the common overrides, the data folder's path left out):
    a command with another setting is refused, so that no table mixes two budgets."""

    def __init__(self, path: Path, setting: dict[str, Any]) -> None:
        self.path, self.setting = Path(path), setting
        self.runs: dict[str, dict[str, Any]] = {}
        if self.path.is_file():
            try:
                kept = json.loads(self.path.read_text())
                recorded, self.runs = kept["setting"], dict(kept["runs"])
            except (ValueError, KeyError, TypeError) as e:
                raise SystemExit(f"error: --ledger {self.path}: not a ledger this script wrote ({e})") from None
            if recorded != setting:
                raise SystemExit(
                    f"error: --ledger {self.path}: recorded with {json.dumps(recorded)}, this command sets "
                    f"{json.dumps(setting)}; name another ledger"
                )

    def get(self, run: str) -> Optional[dict[str, Any]]:
        return self.runs.get(run)

    def put(self, run: str, record: dict[str, Any]) -> None:
        """Record `run` (atomically: an interrupted write keeps the ledger as it was)."""
        self.runs[run] = record
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_json(self.path, {"setting": self.setting, "runs": dict(sorted(self.runs.items()))})


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    """The options every run of a study shares: the recipe, the data folder, common overrides, the output."""
    p.add_argument("--recipe", required=True)
    p.add_argument("--data", default=None, help="image folder (sets data.source=folder, data.path)")
    p.add_argument("--set", dest="common", nargs="+", default=[], help="overrides for every run")
    p.add_argument("--out", required=True)


def markdown_table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """The lines of a Markdown table."""
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head), *("| " + " | ".join(r) + " |" for r in rows)]


def write_json(path: Path, record: dict[str, Any]) -> None:
    write_text_atomic(path, json.dumps(record, indent=1))


def write_report(out: Path, stem: str, table: str, draw: Callable[[Path], None], record: dict[str, Any]) -> None:
    """OUT/STEM.md (the table, also printed), OUT/STEM.png (`draw` writes it) and OUT/STEM.json (`record`)."""
    write_json(out / f"{stem}.json", record)
    write_text_atomic(out / f"{stem}.md", table)
    draw(out / f"{stem}.png")
    print(table)
    print(f"wrote {out / f'{stem}.md'}, {out / f'{stem}.png'}, {out / f'{stem}.json'}")


def finish_plot(fig: Figure, ax, path: Path) -> None:
    """Grid, legend and layout, then the PNG."""
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def plot_curves(results: list[dict[str, Any]], path: Path) -> None:
    """Top-1 against wall-clock minutes: one colour per result (`name`), one line per curve in its `curves`."""
    fig = Figure(figsize=(7, 4.2))
    ax = fig.add_subplot()
    for k, r in enumerate(results):
        for i, curve in enumerate(r["curves"]):
            ax.plot(
                [m for m, _ in curve],
                [t for _, t in curve],
                "o-",
                ms=2.5,
                lw=1.2,
                alpha=0.9,
                label=r["name"] if i == 0 else None,
                color=f"C{k % 10}",
            )
    ax.set(xlabel="wall-clock minutes", ylabel="validation top-1 (%)")
    finish_plot(fig, ax, path)
