"""benchmarks/search.py: an Optuna study over recipe options that resumes from its storage."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("optuna")  # in the test extra; the search itself says how to install it

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "search.py"
TINY = [
    "model.embed_dim=16",
    "model.depth=1",
    "data.batch_size=64",
    "data.workers=0",
    "optim.epochs=1",
    "optim.warmup_epochs=0.2",
    "run.progress=false",
    "run.tensorboard=false",
]


@pytest.fixture(scope="module")
def search():
    spec = importlib.util.spec_from_file_location("search_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(SCRIPT.parent))
    yield module
    sys.modules.pop(spec.name, None)


def test_parameters_parse_and_malformed_ones_are_named(search):
    assert search.parse_param("optim.lr=log:0.001:0.1") == search.Param("optim.lr", "log", (0.001, 0.1))
    assert search.parse_param("model.depth=int:2:8:2") == search.Param("model.depth", "int", (2, 8, 2))
    assert search.parse_param("optim.sched=choice:cosine, linear").args == ("cosine", "linear")
    for bad, why in (
        ("optim.lr", "expected KEY="),
        ("optim.lr=gauss:0:1", "expected KEY="),
        ("optim.lr=float:0.1:0.01", "LOW < HIGH"),
        ("optim.lr=log:0:1", "LOW > 0"),
        ("optim.lr=float:a:1", "must be floats"),
        ("model.depth=int:1:4:1:1", "LOW < HIGH"),
        ("optim.sched=choice:cosine", "at least two"),
    ):
        with pytest.raises(SystemExit, match=f"error: --param .*{why}"):
            search.parse_param(bad)
    assert search.override("optim.lr", 0.1 + 0.2) == "optim.lr=0.30000000000000004"  # read back exactly


def test_a_study_trains_its_trials_and_resumes_from_its_storage(search, tmp_path, capsys):
    out = tmp_path / "s"
    argv = [
        "--recipe",
        "digits",
        "--out",
        str(out),
        "--set",
        *TINY,
        "--param",
        "optim.lr=log:0.001:0.01",
        "--param",
        "data.label_smoothing=choice:0.0,0.1",
    ]
    assert search.main([*argv, "--trials", "2"]) == 0
    assert capsys.readouterr().out.count("=== trial") == 2
    assert search.main([*argv, "--trials", "3"]) == 0
    printed = capsys.readouterr().out
    assert "=== trial 2:" in printed and "=== trial 0:" not in printed  # the first two came from study.db
    result = json.loads((out / "search.json").read_text())
    assert [t["number"] for t in result["trials"]] == [0, 1, 2]
    for t in result["trials"]:
        summary = json.loads((Path(t["run_dir"]) / "summary.json").read_text())
        assert t["value"] == summary["best_val_top1"]
        assert 0.001 <= t["params"]["optim.lr"] <= 0.01 and t["params"]["data.label_smoothing"] in ("0.0", "0.1")
        config = (Path(t["run_dir"]) / "config.yaml").read_text()
        assert f"lr: {t['params']['optim.lr']}" in config  # the drawn value is what trained
    table = (out / "search.md").read_text()
    best = max(result["trials"], key=lambda t: t["value"])
    assert f"Best: trial {best['number']}" in table and table.count("\n| ") == 4  # header + 3 trials
    assert (out / "search.png").stat().st_size > 0


def test_bad_keys_and_stale_trial_directories_are_errors(search, tmp_path):
    base = ["--recipe", "digits", "--set", *TINY, "--trials", "1"]
    with pytest.raises(SystemExit, match=r"error: --param optim\.lrr=float.*optim\.lrr"):
        search.main([*base, "--out", str(tmp_path / "a"), "--param", "optim.lrr=float:0.1:0.2"])
    (tmp_path / "b" / "search-trial-0000").mkdir(parents=True)
    with pytest.raises(SystemExit, match="search-trial-0000 exists but study 'search' has no finished trial 0"):
        search.main([*base, "--out", str(tmp_path / "b"), "--param", "optim.lr=float:0.001:0.01"])
