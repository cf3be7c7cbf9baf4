"""Train a list of override sets at one budget and seed(s); write a Markdown table and top-1-vs-minutes plot.

    python benchmarks/sweep.py --recipe cifar10_cpu --data cifar10/train --minutes 15 --out runs/levers \
        --set distill.teacher=none \
        --variant "baseline:" --variant "tta: run.tta=flip" --variant "ls0.2: data.label_smoothing=0.2"

(`distill.teacher=none`: the student alone; the recipe as bundled trains its own 15-minute teacher first.)
A run that trained its own teacher (`distill.teacher_recipe`) counts the teacher's minutes in its curve.

A variant is `NAME: KEY=VALUE KEY=VALUE ...` (the `--set` syntax of `resmlp train`; an empty list is the
recipe as it is). Runs go one after the other (never two timed jobs at once) into OUT/NAME-sSEED; a run
directory that already has summary.json is reused, so an interrupted sweep resumes where it stopped.
OUT/sweep.md holds the table (best/final top-1, difference from the first variant, images/s, epochs,
minutes to each accuracy threshold, the command), OUT/sweep.png the curves, OUT/sweep.json everything.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

from matplotlib.figure import Figure

from resmlp.config import load_config
from resmlp.train.run import train

THRESHOLDS = (70.0, 80.0, 85.0, 88.0, 90.0)


def parse_variant(text: str) -> tuple[str, list[str]]:
    name, _, rest = text.partition(":")
    if not name.strip() or not _:
        raise SystemExit(f"error: --variant {text!r}: expected 'NAME: key=value key=value ...'")
    return name.strip(), shlex.split(rest)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def read_curve(run_dir: Path, offset_s: float = 0.0) -> list[tuple[float, float]]:
    """(wall minutes, val top-1) after each evaluated epoch, `offset_s` (the run's own teacher) added."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [((offset_s + r["wall_time_s"]) / 60, r["val_top1"]) for r in rows if "val_top1" in r]


def total_seconds(summary: dict) -> float:
    """A run's minutes by the clock of the hour: its training and the teacher it trained first (if any)."""
    return summary["wall_time_s"] + summary.get("teacher_wall_time_s", 0.0)


def minutes_to(curve: list[tuple[float, float]], threshold: float) -> float | None:
    return next((m for m, top1 in curve if top1 >= threshold), None)


def run_one(recipe: str, overrides: list[str], out: Path) -> dict:
    if (out / "summary.json").is_file():
        print(f"{out}: done before, reusing its summary", flush=True)
        return json.loads((out / "summary.json").read_text())
    if out.exists():
        raise SystemExit(f"error: {out} holds an unfinished run; delete it or resume it with resmlp train --resume")
    return train(load_config(recipe, overrides), out=out)


def markdown(results: list[dict], recipe: str, common: list[str], machine: str) -> str:
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
    lines = [
        f"Recipe `{recipe}` with `{' '.join(common)}`; {machine}; {time.strftime('%Y-%m-%d')}.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for r in results:
        reach = [r["minutes_to"][str(t)] for t in THRESHOLDS]
        lines.append(
            "| "
            + " | ".join(
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
                    *("-" if m is None else f"{m:.1f}" for m in reach),
                    "`" + (" ".join(r["overrides"]) or "(recipe)") + "`",
                ]
            )
            + " |"
        )
    lines.append("")
    lines.append(
        "Numbers are means over the seeds; final TTA is the last epoch scored with `run.final_tta`'s views "
        "(`-`: not set); minutes to a threshold are the first evaluated epoch at or above it (mean over the "
        "seeds that reached it)."
    )
    return "\n".join(lines) + "\n"


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    """The options every run of a study shares: the recipe, the data folder, common overrides, the output."""
    p.add_argument("--recipe", required=True)
    p.add_argument("--data", default=None, help="image folder (sets data.source=folder, data.path)")
    p.add_argument("--set", dest="common", nargs="+", default=[], help="overrides for every run")
    p.add_argument("--out", required=True)


def data_overrides(data: str | None) -> list[str]:
    """--data as overrides: an image folder."""
    return ["data.source=folder", f"data.path={data}"] if data else []


def finish_plot(fig: Figure, ax, path: Path) -> None:
    """Grid, legend and layout, then the PNG."""
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def plot(results: list[dict], path: Path) -> None:
    fig = Figure(figsize=(7, 4.2))
    ax = fig.add_subplot()
    for r in results:
        for i, curve in enumerate(r["curves"]):
            ax.plot(
                [m for m, _ in curve],
                [t for _, t in curve],
                "o-",
                ms=2.5,
                lw=1.2,
                alpha=0.9,
                label=r["name"] if i == 0 else None,
                color=f"C{results.index(r) % 10}",
            )
    ax.set(xlabel="wall-clock minutes", ylabel="validation top-1 (%)")
    finish_plot(fig, ax, path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(p)
    p.add_argument("--variant", action="append", required=True, type=parse_variant, help="NAME: KEY=VALUE ...")
    p.add_argument("--minutes", type=float, default=None, help="wall-clock budget per run (fits the schedule to it)")
    p.add_argument("--epochs", type=int, default=None, help="epochs per run (instead of or as well as --minutes)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = p.parse_args(argv)

    common = list(args.common) + data_overrides(args.data)
    if args.minutes is not None:
        common += [f"run.time_limit_min={args.minutes}", "run.fit_to_time_limit=true"]
    if args.epochs is not None:
        common.append(f"optim.epochs={args.epochs}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for name, overrides in args.variant:
        runs = []
        for seed in args.seeds:
            print(f"=== {name} seed {seed}: {' '.join(overrides) or '(recipe)'}", flush=True)
            summary = run_one(args.recipe, [*common, f"run.seed={seed}", *overrides], out / f"{name}-s{seed}")
            runs.append(
                {
                    "summary": summary,
                    "curve": read_curve(out / f"{name}-s{seed}", summary.get("teacher_wall_time_s", 0.0)),
                }
            )
        reach = {}
        for t in THRESHOLDS:
            hits = [m for m in (minutes_to(r["curve"], t) for r in runs) if m is not None]
            reach[str(t)] = statistics.mean(hits) if len(hits) == len(runs) else None
        mean = lambda key: statistics.mean(r["summary"][key] for r in runs)  # noqa: E731
        tta = [r["summary"].get("final_val_top1_tta") for r in runs]
        results.append(
            {
                "name": name,
                "overrides": overrides,
                "seeds": args.seeds,
                "best_val_top1": mean("best_val_top1"),
                "final_val_top1": mean("final_val_top1"),
                "final_val_top1_tta": None if None in tta else statistics.mean(tta),
                "images_per_s": mean("train_images_per_s"),
                "epochs": mean("epochs"),
                "minutes": statistics.mean(total_seconds(r["summary"]) for r in runs) / 60,
                "minutes_to": reach,
                "per_seed_best": [r["summary"]["best_val_top1"] for r in runs],
                "curves": [r["curve"] for r in runs],
            }
        )
        (out / "sweep.json").write_text(
            json.dumps({"recipe": args.recipe, "common": common, "cpu": cpu_model(), "results": results}, indent=1)
        )
    machine = f"{cpu_model()}, torch threads default"
    (out / "sweep.md").write_text(markdown(results, args.recipe, common, machine))
    plot(results, out / "sweep.png")
    print((out / "sweep.md").read_text())
    print(f"wrote {out / 'sweep.md'}, {out / 'sweep.png'}, {out / 'sweep.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
