"""benchmarks/figures.py: every PNG the docs show is redrawn from the committed docs/data, so none can rot."""

import importlib.util
import json
import re
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
SCRIPT = ROOT / "benchmarks" / "figures.py"
IMAGE = re.compile(r"!\[[^\]]*\]\(([^)\s]+\.png)\)")


@pytest.fixture(scope="module")
def figures():
    spec = importlib.util.spec_from_file_location("figures_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def referenced_pngs() -> set[Path]:
    """Every `![...](x.png)` of README.md and docs/*.md, as a path relative to docs/."""
    refs = set()
    for md in [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]:
        for link in IMAGE.findall(md.read_text(encoding="utf-8")):
            path = (md.parent / link).resolve()
            assert DOCS in path.parents, f"{md.name}: {link} is not under docs/"
            refs.add(path.relative_to(DOCS))
    return refs


def test_every_png_the_docs_show_is_drawn_from_the_committed_data(figures, tmp_path, capsys):
    refs = referenced_pngs()
    assert refs, "no image links found in the docs"
    assert figures.main(["--data", str(DOCS / "data"), "--out", str(tmp_path)]) == 0
    drawn = {p.relative_to(tmp_path) for p in tmp_path.rglob("*.png")}
    assert refs <= drawn, f"referenced but not drawn by benchmarks/figures.py: {sorted(map(str, refs - drawn))}"
    out = capsys.readouterr().out
    assert all(str(tmp_path / name) in out for name in figures.FIGURES)


def test_a_committed_run_gets_its_per_epoch_curve(figures, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(DOCS / "data", data, ignore=shutil.ignore_patterns("runs"))  # only the run written here
    run = data / "runs" / "demo-s0"
    (run / "teacher").mkdir(parents=True)
    (run / "teacher" / "metrics.jsonl").write_text(
        "".join(json.dumps({"epoch": e, "val_top1": 60.0 + 5 * e, "wall_time_s": 200.0 * e}) + "\n" for e in (1, 2))
    )
    (run / "metrics.jsonl").write_text(
        "".join(json.dumps({"epoch": e, "val_top1": 50.0 + 10 * e, "wall_time_s": 600.0 * e}) + "\n" for e in (1, 2, 3))
    )
    (run / "summary.json").write_text(json.dumps({"teacher_wall_time_s": 400.0, "final_val_top1_tta": 81.0}))
    assert figures.main(["--data", str(data), "--out", str(tmp_path / "out")]) == 0
    assert "per-epoch curves of 1 committed run(s)" in capsys.readouterr().out
    assert [r.root.name for r in figures.committed_runs(data)] == ["demo-s0"]
    curve = figures.run_curve(figures.RunDir(run), 400.0)  # minutes of the hour: the teacher's 400 s come first
    assert [m for m, _ in curve] == pytest.approx([1000 / 60, 1600 / 60, 2200 / 60])
    assert [t for _, t in curve] == [60.0, 70.0, 80.0]
