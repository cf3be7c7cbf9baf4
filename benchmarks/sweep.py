"""Train a list of override sets at one budget and seed(s); write a Markdown table and top-1-vs-minutes plot.

    python benchmarks/sweep.py --recipe cifar10_cpu --data cifar10/train --minutes 15 --out runs/levers \
        --set distill.teacher=none \
        --variant "baseline:" --variant "tta: run.tta=flip" --variant "ls0.2: data.label_smoothing=0.2"

(`distill.teacher=none`: the student alone; the recipe as bundled trains its own 15-minute teacher first.)
A run that trained its own teacher (`distill.teacher_recipe`) counts the teacher's minutes in its curve.

A variant is `NAME: KEY=VALUE KEY=VALUE ...` (the `--set` syntax of `resmlp train`; an empty list is the
recipe as it is). Runs go one after the other (never two timed jobs at once) into OUT/NAME-sSEED; a run
directory that finished is reused and a stopped one resumes, so an interrupted sweep continues where it stopped.
OUT/sweep.md holds the table (best/final top-1, difference from the first variant, images/s, epochs,
minutes to each accuracy threshold, the command), OUT/sweep.png the curves, OUT/sweep.json everything.
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
from pathlib import Path

from common import cpu_model, folder_data, read_curve
from study import Study, add_run_arguments, markdown_table, plot_curves, write_json, write_report

from resmlp.config import Override

THRESHOLDS = (70.0, 80.0, 85.0, 88.0, 90.0)


def parse_variant(text: str) -> tuple[str, list[str]]:
    name, _, rest = text.partition(":")
    if not name.strip() or not _:
        raise SystemExit(f"error: --variant {text!r}: expected 'NAME: key=value key=value ...'")
    return name.strip(), shlex.split(rest)


def total_seconds(summary: dict) -> float:
    """A run's minutes by the clock of the hour: its training and the teacher it trained first (if any)."""
    return summary["wall_time_s"] + summary.get("teacher_wall_time_s", 0.0)


def minutes_to(curve: list[tuple[float, float]], threshold: float) -> float | None:
    return next((m for m, top1 in curve if top1 >= threshold), None)


def markdown(results: list[dict], study: Study, machine: str) -> str:
    base = results[0]["best_val_top1"]
    head = [
        "variant",
        "seeds",
        "best top-1",
        "diff",
        "final top-1",
        "final TTA",
        "images/s",
        "epochs",
        "minutes",
        *(f"min to {t:.0f}%" for t in THRESHOLDS),
        "overrides",
    ]
    rows = [
        [
            r["name"],
            str(len(r["seeds"])),
            f"{r['best_val_top1']:.2f}",
            f"{r['best_val_top1'] - base:+.2f}",
            f"{r['final_val_top1']:.2f}",
            "-" if r["final_val_top1_tta"] is None else f"{r['final_val_top1_tta']:.2f}",
            f"{r['images_per_s']:.0f}",
            f"{r['epochs']:.1f}",
            f"{r['minutes']:.1f}",
            *("-" if m is None else f"{m:.1f}" for m in (r["minutes_to"][str(t)] for t in THRESHOLDS)),
            "`" + (" ".join(r["overrides"]) or "(recipe)") + "`",
        ]
        for r in results
    ]
    lines = [study.heading(machine), "", *markdown_table(head, rows), ""]
    lines.append(
        "Numbers are means over the seeds; final TTA is the last epoch scored with `run.final_tta`'s views "
        "(`-`: not set); minutes to a threshold are the first evaluated epoch at or above it (mean over the "
        "seeds that reached it)."
    )
    return "\n".join(lines) + "\n"


def summarize(name: str, overrides: list[str], seeds: list[int], summaries: list[dict], run_dirs: list[Path]) -> dict:
    """One variant's row: means over its seeds, its curves and minutes to each threshold."""
    curves = [read_curve(d, s.get("teacher_wall_time_s", 0.0)) for d, s in zip(run_dirs, summaries)]
    reach = {}
    for t in THRESHOLDS:
        hits = [m for m in (minutes_to(c, t) for c in curves) if m is not None]
        reach[str(t)] = statistics.mean(hits) if len(hits) == len(curves) else None
    mean = lambda key: statistics.mean(s[key] for s in summaries)  # noqa: E731
    tta = [s.get("final_val_top1_tta") for s in summaries]
    return {
        "name": name,
        "overrides": overrides,
        "seeds": seeds,
        "best_val_top1": mean("best_val_top1"),
        "final_val_top1": mean("final_val_top1"),
        "final_val_top1_tta": None if None in tta else statistics.mean(tta),
        "images_per_s": mean("train_images_per_s"),
        "epochs": mean("epochs"),
        "minutes": statistics.mean(total_seconds(s) for s in summaries) / 60,
        "minutes_to": reach,
        "per_seed_best": [s["best_val_top1"] for s in summaries],
        "curves": curves,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(p)
    p.add_argument("--variant", action="append", required=True, type=parse_variant, help="NAME: KEY=VALUE ...")
    p.add_argument("--minutes", type=float, default=None, help="wall-clock budget per run (fits the schedule to it)")
    p.add_argument("--epochs", type=int, default=None, help="epochs per run (instead of or as well as --minutes)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = p.parse_args(argv)

    common: list[Override] = [*args.common, *folder_data(args.data)]
    if args.minutes is not None:
        common += [("budget.time_limit_min", args.minutes), ("budget.fit_to_time_limit", True)]
    if args.epochs is not None:
        common.append(("optim.epochs", args.epochs))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    study = Study(args.recipe, out, common)
    results = []
    for name, overrides in args.variant:
        summaries = study.seeds(name, overrides, args.seeds)
        run_dirs = [out / study.run_name(name, seed) for seed in args.seeds]
        results.append(summarize(name, overrides, args.seeds, [summaries[s] for s in args.seeds], run_dirs))
        write_json(out / "sweep.json", study.record(results=results))
    machine = f"{cpu_model()}, torch threads default"
    write_report(
        out,
        "sweep",
        markdown(results, study, machine),
        lambda path: plot_curves(results, path),
        study.record(results=results),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
