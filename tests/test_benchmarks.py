"""Smoke runs of the benchmark scripts (benchmarks/*.py, all but figures.py), in process, on tiny data: the bundled
`digits` recipe shrunk to one epoch of a one-block model, on images this file writes under a path that holds
'#', ':' and a space. A script that no longer runs fails here instead of on the next real benchmark."""

from __future__ import annotations

import importlib
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import resmlp
import resmlp.train.losses as losses
from resmlp.rundir import RunDir

pytestmark = pytest.mark.slow

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
NOT_SCRIPTS = {"figures", "common", "study"}  # figures.py has its own tests; the other two are the shared library
TINY = [
    "model.embed_dim=16",
    "model.depth=1",
    "data.batch_size=8",
    "data.workers=0",
    "optim.epochs=1",
    "optim.warmup_epochs=0.2",
    "run.progress=false",
    "run.tensorboard=false",
]
NO_BUDGET = ["budget.time_limit_min=null", "budget.fit_to_time_limit=false"]


@pytest.fixture(scope="module")
def script():
    """benchmarks/<name>.py as a module, imported with benchmarks/ on sys.path (as `python benchmarks/x.py` has
    it), so its sibling imports (`from common import ...`) resolve; the modules are dropped afterwards."""
    before = set(sys.modules)
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(BENCH))
        yield importlib.import_module
    for name in set(sys.modules) - before:
        if getattr(sys.modules[name], "__file__", None) and Path(sys.modules[name].__file__).parent == BENCH:
            del sys.modules[name]


def write_images(root: Path, classes: int = 3, per_class: int = 10, size: int = 16) -> Path:
    rng = np.random.default_rng(0)
    for c in range(classes):
        (root / f"c{c}").mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(root / f"c{c}" / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    return write_images(tmp_path_factory.mktemp("data") / "set #1: x")


@pytest.fixture(scope="module")
def swept(script, images, tmp_path_factory) -> tuple[Path, list[str]]:
    """A two-variant sweep of one epoch each; (OUT, its arguments)."""
    out = tmp_path_factory.mktemp("sweep")
    argv = ["--recipe", "digits", "--data", str(images), "--out", str(out), "--epochs", "1", "--set", *TINY]
    argv += ["--variant", "baseline:", "--variant", "ls0: data.label_smoothing=0.0"]
    assert script("sweep").main(argv) == 0
    return out, argv


@pytest.fixture(scope="module")
def run_dir(swept) -> Path:
    """A finished run: the sweep's first variant."""
    return swept[0] / "baseline-s0"


def test_every_script_has_a_smoke_run():
    here = Path(__file__).read_text() + (Path(__file__).parent / "test_search.py").read_text()
    scripts = sorted(p.stem for p in BENCH.glob("*.py") if p.stem not in NOT_SCRIPTS)
    assert [s for s in scripts if f'"{s}"' not in here and f"benchmarks/{s}.py" not in here] == []


def test_sweep_tabulates_its_variants_and_resumes(script, swept, capsys):
    out, argv = swept
    result = json.loads((out / "sweep.json").read_text())
    assert [r["name"] for r in result["results"]] == ["baseline", "ls0"]
    assert "optim.epochs=1" in result["common"] and result["cpu"]
    for r in result["results"]:
        summary = RunDir(out / f"{r['name']}-s0").read_summary()
        assert r["best_val_top1"] == summary["best_val_top1"] and len(r["curves"][0]) == 1
    table = (out / "sweep.md").read_text()
    assert table.count("\n| ") == 3 and "`data.label_smoothing=0.0`" in table and "`(recipe)`" in table
    assert (out / "sweep.png").stat().st_size > 0
    assert script("sweep").main(argv) == 0  # everything finished: nothing trains again
    printed = capsys.readouterr().out
    assert printed.count("done before, reusing its summary") == 2 and "resmlp_micro8 (" not in printed


def test_a_data_folder_whose_path_holds_a_hash_reaches_the_config_unchanged(swept, images):
    out, _ = swept
    assert "#" in str(images)
    for name in ("baseline-s0", "ls0-s0"):
        data = yaml.safe_load(RunDir(out / name).config.read_text())["data"]
        assert (data["source"], data["path"]) == ("folder", str(images))
    assert f"data.path={images}" in json.loads((out / "sweep.json").read_text())["common"]


def test_a_folder_holding_no_checkpoint_is_an_error(script, images, tmp_path):
    (tmp_path / "a-s0").mkdir()
    argv = ["--recipe", "digits", "--data", str(images), "--out", str(tmp_path), "--set", *TINY, "--variant", "a:"]
    with pytest.raises(SystemExit, match="a-s0 holds a run without a checkpoint"):
        script("sweep").main(argv)


def test_a_run_killed_before_its_first_checkpoint_starts_again(script, images, tmp_path, capsys):
    run = RunDir(tmp_path / "a-s0")  # what a run killed in its first epoch leaves: its config, no checkpoint
    run.checkpoints.mkdir(parents=True)
    run.config.write_text("model: {}\n")
    argv = ["--recipe", "digits", "--data", str(images), "--out", str(tmp_path), "--epochs", "1", "--set", *TINY]
    assert script("sweep").main([*argv, "--variant", "a:"]) == 0
    assert "a-s0: stopped before its first checkpoint, starting it again" in capsys.readouterr().out
    assert run.read_summary()["epochs"] == 1 and len(run.read_metrics()) == 1
    run.checkpoints.joinpath("last.pt").unlink()  # an epoch on record without its checkpoint: not started over
    run.checkpoints.joinpath("previous.pt").unlink(missing_ok=True)
    run.summary.unlink()
    with pytest.raises(SystemExit, match="a-s0 holds a run without a checkpoint"):
        script("sweep").main([*argv, "--variant", "a:"])


def test_a_run_stopped_by_a_signal_is_resumed_not_reused(script, swept, capsys):
    out, argv = swept
    run = RunDir(out / "ls0-s0")
    stopped = {**run.read_summary(), "stopped_by": "SIGTERM"}
    run.summary.write_text(json.dumps(stopped))
    capsys.readouterr()
    assert script("sweep").main(argv) == 0
    printed = capsys.readouterr().out
    assert f"{run.root}: stopped before, resuming it" in printed and printed.count("done before") == 1
    assert run.read_summary()["stopped_by"] is None


def test_a_stop_signal_stops_the_study_and_the_same_command_continues_it(script, images, tmp_path, monkeypatch):
    real, calls = losses.soft_target_cross_entropy, {"n": 0}

    def loss(logits, targets):  # SIGTERM from inside the second training step of the first run
        calls["n"] += 1
        if calls["n"] == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(logits, targets)

    argv = ["--recipe", "digits", "--data", str(images), "--out", str(tmp_path), "--set", *TINY, *NO_BUDGET]
    argv += ["--variant", "a:", "--variant", "b: data.label_smoothing=0.0"]
    monkeypatch.setattr(losses, "soft_target_cross_entropy", loss)
    with pytest.raises(SystemExit, match="a-s0: stopped by SIGTERM; run the same command to continue"):
        script("sweep").main(argv)
    assert not (tmp_path / "b-s0").exists()  # the study did not go on to the next run
    monkeypatch.undo()
    assert script("sweep").main(argv) == 0
    assert RunDir(tmp_path / "a-s0").read_summary()["stopped_by"] is None
    assert RunDir(tmp_path / "b-s0").read_summary() is not None


def test_ablate_tabulates_rows_and_only_finished_trains_nothing(script, images, tmp_path, capsys):
    base = ["--recipe", "digits", "--data", str(images), "--per-class", "6", "--epochs", "1", "--set", *TINY]
    base += ["--rows", "baseline,none", "--out", str(tmp_path)]
    assert script("ablate").main([*base, "--seeds", "0"]) == 0
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["c0", "c1", "c2"]
    assert len(list((tmp_path / "data" / "c0").iterdir())) == 6
    result = json.loads((tmp_path / "ablations.json").read_text())
    assert [(r["name"], r["seeds"]) for r in result["results"]] == [("baseline", [0]), ("none", [0])]
    assert result["results"][1]["params"] < result["results"][0]["params"]  # no token-mixing layer
    capsys.readouterr()
    assert script("ablate").main([*base, "--seeds", "0", "1", "--only-finished"]) == 0
    assert "=== baseline seed 1" not in capsys.readouterr().out
    assert (tmp_path / "ablations.md").read_text().count("\n| ") == 3
    assert (tmp_path / "ablations.png").stat().st_size > 0
    assert (tmp_path / "ablations_curves.png").stat().st_size > 0


def test_ablate_ledger_keeps_finished_runs_across_output_folders_and_refuses_another_setting(
    script, images, tmp_path, capsys
):
    """A table that takes several sessions: the ledger (committed) holds what each run measured, so a new
    machine with an empty OUT trains only the runs it lacks; a command with another budget is refused."""
    ledger = tmp_path / "records" / "table.json"
    base = ["--recipe", "digits", "--data", str(images), "--per-class", "6", "--epochs", "1", "--set", *TINY]
    base += ["--rows", "baseline,none", "--ledger", str(ledger)]
    assert script("ablate").main([*base, "--seeds", "0", "--out", str(tmp_path / "a")]) == 0
    kept = json.loads(ledger.read_text())
    assert sorted(kept["runs"]) == ["baseline-s0", "none-s0"]
    assert all(not t.startswith("data.path=") for t in kept["setting"]["common"])
    record = kept["runs"]["none-s0"]
    assert len(record["curve"]) == 1 and record["top1"] == record["final_top1"] == record["curve"][0]
    assert record["images_per_s"] > 0 and record["cpu"] == script("common").cpu_model() and "commit" in record
    first = json.loads((tmp_path / "a" / "ablations.json").read_text())["results"]
    capsys.readouterr()
    assert script("ablate").main([*base, "--seeds", "0", "1", "--out", str(tmp_path / "b")]) == 0
    out = capsys.readouterr().out
    assert "baseline-s0: recorded in" in out and "=== baseline seed 0" not in out
    assert "=== baseline seed 1" in out  # only the run the ledger lacks is trained
    assert not (tmp_path / "b" / "baseline-s0").exists()
    second = json.loads((tmp_path / "b" / "ablations.json").read_text())["results"]
    assert [r["per_seed"][0] for r in second] == [r["per_seed"][0] for r in first]
    assert sorted(json.loads(ledger.read_text())["runs"]) == ["baseline-s0", "baseline-s1", "none-s0", "none-s1"]
    other = [a if a != "1" else "2" for a in base]  # --epochs 2
    with pytest.raises(SystemExit, match=r"error: --ledger .*table.json: recorded with .*name another ledger"):
        script("ablate").main([*other, "--seeds", "0", "--out", str(tmp_path / "c")])


def test_cpu_model_names_the_family_model_and_matrix_unit(script, tmp_path):
    """Two Xeon kinds share one model name and differ (one gives NaN gradients compiled): the results page's
    hardware column tells them apart."""
    info = tmp_path / "cpuinfo"
    info.write_text(
        "processor\t: 0\nvendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: 207\n"
        "model name\t: Intel(R) Xeon(R) Processor\nflags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"
        "processor\t: 1\nmodel\t\t: 999\n"
    )
    assert script("common").cpu_model(info) == "Intel(R) Xeon(R) Processor (family 6 model 207, AMX)"
    info.write_text("model name\t: AMD EPYC\ncpu family\t: 25\nmodel\t\t: 1\nflags\t\t: fpu avx2\n")
    assert script("common").cpu_model(info) == "AMD EPYC (family 25 model 1, no AVX512)"


def test_ablate_trains_a_levers_on_table_past_the_rows_without_a(script, images, tmp_path):
    argv = ["--recipe", "digits", "--data", str(images), "--per-class", "4", "--epochs", "1", "--seeds", "0"]
    argv += ["--rows", "baseline,none", "--out", str(tmp_path), "--set", *TINY, "model.token_mixing_init=local"]
    assert script("ablate").main(argv) == 0
    result = json.loads((tmp_path / "ablations.json").read_text())
    assert [r["name"] for r in result["results"]] == ["baseline", "none"]


def test_ablate_baseline_is_linear_a_whatever_the_recipe_student_mixes_with(script, images, tmp_path):
    """Table 3's baseline row is the paper's linear A: a recipe whose student mixes patches with a convolution
    (cifar10_cpu's depthwise 3x3) does not change the row the table compares against."""
    recipe = tmp_path / "conv_student.yaml"
    bundled = Path(resmlp.__file__).parent / "recipes" / "digits.yaml"
    recipe.write_text(bundled.read_text().replace("model:\n", "model:\n  token_mixing: conv3x3_depthwise\n", 1))
    argv = ["--recipe", str(recipe), "--data", str(images), "--per-class", "4", "--epochs", "1", "--seeds", "0"]
    argv += ["--rows", "baseline,depthwise", "--out", str(tmp_path / "out"), "--set", *TINY]
    assert script("ablate").main(argv) == 0
    mixing = {
        row: yaml.safe_load((tmp_path / "out" / f"{row}-s0" / "config.yaml").read_text())["model"]["token_mixing"]
        for row in ("baseline", "depthwise")
    }
    assert mixing == {"baseline": "linear", "depthwise": "conv3x3_depthwise"}


def test_ablate_levers_on_leave_the_layers_that_replace_a_their_own_init(script):
    ablate = script("ablate")
    rows = {r.name: r for r in ablate.ROWS}
    levers = ["model.token_mixing_init=default", "model.token_mixing_init=local", "model.stem_init=pca"]
    for name in ("none", "mlp", "conv3x3", "depthwise", "separable"):
        assert ablate.own_mixing_init(rows[name], levers).overrides[-1] == "model.token_mixing_init=default"
    for name in ("baseline", "batchnorm", "patch8"):  # linear A: the local init applies
        assert ablate.own_mixing_init(rows[name], levers) == rows[name]
    paper = levers[:1]
    assert ablate.own_mixing_init(rows["conv3x3"], paper) == rows["conv3x3"]  # nothing to undo


def test_ablate_calls_a_difference_resolved_only_beyond_two_standard_errors(script):
    ablate = script("ablate")
    assert ablate.standard_error([80.0]) is None
    assert ablate.standard_error([80.0, 82.0, 84.0]) == pytest.approx(2.0 / 3**0.5)
    base = [80.0, 80.4, 79.6]  # se 0.23; the difference's se with an equal row: 0.33, so 2 se = 0.65
    assert ablate.verdict([80.8, 81.2, 80.4], base) == "resolved"  # +0.8
    assert ablate.verdict([80.5, 80.9, 80.1], base) == "unresolved"  # +0.5
    assert ablate.verdict([90.0], base) == "one seed"


def test_distill_trains_the_teacher_then_three_students(script, images, tmp_path, capsys):
    script("bench_distill").main(
        ["--data", str(images), "--out", str(tmp_path), "--teacher-recipe", "digits", "--student-recipe", "digits"]
        + ["--student-epochs", "1", "--set", *TINY, *NO_BUDGET]
    )
    table = (tmp_path / "distill.md").read_text()
    assert table.startswith("Teacher `resmlp_micro8`") and table.count("\n| ") == 4
    assert "| hard (alpha 0.5) |" in table and "| soft (alpha 0.5, tau 1.0) |" in table
    student = yaml.safe_load(RunDir(tmp_path / "student2").config.read_text())
    assert student["distill"]["teacher"] == str(tmp_path / "teacher") and student["distill"]["kind"] == "soft"


def test_resample_eval_scores_every_size_and_method(script, run_dir, images, tmp_path):
    argv = ["eval", "--run", str(run_dir), "--val-data", str(images), "--sizes", "8", "12", "--methods", "kernel"]
    script("bench_resample").main([*argv, "--out", str(tmp_path), "--threads", "1"])
    result = json.loads((tmp_path / "eval_threads1.json").read_text())
    assert [r["size"] for r in result["rows"]] == [8, 12] and result["count"] == 30
    assert result["rows"][0]["kernel"] == result["rows"][0]["resize"]  # the training size: nothing resampled


def test_resample_finetune_and_scratch_at_another_size(script, run_dir, images, tmp_path):
    argv = ["finetune", "--run", str(run_dir), "--data", str(images), "--val-data", str(images), "--size", "12"]
    script("bench_resample").main([*argv, "--out", str(tmp_path), "--threads", "1"])
    result = json.loads((tmp_path / "finetune_threads1.json").read_text())
    assert result["size"] == 12 and {"finetune", "scratch"} <= set(result)
    for name in ("finetune12", "scratch12"):
        assert yaml.safe_load(RunDir(tmp_path / name).config.read_text())["model"]["img_size"] == 12


def test_resample_steps_times_each_size(script, tmp_path):
    argv = ["steps", "--sizes", "8", "16", "--rounds", "1", "--steps", "1", "--embed-dim", "16", "--depth", "1"]
    script("bench_resample").main([*argv, "--out", str(tmp_path), "--threads", "1"])
    result = json.loads((tmp_path / "steps_threads1.json").read_text())
    assert [r["size"] for r in result["rows"]] == [8, 16] and result["rows"][1]["vs_largest"] == 1.0


def test_resample_compare(script, swept, tmp_path):
    out, _ = swept
    script("bench_resample").main(
        ["compare", "--fixed", str(out / "baseline-s0"), "--progressive", str(out / "ls0-s0")]
        + ["--out", str(tmp_path), "--threads", "1"]
    )
    result = json.loads((tmp_path / "compare_threads1.json").read_text())
    assert len(result["fixed"][0]) == 1 and result["command"] == "compare"
    assert (tmp_path / "compare.png").stat().st_size > 0


@pytest.mark.parametrize("name", ["bench_tta", "bench_tta_views", "fit_gap"])
def test_scores_of_a_finished_run_on_its_own_split(script, run_dir, name, capsys):
    extra = {"bench_tta": ["--views", "none", "flip"], "bench_tta_views": ["--sets", "none", "flip"]}
    script(name).main([str(run_dir), *extra.get(name, ["--train-images", "5"])])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    val_top1 = RunDir(run_dir).read_summary()["final_val_top1"]
    if name == "fit_gap":
        assert result["train"]["images"] == 5 and result["val"]["top1"] == pytest.approx(val_top1)
    else:
        top1 = result["results"]["none"]["top1" if name == "bench_tta" else "logits"]
        assert top1 == pytest.approx(val_top1) and set(result["results"]) == {"none", "flip"}


def test_inference_speed(script, tmp_path):
    argv = ["--model", "resmlp_micro8", "--batch", "2", "--precision", "fp32", "--runtime", "eager"]
    script("bench_inference").main([*argv, "--rounds", "1", "--seconds", "0.01", "--json", str(tmp_path / "r.json")])
    assert json.loads((tmp_path / "r.json").read_text())["speed"]["results"]


def bench_int8(argv: list[str]) -> str:
    """benchmarks/bench_int8.py run in its own interpreter (OpenVINO's and ONNX Runtime's thread pools, once both
    are loaded, crash a later in-process test that signals itself: test_fault_trials, SIGSEGV on the 2-core host);
    returns what it printed."""
    env = {**os.environ, "PYTHONPATH": str(BENCH.parent / "src"), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, str(BENCH / "bench_int8.py"), *argv], capture_output=True, text=True, env=env, timeout=600
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_int8_agreement_on_the_run_split_and_speed(run_dir, images):
    argv = ["--checkpoint", str(run_dir), "--data", str(images), "--calibration", "4", "--speed"]
    argv += ["--model", "resmlp_micro8", "--batch", "2", "--rounds", "1"]
    argv += ["--shapes", "2:0.5", "4:1", "4:1@6", "--embed-dim", "64", "--forms", "int8", "bf16", "int8+bf16+keep"]
    printed = bench_int8(argv)
    assert "validation: 6 images" in printed and "calibration (training part): 4 images" in printed
    # NNCF's presets and the recipe part by part (9), the --forms int8+bf16 and int8+A, then the --forms asked for
    assert printed.count("| OpenVINO: ") == 13 and printed.count("| ONNX Runtime: ") == 1
    assert printed.count("% |") == 2 * 14 and "| OpenVINO int8, resmlp's INT8_RECIPE |" in printed
    assert "INT8_RECIPE, the parts NNCF leaves in float run in bf16 (--forms int8+bf16) |" in printed
    assert "| OpenVINO: bf16, no int8 (--forms bf16) |" in printed
    kept = re.search(r"\(--forms int8\+bf16\+keep; stem and first block nodes in bf16: (\d+) of (\d+)\)", printed)
    assert kept and 0 < int(kept[2]), printed  # the marked nodes were found in the compiled graph
    assert "resmlp_micro8 {'embed_dim': 64}" in printed and "| 4 blocks, 100% " in printed
    assert "| whole, int8 | " in printed and "| whole, bf16 | " in printed
    assert "| 2 blocks, 50% of the hidden units, bf16 | " in printed and "| 1.00x |" in printed
    gflops = {line.split(" | ")[0]: float(line.split(" | ")[2]) for line in printed.splitlines() if " blocks, " in line}
    at_full_size = gflops["| 4 blocks, 100% of the hidden units, int8"]
    assert gflops["| 4 blocks, 100% of the hidden units, 6 px, int8"] < at_full_size


def test_bench_int8_form_names(script):
    bench = script("bench_int8")
    recipe = bench.INT8_RECIPE
    assert bench.parse_form("int8") == bench.Form(recipe)
    assert bench.parse_form("bf16@static") == bench.Form(None, "bf16", static=True)
    fc2 = bench.parse_form("int8+fc2+bf16@static")
    assert fc2.recipe.keep_float == ("stem", "head", "token_mixing", "first_fc1") and fc2.precision == "bf16"
    assert fc2.static and fc2.recipe.smooth == recipe.smooth
    assert bench.parse_form("int8+A+mlp0").recipe.keep_float == ("stem", "head")
    assert bench.parse_form("int8+bf16+keep").keep_rt and bench.parse_form("int8+bf16+split").front == "fp32"
    assert bench.parse_form("int8+front") == bench.Form(recipe, "fp32", front="bf16")
    bad_forms = [("int8+keep", r"add \+bf16"), ("int8+split", r"add \+bf16"), ("int8+bf16+front", "choose one")]
    bad_forms += [("fp16", "starts with int8"), ("int8@dyn", "only 'static'"), ("int8+B", "unknown option 'B'")]
    for bad, says in bad_forms:
        with pytest.raises(ValueError, match=says):
            bench.parse_form(bad)


def test_bench_int8_eager_baseline_and_static_forms():
    # --eager: the unfused fp32 model joins the rounds and every ratio is against it; @static fixes the batch axis
    argv = ["--model", "resmlp_micro8", "--batch", "2", "--rounds", "1", "--shapes", "2:1", "--embed-dim", "16"]
    argv += ["--eager", "--forms", "int8", "int8+fc2@static", "int8+bf16+split@static", "int8+front"]
    rows = {r.split(" | ")[0]: r for r in bench_int8(argv).splitlines() if r.startswith("| whole")}
    forms = ("int8", "int8+fc2@static", "int8+bf16+split@static", "int8+front", "fp32 eager (timm's computation)")
    assert set(rows) == {f"| whole, {form}" for form in forms}
    assert rows["| whole, fp32 eager (timm's computation)"].endswith("| 1.00x |")


SPLIT_CHECK = """
import torch, bench_int8 as bench
from resmlp.models import create_model
torch.manual_seed(0)
model = create_model("resmlp_micro8", num_classes=3, embed_dim=16, depth=3, layer_scale_init=0.5).eval()
x = torch.randn(5, 3, 8, 8)
front, rest = (bench.OpenVinoModel(part) for part in bench.split_after_first_block(bench.to_openvino(model)))
tokens = front(x)
with torch.no_grad():
    first = model.blocks[0](model.stem(x))
print(tokens.shape == first.transpose(0, 1).shape, (tokens.transpose(0, 1) - first).abs().max().item())
whole = bench.OpenVinoModel(bench.to_openvino(model))(x)
print((rest(tokens) - model(x)).abs().max().item(), (rest(tokens) - whole).abs().max().item())
"""


def test_bench_int8_split_halves_compose_to_the_whole_model():
    # +split: the stem and first block, then the rest fed their tokens, give the unsplit model's logits
    env = {**os.environ, "PYTHONPATH": f"{BENCH}:{BENCH.parent / 'src'}", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", SPLIT_CHECK], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    (same_shape, front_err), (eager_err, ov_err) = (line.split() for line in done.stdout.splitlines()[-2:])
    assert same_shape == "True" and float(front_err) < 1e-4  # the cut is after block 0, tokens as (N, B, D)
    assert float(eager_err) < 1e-4 and float(ov_err) < 1e-5


def test_bench_int8_times_each_token_mixing_side_by_side():
    # --token-mixing builds the whole model and its cuts once per mixing, all timed in the same interleaved rounds
    argv = ["--model", "resmlp_micro8", "--batch", "2", "--rounds", "1", "--shapes", "2:0.5", "--embed-dim", "32"]
    argv += ["--token-mixing", "linear", "conv3x3_depthwise"]
    lines = [line.split(" | ") for line in bench_int8(argv).splitlines() if line.startswith("| ") and ": " in line]
    rows = {row[0]: row for row in lines}
    cuts = ("whole", "2 blocks, 50% of the hidden units")
    assert set(rows) == {f"| {mixing}: {cut}" for mixing in ("linear", "conv3x3_depthwise") for cut in cuts}
    params = {name: int(row[1].replace(",", "")) for name, row in rows.items()}
    assert params["| conv3x3_depthwise: whole"] != params["| linear: whole"]  # two models, not one timed twice
    assert rows["| linear: whole"][-1].strip() == "1.00x |"


def test_bench_int8_times_each_width_side_by_side():
    # several --embed-dim: the whole model at each width, its parameters growing with the width, in the same rounds
    argv = ["--model", "resmlp_micro8", "--batch", "2", "--rounds", "1", "--shapes", "2:1", "--embed-dim", "16", "32"]
    lines = [line.split(" | ") for line in bench_int8(argv).splitlines() if line.startswith("| D=")]
    params = {row[0]: int(row[1].replace(",", "")) for row in lines}
    cuts = ("whole", "2 blocks, 100% of the hidden units")
    assert set(params) == {f"| D={d}: {cut}" for d in (16, 32) for cut in cuts}
    assert params["| D=16: whole"] < params["| D=32: whole"]


@pytest.mark.parametrize("step", [False, True], ids=["loader", "with-step"])
def test_loader(script, images, step, capsys):
    argv = ["--recipe", "digits", "--data", str(images), "--workers", "0", "--set", "data.batch_size=4"]
    argv += ["--with-step", "--rounds", "1", "--steps", "1"] if step else ["--batches", "1"]
    script("bench_loader").main(argv)
    assert ("fixed batch" if step else "workers=0:") in capsys.readouterr().out


def test_batch_augment(script, images, tmp_path):
    argv = ["--recipe", "digits", "--data", str(images), "--sizes", "8", "--workers", "0", "--rounds", "1"]
    script("bench_batch_augment").main([*argv, "--steps", "1", "--set", *TINY, "--out", str(tmp_path / "t.md")])
    assert (tmp_path / "t.md").read_text().count("\n| 8 | 0 |") == 1


def test_train_step(script, capsys):
    argv = ["--models", "resmlp_tiny32:embed_dim=16,depth=1", "--img-size", "16", "--batch", "4"]
    script("bench_train_step").main([*argv, "--precisions", "fp32", "--rounds", "1", "--steps", "1"])
    assert "resmlp_tiny32:embed_dim=16,depth=1" in capsys.readouterr().out


def test_kernel_profile_names_the_costliest_ops(script, capsys):
    a = torch.randn(64, 64)
    script("bench_train_step").print_kernel_profile("mm", lambda: [a @ a for _ in range(3)], 2)
    out = capsys.readouterr().out
    assert "mm: the 2 costliest entries" in out and "aten::mm" in out


def test_train_step_from_trained_weights(script, run_dir, capsys):
    argv = ["--models", "trained", "--weights", str(run_dir), "--img-size", "16", "--batch", "4", "--keep-denormals"]
    script("bench_train_step").main([*argv, "--precisions", "fp32", "--rounds", "1", "--steps", "1"])
    rows = [line.split() for line in capsys.readouterr().out.splitlines() if line.startswith("trained ")]
    assert len(rows) == 1 and rows[0][1] == "fp32" and float(rows[0][3]) > 0  # the run's model at 16 px, timed


def test_teacher_forward(script, capsys):
    argv = ["--models", "convnet_cifar:width=1", "--sizes", "16", "--batch", "2", "--precisions", "fp32"]
    script("bench_teacher").main([*argv, "--rounds", "1", "--repeats", "1"])
    assert "convnet_cifar:width=1" in capsys.readouterr().out


@pytest.mark.openvino
def test_teacher_forward_on_openvino_only_at_the_teachers_own_size(script, capsys):
    argv = ["--models", "convnet_cifar:width=1", "--sizes", "16", "32", "--batch", "2"]  # made for 32 px
    script("bench_teacher").main([*argv, "--precisions", "fp32", "--runtimes", "eager,openvino", "--rounds", "1"])
    rows = [line.split()[1:3] for line in capsys.readouterr().out.splitlines() if line.startswith("convnet_cifar")]
    assert rows == [["16", "eager"], ["32", "eager"], ["32", "openvino"]]


def test_fit_pricing(script, capsys):
    argv = ["--model", "resmlp_tiny32:embed_dim=16,depth=1", "--sizes", "16", "32", "--batch", "2"]
    script("bench_fit_pricing").main([*argv, "--passes", "3", "--first-epoch-s", "1", "--probes", "1"])
    assert "probe 1: 16 px" in capsys.readouterr().out


def test_grad_checkpointing(script, tmp_path):
    argv = ["--model", "resmlp_micro8", "--batch", "1", "--repeats", "1", "--json", str(tmp_path / "r.json")]
    script("bench_grad_checkpointing").main(argv)
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["saved_for_backward_mb_on"] < result["saved_for_backward_mb_off"]


def test_analysis_demo_writes_a_run_directory(script, tmp_path):
    for split in ("train", "test"):
        write_images(tmp_path / "mnist" / split, classes=2, per_class=4, size=28)
    argv = ["--data", str(tmp_path / "mnist"), "--out", str(tmp_path / "run"), "--embed-dim", "8", "--epochs", "1"]
    script("analysis_demo").main([*argv, "--train-per-class", "4", "--val-per-class", "2", "--batch-size", "4"])
    run = RunDir(tmp_path / "run")
    assert len(run.read_metrics()) == 1 and run.best.is_file() and run.last.is_file() and run.config.is_file()
    assert json.loads(run.eval.read_text())["classes"] == ["c0", "c1"] and run.read_summary()["epochs"] == 1


def test_fault_trials(script, tmp_path, capsys):
    data = write_images(tmp_path / "images", size=8)  # a few steps per epoch (no repeated augmentation: 24 images)
    small = ["data.source=folder", f"data.path={data}", "data.batch_size=8", "data.repeated_aug=false"]
    argv = ["--trials", "1", "--faults", "sigterm,enospc", "--seed", "0", "--set", *small]
    assert script("fault_trials").main_(argv) == 0
    printed = capsys.readouterr().out
    assert "sigterm: {" in printed and "enospc: {" in printed and "FAILED" not in printed


def test_translation_trains_both_models_scores_them_and_times_decoding(script, tmp_path, capsys):
    from test_text_train import corpus

    data = corpus(tmp_path / "m30")
    for lang in ("en", "de"):  # the test split the benchmark scores on
        (data / f"test_2016_flickr.{lang}").write_text((data / f"val.{lang}").read_text(encoding="utf-8"))
    tiny = ["model.embed_dim=32", "model.depth=1", "model.max_len=24", "text.vocab_size=60", "text.max_tokens=256"]
    tiny += ["optim.epochs=1", "run.precision=fp32", "run.progress=false", "run.tensorboard=false"]
    argv = ["--data", str(data), "--out", str(tmp_path / "mt"), "--plan", "de", "lm", "speed", "--set", *tiny]
    assert script("bench_translation").main(argv) == 0
    record = json.loads((tmp_path / "mt" / "translation.json").read_text())
    assert set(record) == {"resmlp-de", "transformer-de", "resmlp-lm-de", "transformer-lm-de"}
    assert "bleu_signature" in record["resmlp-de"]["test"] and "beam4_batch64" in record["transformer-de"]["speed"]
    assert (tmp_path / "mt" / "translation_curves.png").stat().st_size > 0
    assert "test BLEU (beam 4)" in capsys.readouterr().out


def test_compile_check_compares_the_compiled_gradients_with_eager(script, capsys):
    # aot_eager: the compiled graph without C++ kernels (fast, and no compiler needed); each width in a subprocess
    argv = ["--model", "resmlp_micro8:embed_dim=16,depth=1", "--sizes", "8", "--simdlen", "default", "256"]
    assert script("bench_compile_check").main([*argv, "--backend", "aot_eager", "--batch", "4", "--rounds", "1"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| 8 |")]
    assert [r.split(" | ")[1] for r in rows] == ["default", "256"] and all("| yes |" in r for r in rows)
    with pytest.raises(SystemExit):
        script("bench_compile_check").main(["--simdlen", "wide"])
