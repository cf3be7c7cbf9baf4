"""Distillation study on CIFAR-10: train the convnet teacher, then the CPU ResMLP student for the same
number of epochs without distillation, with hard and with soft distillation.

    python benchmarks/bench_distill.py --data /tmp/cifar10/train --out /tmp/distill \
        --teacher-minutes 10 --student-epochs 3

Prints a markdown table (teacher accuracy, student accuracy with/without, wall time, teacher time) for
docs/benchmarks.md and writes it to OUT/distill.md. Runs go through the study runner (benchmarks/study.py):
OUT/teacher and OUT/student<i> are run directories, reused when finished.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from study import Study, markdown_table

from resmlp.cli.train import data_overrides
from resmlp.rundir import RunDir


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--teacher-minutes", type=float, default=10)
    ap.add_argument("--student-epochs", type=int, default=3)
    ap.add_argument("--teacher-recipe", default="cifar10_teacher")
    ap.add_argument("--student-recipe", default="cifar10_cpu")
    ap.add_argument("--alpha", type=float, default=0.5)
    ap.add_argument("--tau", type=float, default=1.0)
    ap.add_argument("--set", dest="common", nargs="+", default=[], help="overrides for every run, teacher too")
    args = ap.parse_args(argv)
    out = Path(args.out)
    data = [*data_overrides(args.data, None, None), ("run.progress", False)]
    teacher_budget = [("budget.time_limit_min", args.teacher_minutes), ("budget.fit_to_time_limit", True)]
    teacher_dir = out / "teacher"
    teacher = Study(args.teacher_recipe, out, [*data, *teacher_budget, *args.common]).run(teacher_dir.name)
    student = [
        *data,
        ("optim.epochs", args.student_epochs),
        ("budget.time_limit_min", None),
        ("budget.fit_to_time_limit", False),
        *args.common,
    ]
    distill = [("distill.teacher", str(teacher_dir)), ("distill.alpha", args.alpha)]
    variants = {
        "no distillation": [],
        f"hard (alpha {args.alpha})": [*distill, ("distill.kind", "hard")],
        f"soft (alpha {args.alpha}, tau {args.tau})": [*distill, ("distill.kind", "soft"), ("distill.tau", args.tau)],
    }
    runs = Study(args.student_recipe, out, student).run_all(
        {f"student{i}": extra for i, extra in enumerate(variants.values())}
    )
    rows = []
    for name, (run, s) in zip(variants, runs.items()):
        t_time = sum(r.get("teacher_time_s", 0.0) for r in RunDir(out / run).read_metrics())
        rows.append(
            [
                name,
                f"{s['final_val_top1']:.2f}%",
                f"{s['best_val_top1']:.2f}%",
                f"{s['wall_time_s'] / 60:.1f}",
                f"{t_time / 60:.1f}",
            ]
        )
    head = [
        f"student ({args.student_recipe}, {args.student_epochs} epochs)",
        "final val top-1",
        "best val top-1",
        "wall time (min)",
        "of which teacher (min)",
    ]
    lines = [
        f"Teacher `{teacher['model']}`: best val top-1 {teacher['best_val_top1']:.2f}% after "
        f"{teacher['epochs']} epochs, {teacher['wall_time_s'] / 60:.1f} min.",
        "",
        *markdown_table(head, rows),
    ]
    text = "\n".join(lines)
    (out / "distill.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
