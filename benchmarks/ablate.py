"""The paper's design table (Table 3 / Appendix A) at CPU scale: train every ablation row of ResMLP with one
recipe, seed(s) and budget, and write a Markdown table (params, GFLOPs, images/s, top-1) and a bar chart.

    python benchmarks/ablate.py --data /tmp/data/cifar10/train --epochs 2 --seeds 0 1 --out runs/ablate

Each row changes one option of the recipe's model (`model.norm`, `model.token_mixing`, `model.pooling`,
`model.act`, `model.patch_size`); `--rows baseline,none,mlp` picks some. Runs go one after the other through
the study runner (benchmarks/study.py): OUT/ROW-sSEED are run directories, reused when finished and resumed
when stopped, so an interrupted table continues. `--per-class K` trains on a fixed subset (the first K images
of each class, as symlinks under OUT/data) for quick tables. Writes OUT/ablations.md, OUT/ablations.png,
OUT/ablations.json and OUT/ablations_curves.png (each row's top-1 after every epoch against the baseline's).
`--ledger FILE` keeps what each finished run measured in a committed JSON file: a run it holds is not trained
again, so a table that takes several sessions grows from machine to machine.

The rows train with the paper's inits; `--set model.token_mixing_init=local model.stem_init=pca` gives the table
with the recipe's levers on (its own `--ledger`). A token-mixing init shapes linear A only: the rows that replace A
(`none`, `mlp`, the convolutions) keep their layer's own init and take the PCA stem.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from common import code_commit, cpu_model, folder_data, override_text, read_curve
from matplotlib.figure import Figure
from study import Ledger, Study, markdown_table, write_report

from resmlp.config import Override, load_config
from resmlp.models import count_macs, count_params, create_model
from resmlp.train.wiring import model_arguments


@dataclass(frozen=True)
class Row:
    name: str
    group: str
    overrides: tuple[str, ...]
    paper: str  # the paper's Table 3 result for this row (ResMLP-S12, ImageNet)


# `paper`: what the paper reports for the row where this project has the number on record (issue 13 quotes
# Table 3's "none" row and the conv3x3 / MLP / linear relation); "" where it does not.
ROWS = [
    Row("baseline", "baseline", (), "reference row"),
    Row("layernorm", "norm", ("model.norm=layernorm",), ""),
    Row("batchnorm", "norm", ("model.norm=batchnorm",), ""),
    Row("none", "token mixing", ("model.token_mixing=none",), "56.5: far below every mixing layer"),
    Row("mlp", "token mixing", ("model.token_mixing=mlp",), "~ conv3x3 ~ linear + 0.7"),
    Row("conv3x3", "token mixing", ("model.token_mixing=conv3x3",), "~ MLP ~ linear + 0.7"),
    Row("depthwise", "token mixing", ("model.token_mixing=conv3x3_depthwise",), ""),
    Row("separable", "token mixing", ("model.token_mixing=conv3x3_separable",), ""),
    Row("class_mlp", "pooling", ("model.pooling=class_mlp",), ""),
    Row("silu", "activation", ("model.act=silu",), ""),
    Row("hardswish", "activation", ("model.act=hardswish",), ""),
    Row("relu", "activation", ("model.act=relu",), ""),
    Row("patch8", "patch size", ("model.patch_size=8",), ""),
    Row("patch2", "patch size", ("model.patch_size=2",), ""),
]


def own_mixing_init(row: Row, common: Sequence[Override]) -> Row:
    """`row`, plus `model.token_mixing_init=default` where it replaces linear A while `common` sets another init
    (the levers-on table's `local`): the token-mixing inits (`models.init`) shape A alone, and the layer that
    replaces it keeps its own."""
    texts = [override_text(o) for o in [*common, *row.overrides]]
    inits = [t.split("=", 1)[1] for t in texts if t.startswith("model.token_mixing_init=")]
    mixing = [t.split("=", 1)[1] for t in texts if t.startswith("model.token_mixing=")]
    if not inits or inits[-1] == "default" or not mixing or mixing[-1] == "linear":
        return row
    return dataclasses.replace(row, overrides=(*row.overrides, "model.token_mixing_init=default"))


def subset_folder(root: Path, per_class: int, out: Path) -> Path:
    """OUT/data/<class>/ holding symlinks to the first `per_class` files (sorted) of each class of `root`."""
    for cls in sorted(p for p in root.iterdir() if p.is_dir()):
        target = out / cls.name
        target.mkdir(parents=True, exist_ok=True)
        for f in sorted(cls.iterdir())[:per_class]:
            link = target / f.name
            if not link.exists():
                link.symlink_to(f.resolve())
    return out


def cost(recipe: str, overrides: Sequence[Override]) -> tuple[int, float]:
    """(parameters, GFLOPs = multiply-adds of one image) of the model a run with `overrides` trains."""
    cfg = load_config(recipe, overrides)
    args = model_arguments(cfg.model)
    with torch.device("meta"):
        model = create_model(cfg.model.name, **args)
    size = args["img_size"]
    return count_params(model), count_macs(model, (1, args.get("in_chans", 3), size, size)) / 1e9


def standard_error(values: Sequence[float]) -> float | None:
    """Standard error of the mean of the seeds' top-1 (sample standard deviation / sqrt(n)); None for one seed."""
    return statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else None


def verdict(row: Sequence[float], base: Sequence[float]) -> str:
    """Whether a row's mean differs from the baseline's beyond two standard errors of the difference
    (sqrt(se_row^2 + se_base^2)): `resolved`, `unresolved`, or `one seed` when either has a single seed."""
    se_row, se_base = standard_error(row), standard_error(base)
    if se_row is None or se_base is None:
        return "one seed"
    diff = statistics.mean(row) - statistics.mean(base)
    return "resolved" if abs(diff) > 2 * (se_row**2 + se_base**2) ** 0.5 else "unresolved"


def markdown(results: list[dict], study: Study, machine: str) -> str:
    base = results[0]
    head = [
        "group",
        "row",
        "params (M)",
        "GFLOPs",
        "images/s",
        "top-1 mean ± se",
        "per seed",
        "vs baseline",
        "beyond 2 se?",
        "the paper (S12, ImageNet)",
    ]
    rows = []
    for r in results:
        se = standard_error(r["per_seed"])
        rows.append(
            [
                r["group"],
                f"`{r['name']}`",
                f"{r['params'] / 1e6:.3f}",
                f"{r['gflops']:.3f}",
                f"{r['images_per_s']:.0f}" if r["images_per_s"] else "-",
                f"{r['top1']:.2f}" + (f" ± {se:.2f}" if se is not None else ""),
                " / ".join(f"{t:.2f}" for t in r["per_seed"]),
                f"{r['top1'] - base['top1']:+.2f}",
                "-" if r is base else verdict(r["per_seed"], base["per_seed"]),
                r["paper"] or "-",
            ]
        )
    lines = [study.heading(machine), "", *markdown_table(head, rows), ""]
    lines.append(
        "top-1: best validation top-1 (%), mean over the seeds ± its standard error; a difference from the baseline "
        "counts as resolved only beyond two standard errors of the difference; images/s: training throughput of "
        "the run (noisy when other jobs share the CPU)."
    )
    return "\n".join(lines) + "\n"


def bar_chart(results: list[dict], path: Path) -> None:
    fig = Figure(figsize=(8, 4.2))
    ax = fig.add_subplot()
    groups = list(dict.fromkeys(r["group"] for r in results))
    xs = range(len(results))
    ax.bar(xs, [r["top1"] for r in results], color=[f"C{groups.index(r['group'])}" for r in results])
    for x, r in zip(xs, results):
        ax.plot([x] * len(r["per_seed"]), r["per_seed"], "k.", ms=4)
    ax.axhline(results[0]["top1"], color="grey", lw=0.8, ls="--")
    ax.set_xticks(list(xs), [r["name"] for r in results], rotation=45, ha="right", fontsize=8)
    low = min(min(r["per_seed"]) for r in results)
    ax.set(
        ylabel="validation top-1 (%)",
        ylim=(max(0.0, low - 5), None),
        title="ResMLP design choices at CPU scale (bars: mean, dots: seeds)",
    )
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def mean_curve(curves: Sequence[Sequence[float]]) -> list[float]:
    """The seeds' curves averaged epoch by epoch, over the epochs every curve has."""
    length = min(len(c) for c in curves)
    return [statistics.mean(c[i] for c in curves) for i in range(length)]


def curve_chart(results: list[dict], path: Path) -> None:
    """Top-1 after each epoch (mean over the seeds with a recorded curve), one panel per group, each against the
    baseline: where a row's gap opens or closes over the budget (a design that only starts slower, or one that
    ends lower)."""
    base = results[0]
    groups = [g for g in dict.fromkeys(r["group"] for r in results) if g != base["group"]]
    cols = min(3, max(1, len(groups)))
    rows = max(1, -(-len(groups) // cols))
    fig = Figure(figsize=(4.2 * cols, 3.2 * rows))
    for k, group in enumerate(groups or [base["group"]]):
        ax = fig.add_subplot(rows, cols, k + 1)
        for i, r in enumerate([base] + [r for r in results if r["group"] == group]):
            if not r["curves"]:
                continue
            curve = mean_curve(r["curves"])
            style = {"color": "grey", "ls": "--"} if r is base else {"color": f"C{i}"}
            label = f"{r['name']} ({len(r['curves'])} seed{'s' if len(r['curves']) > 1 else ''})"
            ax.plot(range(1, len(curve) + 1), curve, lw=1.3, label=label, **style)
        ax.set(title=group, xlabel="epoch", ylabel="validation top-1 (%)")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
        else:  # rows kept only as results (their run directories gone) have no curve
            ax.text(0.5, 0.5, "no curve recorded", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", default="cifar10_cpu")
    p.add_argument("--data", required=True, help="image folder with one sub-folder per class")
    p.add_argument("--per-class", type=int, default=None, help="train on the first K images of each class")
    p.add_argument("--epochs", type=int, default=None, help="epochs per run")
    p.add_argument("--minutes", type=float, default=None, help="wall-clock budget per run instead")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--rows", default=None, help=f"comma-separated subset of: {', '.join(r.name for r in ROWS)}")
    p.add_argument("--set", dest="common", nargs="+", default=[], help="overrides for every row")
    p.add_argument("--out", required=True)
    p.add_argument(
        "--ledger",
        default=None,
        help="JSON record of finished runs (e.g. benchmarks/records/table3.json): runs it holds are not trained "
        "again, new ones are added; commit it so the table grows across machines",
    )
    p.add_argument(
        "--only-finished",
        action="store_true",
        help="train nothing: tabulate the runs under OUT that have finished (seeds may differ by row)",
    )
    args = p.parse_args(argv)

    rows = ROWS
    if args.rows:
        wanted = args.rows.split(",")
        unknown = sorted(set(wanted) - {r.name for r in ROWS})
        if unknown:
            raise SystemExit(
                f"error: --rows: unknown {', '.join(unknown)}; choose from {', '.join(r.name for r in ROWS)}"
            )
        rows = [r for r in ROWS if r.name in wanted]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = Path(args.data)
    if not data.is_dir():
        raise SystemExit(f"error: --data {data}: not a folder")
    if args.per_class:
        data = subset_folder(data, args.per_class, out / "data")
    # The ablation compares architectures as the paper does: its baseline row (linear A, whatever the recipe's
    # student mixes patches with), the paper's inits, none of the issue-11 levers, no teacher.
    common: list[Override] = [
        *folder_data(data),
        "model.token_mixing=linear",
        "model.token_mixing_init=default",
        "model.stem_init=default",
        "distill.teacher=none",
        *args.common,
    ]
    if args.epochs is not None:
        common.append(("optim.epochs", args.epochs))
    if args.minutes is not None:
        common += [("budget.time_limit_min", args.minutes), ("budget.fit_to_time_limit", True)]
    study = Study(args.recipe, out, common)
    ledger = None
    if args.ledger:
        setting = {
            "recipe": args.recipe,
            "common": [override_text(o) for o in common if not override_text(o).startswith("data.path=")],
            "per_class": args.per_class,
        }
        ledger = Ledger(Path(args.ledger), setting)
    results = []
    for row in [own_mixing_init(r, common) for r in rows]:
        records = seed_records(study, ledger, row, args.seeds, only_finished=args.only_finished)
        if not records:
            continue
        per_seed = [r["top1"] for r in records.values()]
        params, gflops = cost(args.recipe, [*common, *row.overrides])
        results.append(
            {
                "name": row.name,
                "group": row.group,
                "overrides": list(row.overrides),
                "paper": row.paper,
                "params": params,
                "gflops": gflops,
                "images_per_s": statistics.median(speeds) if (speeds := row_speeds(records)) else None,
                "top1": statistics.mean(per_seed),
                "per_seed": per_seed,
                "seeds": list(records),
                "curves": [r["curve"] for r in records.values() if r.get("curve")],
            }
        )
        report(out, results, study)  # the partial table, current after every row
    if not results:
        print(f"no finished rows under {out} yet: nothing to tabulate")
    return 0


def row_speeds(records: dict[int, dict]) -> list[float]:
    """The training images/s of a row's runs, where recorded (a run kept only as a result on the results page
    has none)."""
    return [r["images_per_s"] for r in records.values() if r.get("images_per_s")]


def seed_records(
    study: Study, ledger: Ledger | None, row: Row, seeds: Sequence[int], *, only_finished: bool
) -> dict[int, dict]:
    """seed -> what the row's run with that seed measured: from the ledger when it holds the run, else from the
    run under OUT (trained first unless `only_finished`), then recorded in the ledger."""
    records = {}
    for seed in seeds:
        name = study.run_name(row.name, seed)
        record = ledger.get(name) if ledger is not None else None
        if record is not None:
            print(f"{name}: recorded in {ledger.path} ({record['top1']:.2f} %), not trained again", flush=True)
        else:
            summary = study.seeds(row.name, row.overrides, [seed], only_finished=only_finished).get(seed)
            if summary is None:
                continue
            record = run_record(study.out / name, summary)
            if ledger is not None:
                ledger.put(name, record)
        records[seed] = record
    return records


def run_record(run_dir: Path, summary: dict) -> dict:
    """What a finished run measured, as the ledger keeps it: best and final validation top-1, the curve (top-1
    after each evaluated epoch), training images/s, wall minutes, the CPU, the date and the code's commit."""
    curve = [round(t, 4) for _, t in read_curve(run_dir)]
    return {
        "top1": max(curve),
        "final_top1": curve[-1],
        "curve": curve,
        "images_per_s": round(summary["train_images_per_s"], 1),
        "minutes": round(summary["wall_time_s"] / 60, 2),
        "cpu": cpu_model(),
        "date": time.strftime("%Y-%m-%d"),
        "commit": code_commit(),
    }


def report(out: Path, results: list[dict], study: Study) -> None:
    """OUT/ablations.md, .png and .json from the rows finished so far."""
    write_report(
        out,
        "ablations",
        markdown(results, study, cpu_model()),
        lambda path: bar_chart(results, path),
        study.record(results=results),
    )
    curve_chart(results, out / "ablations_curves.png")
    print(f"wrote {out / 'ablations_curves.png'}")


if __name__ == "__main__":
    sys.exit(main())
