"""Every figure the docs show, redrawn from the committed data under docs/data (nothing else is read).

    python benchmarks/figures.py [--data docs/data] [--out docs]

docs/data holds the numbers of docs/results.md as small CSV files (one per table), and runs/<name>/ the
metrics.jsonl and summary.json of a headline run, the files its run directory holds (teacher/ included), when
one is committed: the hour's figure then draws that run's per-epoch curve beside the milestones. Prints the path
of every PNG it writes.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path
from typing import Callable

from matplotlib.figure import Figure

from resmlp.figures import save_figure
from resmlp.rundir import RunDir

DOCS = Path(__file__).resolve().parents[1] / "docs"

GROUP_COLORS = {
    "baseline": "0.45",
    "norm": "C0",
    "token mixing": "C1",
    "pooling": "C2",
    "activation": "C4",
    "patch size": "C3",
}
METHOD_STYLES = {  # column of resample_zero_shot.csv -> (label, matplotlib format)
    "resize_to_32": ("images resized back to 32 px", "k^-"),
    "interp": ("A resampled: interp (default)", "C0o-"),
    "offset": ("A resampled: offset", "C1s-"),
    "kernel": ("A resampled: kernel", "C3d-"),
}


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def run_curve(run: RunDir, offset_s: float = 0.0) -> list[tuple[float, float]]:
    """(minutes of the hour, val top-1) after each evaluated epoch of a run directory."""
    return [((offset_s + r["wall_time_s"]) / 60, r["val_top1"]) for r in run.read_metrics() if "val_top1" in r]


def committed_runs(data: Path) -> list[RunDir]:
    """The run directories under data/runs that hold a metrics.jsonl, by name."""
    root = data / "runs"
    if not root.is_dir():
        return []
    return sorted((RunDir(d) for d in root.iterdir() if RunDir(d).metrics.is_file()), key=lambda r: r.root.name)


def draw_milestones(ax, data: Path) -> None:
    """Minutes of the hour (teacher first) at which each run's validation top-1 first reached each value."""
    runs = read_csv(data / "hour.csv")
    milestones = read_csv(data / "hour_milestones.csv")
    kinds = list(dict.fromkeys(r["cpu_kind"] for r in runs))
    teacher_end = max(float(r["teacher_min"]) for r in runs)
    ax.axvspan(0, teacher_end, color="0.93", zorder=0)
    ax.text(teacher_end / 2, 90.7, "teacher", ha="center", va="top", fontsize=8, color="0.4")
    for i, run in enumerate(runs):
        color = f"C{kinds.index(run['cpu_kind'])}"
        style = "-" if i % 2 == 0 else "--"
        mine = [m for m in milestones if m["run"] == run["run"] and m["role"] == "student"]
        pts = sorted((float(m["minutes_lo"]), float(m["top1"])) for m in mine)
        label = f"{run['cpu_kind']}, seed {run['seed']}: best {run['best_top1']} %, TTA {run['final_tta']} %"
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o" + style, color=color, ms=4, lw=1.2, label=label)
        ax.plot(float(run["end_min"]), float(run["final_tta"]), "*", color=color, ms=11, mec="k", mew=0.5)
    teacher = [m for m in milestones if m["role"] == "teacher"]
    for j, m in enumerate(teacher):
        lo, hi, top1 = float(m["minutes_lo"]), float(m["minutes_hi"]), float(m["top1"])
        ax.errorbar(
            (lo + hi) / 2,
            top1,
            xerr=(hi - lo) / 2,
            fmt="s",
            color="0.35",
            ms=4,
            capsize=2,
            label="teacher, first reached (range over seeds)" if j == 0 else None,
        )
    ax.axvline(60, color="k", lw=0.8, ls=":")
    ax.set(xlim=(0, 62), ylim=(68, 91), xlabel="minutes of the hour (teacher first)", ylabel="val top-1 (%)")
    ax.set_title("cifar10_cpu, one command: when each top-1 was first reached (stars: final TTA)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")


def draw_run_curves(ax, runs: list[RunDir]) -> None:
    """Per-epoch val top-1 against minutes of each committed run (its own teacher's curve in grey first)."""
    for i, run in enumerate(runs):
        summary = run.read_summary() or {}
        teacher_s = float(summary.get("teacher_wall_time_s", 0.0))
        teacher = run_curve(run.teacher)
        if teacher:
            ax.plot(*zip(*teacher), ".-", color="0.6", lw=0.8, ms=3, label="teacher" if i == 0 else None)
        curve = run_curve(run, teacher_s)
        ax.plot(*zip(*curve), "o-", color=f"C{i}", ms=3, lw=1.2, label=run.root.name)
        if "final_val_top1_tta" in summary:
            ax.plot(curve[-1][0], summary["final_val_top1_tta"], "*", color=f"C{i}", ms=11, mec="k", mew=0.5)
    ax.axvline(60, color="k", lw=0.8, ls=":")
    ax.set(xlabel="minutes of the hour", ylabel="val top-1 (%)", ylim=(30, 92))
    ax.set_title("per epoch, committed runs (docs/data/runs)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")


def hour_figure(data: Path, path: Path) -> str:
    runs = committed_runs(data)
    fig = Figure(figsize=(12.5 if runs else 7.5, 4.6))
    draw_milestones(fig.add_subplot(1, 2 if runs else 1, 1), data)
    if runs:
        draw_run_curves(fig.add_subplot(1, 2, 2), runs)
    save_figure(fig, path)
    return f"milestones, per-epoch curves of {len(runs)} committed run(s)"


def ablations_figure(data: Path, path: Path) -> str:
    rows = read_csv(data / "ablations.csv")
    seeds = [[float(r["top1_seed0"]), float(r["top1_seed1"])] for r in rows]
    means = [sum(s) / len(s) for s in seeds]
    fig = Figure(figsize=(9, 4.4))
    ax = fig.add_subplot()
    xs = range(len(rows))
    ax.bar(xs, means, color=[GROUP_COLORS[r["group"]] for r in rows], alpha=0.8, width=0.7)
    for x, s, m in zip(xs, seeds, means):
        ax.plot([x] * len(s), s, "k.", ms=6)
        ax.text(x, max(s) + 0.3, f"{m - means[0]:+.2f}", ha="center", fontsize=7)
    ax.axhline(means[0], color="0.3", lw=0.8, ls="--")
    ax.set_xticks(list(xs), [r["row"] for r in rows], rotation=40, ha="right", fontsize=8)
    ax.set(ylabel="val top-1 (%) after 147 steps", ylim=(15, 33.5))
    ax.set_title(
        "Table 3 rows at CPU scale: bars = mean of seeds 0 and 1 (dots), labels = difference from the baseline",
        fontsize=9,
    )
    for group, color in GROUP_COLORS.items():
        ax.bar([0], [0], color=color, label=group)  # legend entries only
    ax.legend(fontsize=7, ncol=len(GROUP_COLORS), loc="upper center")
    ax.grid(axis="y", alpha=0.3)
    save_figure(fig, path)
    return f"{len(rows)} rows"


def resample_figure(data: Path, path: Path) -> str:
    rows = read_csv(data / "resample_zero_shot.csv")
    sizes = [int(r["size"]) for r in rows]
    fig = Figure(figsize=(6.5, 4))
    ax = fig.add_subplot()
    for column, (label, fmt) in METHOD_STYLES.items():
        ax.plot(sizes, [float(r[column]) for r in rows], fmt, ms=5, lw=1.2, label=label)
    ax.axvline(32, color="0.5", lw=0.8, ls=":")
    ax.set(xlabel="size of the evaluated images (px)", ylabel="val top-1 (%)", xticks=sizes)
    ax.set_title("A model trained at 32 px, evaluated at other sizes without retraining", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    save_figure(fig, path)
    return f"{len(sizes)} sizes x {len(METHOD_STYLES)} methods"


def progressive_figure(data: Path, path: Path) -> str:
    rows = read_csv(data / "progressive_hour.csv")
    runs = list(dict.fromkeys((r["run"], r["seed"]) for r in rows))
    fig = Figure(figsize=(7, 4.2))
    ax = fig.add_subplot()
    finals = []
    for i, (name, seed) in enumerate(runs):
        own = [r for r in rows if (r["run"], r["seed"]) == (name, seed)]
        minutes = [float(r["minutes"]) for r in own]
        top1 = [float(r["top1"]) for r in own]
        color = f"C{i}"
        ax.plot(minutes, top1, "-", color=color, lw=1.2, label=f"{name}, seed {seed}")
        for size, fill in ((24, "none"), (32, color)):
            pts = [(m, t) for m, t, r in zip(minutes, top1, own) if int(r["img_size"]) == size]
            if pts:
                ax.plot(*zip(*pts), "o", color=color, mfc=fill, ms=5)
        if name.startswith("fixed"):
            finals.append(top1[-1])
    if finals:
        target = sum(finals) / len(finals)
        ax.axhline(target, color="0.4", lw=0.8, ls="--")
        ax.text(1, target + 0.4, f"fixed runs' final top-1, mean {target:.2f} %", fontsize=7, color="0.3")
    ax.axvline(60, color="k", lw=0.8, ls=":")
    ax.set(xlabel="wall-clock minutes", ylabel="val top-1 (%)")
    ax.set_title("Progressive resizing in the hour (hollow: 24 px epochs, filled: 32 px)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    save_figure(fig, path)
    return f"{len(runs)} runs"


def inference_figure(data: Path, path: Path) -> str:
    rows = sorted(read_csv(data / "inference_s12.csv"), key=lambda r: float(r["speedup"]))
    base = next(float(r["img_s"]) for r in rows if float(r["speedup"]) == 1.0)
    speed = [float(r["speedup"]) for r in rows]
    lo = [s - float(r["img_s_min"]) / base for s, r in zip(speed, rows)]
    hi = [float(r["img_s_max"]) / base - s for s, r in zip(speed, rows)]
    fig = Figure(figsize=(7.5, 4))
    ax = fig.add_subplot()
    ys = range(len(rows))
    colors = ["C1" if "bf16" in r["variant"] else "C2" if "int8" in r["variant"] else "C0" for r in rows]
    ax.barh(ys, speed, xerr=[lo, hi], color=colors, alpha=0.85, capsize=2)
    for y, s, r in zip(ys, speed, rows):
        ax.text(s + hi[y] + 0.1, y, f"{s:.2f}x, {float(r['img_s']):.0f} img/s", va="center", fontsize=7)
    ax.set_yticks(list(ys), [r["variant"] for r in rows], fontsize=8)
    ax.set(
        xlabel="speed-up over plain fp32 eager (median; whiskers: min-max of 5 rounds)",
        xlim=(0, 1.3 * max(s + h for s, h in zip(speed, hi))),
    )
    ax.set_title("ResMLP-S12 inference, 224 px, batch 64, 2-core AMX Xeon", fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    save_figure(fig, path)
    return f"{len(rows)} variants"


def draw_translation(runs: list[RunDir], path: Path) -> str:
    """Validation loss and greedy BLEU against minutes, one line per text run (benchmarks/bench_translation.py)."""
    fig = Figure(figsize=(10, 4))
    ax_loss, ax_bleu = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for i, run in enumerate(runs):
        rows = run.read_metrics()
        style = dict(color=f"C{i}", marker=".", label=run.root.name, ls="--" if "transformer" in run.root.name else "-")
        ax_loss.plot([r["wall_time_s"] / 60 for r in rows], [r["val_loss"] for r in rows], **style)
        bleu = [(r["wall_time_s"] / 60, r["val_bleu"]) for r in rows if "val_bleu" in r]
        if bleu:
            ax_bleu.plot(*zip(*bleu), **style)
    ax_loss.set(xlabel="minutes", ylabel="validation loss (nats / target token)", title="validation loss")
    ax_bleu.set(xlabel="minutes", ylabel="validation BLEU (greedy)", title="validation BLEU (Multi30k val)")
    for ax in (ax_loss, ax_bleu):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    save_figure(fig, path)
    return f"{len(runs)} runs"


def translation_figure(data: Path, path: Path) -> str:
    root = data / "translation"
    runs = sorted((RunDir(d) for d in root.iterdir() if RunDir(d).metrics.is_file()), key=lambda r: r.root.name)
    return draw_translation(runs, path)


# PNG name (under --out) -> the function that draws it from --data
FIGURES: dict[str, Callable[[Path, Path], str]] = {
    "hour_milestones.png": hour_figure,
    "ablations.png": ablations_figure,
    "resample_zero_shot.png": resample_figure,
    "progressive_hour.png": progressive_figure,
    "inference_speedup.png": inference_figure,
    "translation_curves.png": translation_figure,
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DOCS / "data", help="the committed data (default docs/data)")
    p.add_argument("--out", type=Path, default=DOCS, help="where the PNGs go (default docs)")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, draw in FIGURES.items():
        path = args.out / name
        what = draw(args.data, path)
        print(f"wrote {path} ({what})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
