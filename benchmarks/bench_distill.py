"""Distillation study on CIFAR-10: train the convnet teacher, then the CPU ResMLP student for the same
number of epochs without distillation, with hard and with soft distillation.

    python benchmarks/bench_distill.py --data /tmp/cifar10/train --out /tmp/distill \
        --teacher-minutes 10 --student-epochs 3

Prints a markdown table (teacher accuracy, student accuracy with/without, wall time, teacher time) for
docs/benchmarks.md and writes it to OUT/distill.md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from resmlp.cli.train import data_overrides
from resmlp.config import load_config
from resmlp.train.run import train


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--teacher-minutes", type=float, default=10)
    ap.add_argument("--student-epochs", type=int, default=3)
    ap.add_argument("--student-recipe", default="cifar10_cpu")
    ap.add_argument("--alpha", type=float, default=0.5)
    ap.add_argument("--tau", type=float, default=1.0)
    args = ap.parse_args()
    out = Path(args.out)
    data = data_overrides(args.data, None, None) + ["run.progress=false"]
    teacher_dir = out / "teacher"
    if not (teacher_dir / "summary.json").exists():
        train(
            load_config(
                "cifar10_teacher", data + [f"run.time_limit_min={args.teacher_minutes}", "run.fit_to_time_limit=true"]
            ),
            out=teacher_dir,
        )
    teacher = json.loads((teacher_dir / "summary.json").read_text())
    student = data + [f"optim.epochs={args.student_epochs}", "run.time_limit_min=null", "run.fit_to_time_limit=false"]
    variants = {
        "no distillation": [],
        f"hard (alpha {args.alpha})": [
            f"distill.teacher={teacher_dir}",
            "distill.kind=hard",
            f"distill.alpha={args.alpha}",
        ],
        f"soft (alpha {args.alpha}, tau {args.tau})": [
            f"distill.teacher={teacher_dir}",
            "distill.kind=soft",
            f"distill.alpha={args.alpha}",
            f"distill.tau={args.tau}",
        ],
    }
    rows = []
    for i, (name, extra) in enumerate(variants.items()):
        run_dir = out / f"student{i}"
        if not (run_dir / "summary.json").exists():
            train(load_config(args.student_recipe, student + extra), out=run_dir)
        s = json.loads((run_dir / "summary.json").read_text())
        t_time = sum(r.get("teacher_time_s", 0.0) for r in metrics(run_dir))
        rows.append((name, s["final_val_top1"], s["best_val_top1"], s["wall_time_s"] / 60, t_time / 60))
    lines = [
        f"Teacher `{teacher['model']}`: best val top-1 {teacher['best_val_top1']:.2f}% after "
        f"{teacher['epochs']} epochs, {teacher['wall_time_s'] / 60:.1f} min.",
        "",
        f"| student ({args.student_recipe}, {args.student_epochs} epochs) | final val top-1 | best val top-1 | "
        "wall time (min) | of which teacher (min) |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| {n} | {f:.2f}% | {b:.2f}% | {w:.1f} | {t:.1f} |" for n, f, b, w, t in rows]
    text = "\n".join(lines)
    (out / "distill.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
