"""End-to-end training through the real CLI/API on tiny configs: artefacts, resume equivalence, DDP."""

import json
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from PIL import Image

from resmlp import device as device_module
from resmlp.checkpoint import read_checkpoint
from resmlp.cli import main
from resmlp.config import ConfigError, RunConfig, load_config
from resmlp.train import budget, wiring
from resmlp.train.budget import BudgetFit
from resmlp.train.run import train
from resmlp.train.wiring import model_arguments

TINY = [
    "model.embed_dim=16",
    "model.depth=1",
    "data.batch_size=64",
    "data.workers=0",
    "optim.warmup_epochs=1",
    "run.progress=false",
    "run.tensorboard=false",
]


def test_cli_train_writes_the_run_directory(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(
        [
            "train",
            "--recipe",
            "digits",
            "--epochs",
            "3",
            "--out",
            str(out),
            *sum((["--set", s] for s in TINY + ["optim.name=adamw", "optim.lr=0.08", "optim.warmup_epochs=0.2"]), []),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert f"run directory: {out}" in printed and "summary: " in printed
    for f in ["config.yaml", "metrics.jsonl", "summary.json", "checkpoints/last.pt", "checkpoints/best.pt"]:
        assert (out / f).is_file(), f
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert {"train_loss", "val_top1", "val_top5", "lr", "images_per_s", "val_loss"} <= set(rows[0])
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs"] == 3 and summary["best_val_top1"] == max(r["val_top1"] for r in rows)
    assert (
        summary["final_val_top1"] == rows[-1]["val_top1"] and summary["final_val_top1"] > 18
    )  # 10 classes: chance is 10%
    assert summary["train_images_per_s"] > 0 and summary["wall_time_s"] > 0
    ckpt = read_checkpoint(out / "checkpoints" / "best.pt")
    assert ckpt["classes"] == [str(d) for d in range(10)] and ckpt["model_args"]["embed_dim"] == 16
    assert load_config(str(out / "config.yaml")).optim.name == "adamw"

    # resmlp eval on an image folder written from the same digits, with per-class accuracy + PNG
    folder = tmp_path / "digits_folder"
    from resmlp.data.sources import load_digits_arrays

    images, labels, classes = load_digits_arrays()
    for i in range(0, 200):
        d = folder / classes[labels[i]]
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[i]).save(d / f"{i}.png")
    assert main(["eval", "--checkpoint", str(out), "--data", str(folder), "--workers", "0"]) == 0
    res = json.loads((out / "eval.json").read_text())
    assert set(res["per_class_top1"]) == set(classes) and np.array(res["confusion"]).sum() == 200
    assert abs(res["top1"] - 100 * np.trace(res["confusion"]) / 200) < 1e-9
    assert (out / "confusion.png").stat().st_size > 1000


def make_folder(root, classes=("cat", "dog", "owl"), per_class=12, size=10):
    rng = np.random.default_rng(0)
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            img = np.full((size, size, 3), 60 * c, np.uint8) + rng.integers(0, 40, (size, size, 3), dtype=np.uint8)
            Image.fromarray(img).save(root / name / f"{i}.png")
    (root / "dog" / "broken.jpg").write_bytes(b"not an image at all")
    return root


def test_folder_training_reports_bad_files_and_resizes(tmp_path):
    data = make_folder(tmp_path / "data")
    cfg = load_config(
        None,
        TINY
        + [
            "data.source=folder",
            f"data.path={data}",
            "data.val_split=0.25",
            "data.batch_size=8",
            "model.img_size=8",
            "model.name=resmlp_micro8",
            "optim.epochs=1",
            "data.auto_augment=null",
            "data.crop=rrc",
        ],
    )
    with pytest.warns(UserWarning, match="broken.jpg"):
        summary = train(cfg, out=tmp_path / "run")
    assert summary["bad_files"] == 1 and summary["classes"] == 3
    assert "broken.jpg" in (tmp_path / "run" / "bad_files.tsv").read_text()


def test_bad_cli_input_is_one_line(tmp_path, capsys):
    assert main(["train", "--set", "optim.lrr=1", "--out", str(tmp_path / "r")]) == 2
    assert (
        capsys.readouterr().err.strip() == "error: unknown key optim.lrr; valid keys in optim: "
        "accum_steps, epochs, lookahead, lookahead_every, lr, lr_batch, max_grad_norm, min_lr, momentum, "
        "muon_lr, muon_token_mixing, name, norm_lr_scale, sched, warmup_epochs, warmup_lr, weight_decay"
    )
    assert (
        main(
            ["train", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "r2"), "--set", "run.progress=false"]
        )
        == 2
    )
    assert "missing" in capsys.readouterr().err


def test_model_fields_are_checked_against_the_variant_before_anything_is_written(tmp_path, capsys):
    with pytest.raises(
        ConfigError,
        match=r"model.token_mlp_ratio: resmlp_micro8 does not accept token_mlp_ratio; "
        r"accepted overrides: .*layer_scale_init",
    ):
        train(load_config("digits", ["model.token_mlp_ratio=0.5"]), out=tmp_path / "r")
    assert not (tmp_path / "r").exists()
    with pytest.raises(ConfigError, match="model.name: unknown model 'nope'"):
        model_arguments(load_config(None, ["model.name=nope"]).model)
    args = model_arguments(load_config(None, ["model.name=resnet20_cifar", "model.width=2"]).model)
    assert (args["width"], args["blocks_per_stage"], args["img_size"]) == (2, 3, 32)
    assert main(["train", "--set", "model.width=2", "--out", str(tmp_path / "r")]) == 2
    assert capsys.readouterr().err.startswith("error: model.width: resmlp_micro8 does not accept width")


def weights(run_dir):
    return read_checkpoint(run_dir / "checkpoints" / "last.pt")["model"]


def train_whole_and_in_two(common: list[str], tmp_path) -> dict:
    """Train the digits recipe with `common` for its epochs into tmp_path/full, and again into tmp_path/split
    stopped after epoch 1 and resumed through the CLI; assert both end with the same weights. Returns the
    split run's checkpoint after epoch 1."""
    train(load_config("digits", common), out=tmp_path / "full")
    train(load_config("digits", common + ["budget.time_limit_min=0"]), out=tmp_path / "split")  # stops after epoch 1
    halfway = read_checkpoint(tmp_path / "split" / "checkpoints" / "last.pt")
    assert halfway["epoch"] == 1
    assert main(["train", "--resume", str(tmp_path / "split"), "--set", "budget.time_limit_min=null"]) == 0
    full, split = weights(tmp_path / "full"), weights(tmp_path / "split")
    for k in full:
        assert torch.equal(full[k], split[k]), k
    return halfway


def test_resume_continues_exactly(tmp_path):
    """k epochs + resume + k epochs == 2k epochs: model, optimizer, schedule, EMA, sampler and RNG states."""
    common = TINY + [
        "optim.epochs=2",
        "run.ema=true",
        "run.ema_decay=0.9",
        "data.repeated_aug=true",
        "data.mixup_alpha=0.8",
        "data.cutmix_alpha=1.0",
        "data.re_prob=0.25",
        "model.drop_path_rate=0.1",
    ]
    train_whole_and_in_two(common, tmp_path)
    assert read_checkpoint(tmp_path / "split" / "checkpoints" / "last.pt")["epoch"] == 2
    a = read_checkpoint(tmp_path / "full" / "checkpoints" / "last.pt")
    b = read_checkpoint(tmp_path / "split" / "checkpoints" / "last.pt")
    for k in a["ema"]:
        assert torch.equal(a["ema"][k], b["ema"][k]), k
    rows = [json.loads(x) for x in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]


def test_muon_sgd_trains_the_conv_net_at_its_own_lrs_and_resumes_exactly(tmp_path, capsys):
    """optim.name=muon_sgd through the trainer: the kernels follow optim.muon_lr and the BatchNorm shifts
    lr x norm_lr_scale under one schedule, the optimizer state is checkpointed, a resume is exact."""
    common = [
        "model.name=convnet_cifar",
        "model.width=1",
        "model.img_size=16",
        "model.drop_path_rate=0",
        "model.batchnorm_scale=false",
        *TINY[2:],
        "optim.epochs=2",
        "optim.warmup_epochs=0",
        "optim.sched=linear",
        "optim.min_lr=0",
        "optim.name=muon_sgd",
        "optim.muon_lr=0.1",
        "optim.lr=0.2",
        "optim.lr_batch=64",
        "optim.norm_lr_scale=4",
    ]
    halfway = train_whole_and_in_two(common, tmp_path)["optimizer"]
    muon_lr, sgd_lrs = halfway["muon"]["param_groups"][0]["lr"], [g["lr"] for g in halfway["sgd"]["param_groups"]]
    assert muon_lr == pytest.approx(0.05) and sorted(sgd_lrs) == pytest.approx([0.1, 0.1, 0.4])  # halfway down
    assert len(halfway["muon"]["state"]) == 6  # a momentum buffer per 3 x 3 kernel
    capsys.readouterr()
    bad = ["train", "--out", str(tmp_path / "bad"), "--set", "optim.name=muon_sgd", *TINY]
    assert main(bad) == 2
    assert capsys.readouterr().err.strip().startswith("error: optim.name=muon_sgd: ResMLP has no conv kernels")


def test_nonfinite_loss_stops_and_keeps_last_checkpoint(tmp_path, monkeypatch, capsys):
    import resmlp.train.losses as losses

    calls = {"n": 0}
    real = losses.soft_target_cross_entropy

    def flaky(logits, targets):
        calls["n"] += 1
        return real(logits, targets) * (float("nan") if calls["n"] > 30 else 1.0)  # 22 steps per epoch

    monkeypatch.setattr(losses, "soft_target_cross_entropy", flaky)
    out = tmp_path / "run"
    assert main(["train", "--epochs", "3", "--out", str(out), *sum((["--set", s] for s in TINY), [])]) == 2
    assert "loss is nan at epoch 1" in capsys.readouterr().err
    assert read_checkpoint(out / "checkpoints" / "last.pt")["epoch"] == 1


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


DDP_SET = TINY + [
    "optim.epochs=1",
    "data.repeated_aug=false",
    "data.crop=pad",
    "data.padding=0",
    "data.hflip=0",
    "data.mixup_alpha=0",
    "data.cutmix_alpha=0",
    "model.drop_path_rate=0",
    "optim.warmup_epochs=0.5",
]


def _ddp_worker(rank, world, port, out):
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
        LOCAL_WORLD_SIZE=str(world),
    )
    from resmlp.train import distributed as dist

    train(load_config("digits", DDP_SET + [f"data.batch_size={32 // world}"]), out=out)
    dist.shutdown()


@pytest.mark.slow
def test_two_process_ddp_matches_one_process_with_the_same_global_batch(tmp_path):
    train(load_config("digits", DDP_SET + ["data.batch_size=32", "run.threads=1"]), out=tmp_path / "one")
    mp.spawn(_ddp_worker, args=(2, _free_port(), tmp_path / "two"), nprocs=2, join=True)
    one, two = weights(tmp_path / "one"), weights(tmp_path / "two")
    for k in one:
        torch.testing.assert_close(two[k], one[k], rtol=1e-4, atol=1e-5, msg=k)
    s1 = json.loads((tmp_path / "one" / "summary.json").read_text())
    s2 = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert s2["processes"] == 2 and abs(s1["final_val_top1"] - s2["final_val_top1"]) < 0.5


def test_cifar_archive_trains_and_validates_on_the_official_test_split(tmp_path):
    from test_sources import _cifar10_archive  # the synthetic official-format archive builder

    archive = _cifar10_archive(tmp_path / "cifar-10-python.tar.gz")[0]
    out = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--recipe",
                "digits",
                "--data",
                str(archive),
                "--model",
                "resmlp_tiny32",
                "--epochs",
                "1",
                "--out",
                str(out),
                "--set",
                "data.batch_size=4",
                "data.repeated_aug=false",
                "model.depth=1",
                "run.progress=false",
                "run.tensorboard=false",
                "data.workers=0",
            ]
        )
        == 0
    )
    cfg = load_config(str(out / "config.yaml"))
    assert cfg.data.source == "cifar10" and cfg.data.path == str(archive)
    ckpt = read_checkpoint(out / "checkpoints" / "last.pt")
    summary = json.loads((out / "summary.json").read_text())
    assert len(ckpt["classes"]) == 10 and summary["final_val_top1"] is not None
    assert json.loads((out / "metrics.jsonl").read_text().splitlines()[0])["epoch"] == 1


def test_final_tta_scores_the_last_epoch_once_more_with_its_views(tmp_path):
    from resmlp.models import with_tta
    from resmlp.train.engine import evaluate
    from resmlp.train.run import build

    cfg = load_config("digits", TINY + ["optim.epochs=2", "run.final_tta=flip+shift1"])
    summary = train(cfg, out=tmp_path / "run")
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert "val_top1_tta" not in rows[0] and rows[0]["eval_time_s"] > 0  # earlier epochs: the plain curve only
    assert rows[1]["tta"] == "flip+shift1" and "val_top1" in rows[1]
    assert summary["final_val_top1_tta"] == rows[1]["val_top1_tta"] and summary["final_tta"] == "flip+shift1"
    assert summary["final_val_top1"] == rows[1]["val_top1"]  # the plain number stays beside it
    run = build(cfg, tmp_path / "rebuilt", torch.device("cpu"))  # same seed and split: the same val images
    run.model.load_state_dict(read_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["model"])
    plain = evaluate(run.model, run.val_loader, torch.device("cpu"), num_classes=10)
    views = evaluate(with_tta(run.model, "flip+shift1"), run.val_loader, torch.device("cpu"), num_classes=10)
    assert (plain.top1, views.top1) == (rows[1]["val_top1"], rows[1]["val_top1_tta"])


def test_a_compiled_run_trains_through_the_compiled_step_and_evaluates_the_plain_model(tmp_path, monkeypatch):
    from resmlp.train import loop

    class Compiled(torch.nn.Module):  # stands in for torch.compile's wrapper: counts the calls that reach it
        def __init__(self, model):
            super().__init__()
            self.inner, self.calls = model, 0

        def forward(self, x):
            self.calls += 1
            return self.inner(x)

    compiled = []
    monkeypatch.setattr(torch, "compile", lambda model, **kw: compiled.append(Compiled(model)) or compiled[-1])
    monkeypatch.setattr(device_module, "compile_unavailable", lambda kind: None)  # a compiler or not, on any CI
    scored = []
    real_evaluate = loop.evaluate
    monkeypatch.setattr(
        loop, "evaluate", lambda model, *a, **kw: scored.append(model) or real_evaluate(model, *a, **kw)
    )
    cfg = load_config("digits", TINY + ["optim.epochs=2", "run.compile=true", "run.final_tta=flip"])
    train(cfg, out=tmp_path / "run")
    assert len(compiled) == 1 and compiled[0].calls > 0  # the training steps went through the compiled module
    assert len(scored) == 3 and not any(isinstance(m, Compiled) for m in scored)  # 2 epochs + the final TTA
    assert scored[0] is compiled[0].inner and scored[2].inner is compiled[0].inner  # with_tta wraps the plain one


def test_compile_auto_without_a_compiler_trains_eager_and_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(device_module, "compile_unavailable", lambda kind: "no C++ compiler (g++ not found)")
    monkeypatch.setattr(torch, "compile", lambda *a, **kw: pytest.fail("compiled without a compiler"))
    cfg = load_config("digits", TINY + ["optim.epochs=1", "run.compile=auto"])
    assert train(cfg, out=tmp_path / "auto")["epochs"] == 1
    assert "run.compile=auto: the step runs eager (no C++ compiler (g++ not found))" in capsys.readouterr().out
    strict = load_config("digits", TINY + ["optim.epochs=1", "run.compile=true"])
    with pytest.raises(ValueError, match=r"^run\.compile=true: no C\+\+ compiler"):
        train(strict, out=tmp_path / "strict")
    assert not (tmp_path / "strict" / "checkpoints").exists()  # refused before any training


def test_initialisation_levers_reach_the_model_and_tta_the_validation(tmp_path):
    from resmlp.train.run import build

    levers = [
        "model.token_mixing_init=identity",
        "model.stem_init=pca",
        "model.stem_init_samples=200",
        "run.precision=auto",
        "run.tta=flip",
    ]
    cfg = load_config("digits", TINY + ["optim.epochs=1"] + levers)
    run = build(cfg, tmp_path / "built", torch.device("cpu"))
    a = run.model.blocks[0].linear_tokens
    torch.testing.assert_close(a.weight, torch.eye(a.weight.shape[0]))  # A = I: local, not noise
    patches = run.model.stem.proj.weight.flatten(1)[:12]  # 2x2x3 = 12 whitened directions of the digits patches
    gram = patches @ patches.T
    torch.testing.assert_close(gram * torch.eye(12), gram, atol=1e-4, rtol=0)  # PCA rows are orthogonal
    assert run.ctx.precision in ("fp32", "bf16")  # auto resolved for this CPU
    summary = train(cfg, out=tmp_path / "run")
    assert summary["epochs"] == 1 and 0 <= summary["best_val_top1"] <= 100


@pytest.mark.parametrize("retain", [True, False])
def test_cpu_runs_keep_freed_memory_unless_told_not_to(monkeypatch, retain):
    calls = []
    monkeypatch.setattr(wiring, "retain_freed_cpu_memory", lambda: calls.append(True) or True)
    threads = torch.get_num_threads()
    try:
        device, rank, world = wiring.init_process(RunConfig(device="cpu", retain_cpu_memory=retain))
    finally:
        torch.set_num_threads(threads)
    assert (device.type, rank, world) == ("cpu", 0, 1)
    assert calls == ([True] if retain else [])


def test_cpu_runs_flush_denormals_to_zero_in_every_thread():
    # in its own interpreter, its thread pool started before init_process (as by any earlier work in a process)
    code = (
        "import torch\n"
        "from resmlp.config import RunConfig\n"
        "from resmlp.train.wiring import init_process\n"
        "tiny = torch.full((1 << 22,), 1e-39)\n"  # denormal: below float32's smallest normal, 1.2e-38
        "print(int((tiny * 1.0 != 0).sum()))\n"  # large enough to run on both threads
        "init_process(RunConfig(device='cpu', threads=2))\n"
        "print(int((tiny * 1.0 != 0).sum()))\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == [str(1 << 22), "0"]  # the pool's other thread too, not only the calling one


TEACHER_RECIPE = """base: digits
model: {name: resnet20_cifar, blocks_per_stage: 1, img_size: 8}
optim: {name: sgd, lr: 0.4, epochs: 1}
data: {batch_size: 64, workers: 0, val_split: 0.5}
"""


def test_a_run_trains_its_own_teacher_first_inside_its_time_limit(tmp_path, capsys):
    recipe = tmp_path / "teacher.yaml"
    recipe.write_text(TEACHER_RECIPE)
    out = tmp_path / "run"
    args = [
        "train",
        "--recipe",
        "digits",
        "--epochs",
        "1",
        "--out",
        str(out),
        *sum(
            (
                ["--set", s]
                for s in TINY
                + [
                    f"distill.teacher_recipe={recipe}",
                    "distill.kind=soft",
                    "data.val_split=0.2",
                    "run.seed=3",
                    "budget.time_limit_min=30",
                ]
            ),
            [],
        ),
    ]
    assert main(args) == 0
    assert "the teacher first" in capsys.readouterr().out
    teacher = load_config(None, base=yaml_of(out / "teacher" / "config.yaml"))
    # the teacher learns from the student's training split only: same images, split and seed
    assert (teacher.model.name, teacher.data.val_split, teacher.run.seed) == ("resnet20_cifar", 0.2, 3)
    student = load_config(None, base=yaml_of(out / "config.yaml"))
    summary = json.loads((out / "summary.json").read_text())
    assert student.distill.teacher == str(out / "teacher") and summary["teacher"]["path"].startswith(str(out))
    assert summary["teacher_wall_time_s"] > 0
    assert student.budget.time_limit_min == pytest.approx(30 - summary["teacher_wall_time_s"] / 60, abs=1e-6)

    metrics = (out / "teacher" / "metrics.jsonl").read_bytes()
    assert main(args) == 2  # the same command again: the finished student is not written over
    err = capsys.readouterr().err
    assert f"{out}: holds an earlier run (checkpoints/last.pt" in err and f"resmlp train --resume {out}" in err
    shutil.rmtree(out / "checkpoints")  # as if the process had stopped right after its teacher
    for name in ("metrics.jsonl", "summary.json"):
        (out / name).unlink()
    assert main(args) == 0  # the finished teacher is reused, the student trained
    assert "the teacher first" not in capsys.readouterr().out
    assert (out / "teacher" / "metrics.jsonl").read_bytes() == metrics


def test_the_teacher_takes_the_run_s_data_loading_and_its_errors_name_it(tmp_path, capsys):
    """The student's data.cache / data.workers reach the teacher its recipe trains first; an error while that
    teacher trains says it is the teacher's and names the key that changes it, distill.teacher_set."""
    recipe = tmp_path / "teacher.yaml"
    recipe.write_text(
        TEACHER_RECIPE.replace("batch_size: 64, workers: 0", "batch_size: 4096, workers: 1, cache: false")
    )
    out = tmp_path / "run"
    common = ["train", "--recipe", "digits", "--epochs", "1", "--out", str(out), "--set", *TINY, "data.cache=true"]
    assert main([*common, f"distill.teacher_recipe={recipe}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: the teacher (distill.teacher_recipe={recipe}, trained first in {out / 'teacher'}): ")
    assert "data.batch_size=4096 is larger than" in err and err.count("\n") == 0
    assert err.endswith("""set the teacher's keys with --set 'distill.teacher_set=["KEY=VALUE"]'""")
    assert main([*common, f"distill.teacher_recipe={recipe}", 'distill.teacher_set=["data.batch_size=64"]']) == 0
    teacher = load_config(None, base=yaml_of(out / "teacher" / "config.yaml"))
    assert (teacher.data.batch_size, teacher.data.cache, teacher.data.workers) == (64, True, 0)


def yaml_of(path):
    import yaml

    return yaml.safe_load(path.read_text())


def test_a_teacher_recipe_is_checked_before_anything_trains(tmp_path):
    with pytest.raises(ConfigError, match="distill.teacher_time_min: expected minutes > 0, got 0"):
        load_config("digits", ["distill.teacher_recipe=digits", "distill.teacher_time_min=0"])
    assert not load_config("digits", ["distill.teacher_recipe=digits", "distill.teacher=none"]).distill.active
    (tmp_path / "teacher.yaml").write_text(TEACHER_RECIPE + "budget: {time_limit_min: 15}\n")
    recipe = tmp_path / "distils.yaml"
    recipe.write_text("base: digits\ndistill: {teacher: elsewhere}\n")
    with pytest.raises(ConfigError, match="distils from a teacher itself"):
        train(load_config("digits", TINY + [f"distill.teacher_recipe={recipe}"]), out=tmp_path / "run")
    with pytest.raises(ConfigError, match="trains for 15 min .* no time of budget.time_limit_min=10"):
        train(
            load_config(
                "digits", TINY + [f"distill.teacher_recipe={tmp_path / 'teacher.yaml'}", "budget.time_limit_min=10"]
            ),
            out=tmp_path / "run",
        )
    with pytest.raises(ConfigError, match="trains for 30 min .* no time of budget.time_limit_min=20"):
        train(
            load_config(
                "digits",
                TINY
                + [
                    f"distill.teacher_recipe={tmp_path / 'teacher.yaml'}",
                    "distill.teacher_time_min=30",
                    "budget.time_limit_min=20",
                ],
            ),
            out=tmp_path / "run",
        )
    assert not (tmp_path / "run" / "teacher" / "checkpoints").exists()


def test_the_fit_line_prints_a_student_s_leftover_budget_rounded():
    fit = BudgetFit(budget_s=2703.3, longest=50)
    line = budget.fit_line(45.055504847816664, 8, 581.2, fit, 17.0, 33.15, 33.2)
    assert line == (
        "time budget 45.06 min: 9 epochs took 581 s, faster than planned, 17 s kept for the final TTA "
        "evaluation, so the schedule now ends after 33.2 epochs instead of 33.15"
    )
    assert budget.fit_line(60.0, 0, 132.0, fit, 0.0, 50, 50).startswith("time budget 60 min: the first epoch")
