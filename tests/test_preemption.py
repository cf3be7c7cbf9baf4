"""Preemption and crash safety of `resmlp train`: stop signals, mid-epoch resume, SIGKILL during a
checkpoint write, a full disk, the run-directory lock (train/preempt.py, train/lock.py, files.py)."""

import errno
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import resmlp.train.checkpointing as checkpointing
import resmlp.train.losses as losses
import resmlp.train.run as run_mod
from resmlp.checkpoint import latest_checkpoint, read_checkpoint
from resmlp.cli import main
from resmlp.train.lock import run_lock

# digits, 20 optimizer steps per epoch (repeated augmentation); augmentation, Mixup/CutMix, drop-path and EMA
# all on, so every generator a resume must restore is in use.
TINY = [
    "model.embed_dim=16",
    "model.depth=1",
    "data.batch_size=64",
    "data.workers=0",
    "optim.warmup_epochs=1",
    "run.progress=false",
    "run.tensorboard=false",
    "run.ema=true",
    "run.ema_decay=0.9",
    "data.repeated_aug=true",
    "data.re_prob=0.25",
    "model.drop_path_rate=0.1",
    "optim.epochs=2",
]
STEPS_PER_EPOCH = 20
SRC = str(Path(run_mod.__file__).resolve().parents[2])


def cli_args(out, extra=()):
    return ["train", "--out", str(out), *sum((["--set", s] for s in [*TINY, *extra]), [])]


def assert_same_run(a_dir, b_dir):
    a = read_checkpoint(a_dir / "checkpoints" / "last.pt")
    b = read_checkpoint(b_dir / "checkpoints" / "last.pt")
    assert (a["epoch"], a["step"]) == (b["epoch"], b["step"])
    for part in ("model", "ema"):
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), (part, k)
    assert a["schedule"] == b["schedule"]


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("full") / "run"
    assert main(cli_args(out)) == 0
    return out


def signal_at_call(monkeypatch, call, signum=signal.SIGTERM):
    """Deliver `signum` to this process from inside the loss computation of training call `call`."""
    real, calls = losses.soft_target_cross_entropy, {"n": 0}

    def loss(logits, targets):
        calls["n"] += 1
        if calls["n"] == call:
            os.kill(os.getpid(), signum)
        return real(logits, targets)

    monkeypatch.setattr(losses, "soft_target_cross_entropy", loss)


@pytest.mark.parametrize(
    "signum",
    [
        signal.SIGTERM,
        pytest.param(signal.SIGINT, marks=pytest.mark.slow),
        pytest.param(signal.SIGUSR1, marks=pytest.mark.slow),
    ],
)
def test_stop_signal_writes_a_mid_epoch_checkpoint_and_resume_is_bit_exact(
    tmp_path, monkeypatch, capsys, full_run, signum
):
    step = random.Random(int(signum)).randrange(2, 2 * STEPS_PER_EPOCH - 1)  # a seeded "random" step
    out = tmp_path / "run"
    signal_at_call(monkeypatch, step, signum)
    assert main(cli_args(out)) == 128 + signum
    err = capsys.readouterr().err
    assert f"stopped by {signal.Signals(signum).name}" in err and f"resume with `resmlp train --resume {out}`" in err
    ckpt = read_checkpoint(out / "checkpoints" / "last.pt")
    assert ckpt["epoch"] * STEPS_PER_EPOCH + ckpt["step"] == step  # stopped after the step the signal came in
    monkeypatch.undo()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers are given back
    assert main(["train", "--resume", str(out)]) == 0
    assert_same_run(full_run, out)
    rows = [r for r in (out / "metrics.jsonl").read_text().splitlines()]
    full_rows = (full_run / "metrics.jsonl").read_text().splitlines()
    strip = lambda r: {k: v for k, v in __import__("json").loads(r).items() if "time" not in k and "per_s" not in k}
    assert [strip(r) for r in rows] == [strip(r) for r in full_rows]  # the resumed epoch's loss sums the whole epoch


def test_mid_epoch_resume_is_bit_exact_with_lookahead_norm_lr_scale_and_a_frozen_stem(tmp_path, monkeypatch):
    """The airbench levers: the lookahead's slow weights are checkpointed, the BatchNorm group's own lr follows
    the schedule, and the frozen stem weight never moves."""
    extra = ["optim.name=sgd", "optim.lr=0.05", "optim.lookahead=true", "optim.lookahead_every=3"]
    extra += ["optim.norm_lr_scale=8", "model.norm=batchnorm", "model.stem_frozen=true"]
    full, out = tmp_path / "full", tmp_path / "run"
    assert main(cli_args(full, extra)) == 0
    signal_at_call(monkeypatch, STEPS_PER_EPOCH + 5)
    assert main(cli_args(out, extra)) == 128 + signal.SIGTERM
    stopped = read_checkpoint(out / "checkpoints" / "last.pt")
    assert stopped["step"] == 5 and stopped["lookahead"] is not None
    monkeypatch.undo()
    assert main(["train", "--resume", str(out)]) == 0
    assert_same_run(full, out)
    done = read_checkpoint(full / "checkpoints" / "last.pt")
    for k in done["model"]:  # the last step handed the slow weights to the model
        assert torch.equal(done["model"][k], done["lookahead"][k]), k
    base_lrs = done["schedule"]["base_lrs"]  # decay, no_decay, norms: the norms' peak is 8x
    assert len(base_lrs) == 3 and base_lrs[2] == pytest.approx(8 * base_lrs[0])
    assert torch.equal(stopped["model"]["stem.proj.weight"], done["model"]["stem.proj.weight"])  # frozen
    assert not torch.equal(stopped["model"]["head.weight"], done["model"]["head.weight"])  # the rest trains


@pytest.mark.parametrize("flip", ["random", "alternate"])
def test_mid_epoch_resume_is_bit_exact_with_batch_augmentation(tmp_path, monkeypatch, flip):
    """Batch augmentation draws its crops and flips from the run's checkpointed batch generator (with Mixup's);
    the alternating flip follows the resumed sampler's epoch: stopped mid-epoch and resumed, the run is the
    uninterrupted one."""
    batch = [s for s in TINY if not s.startswith("data.re_prob")] + [
        "data.re_prob=0.0",
        "data.crop=pad",
        "data.padding=1",
        "data.auto_augment=null",
        "data.batch_augment=true",
        "data.hflip=0.5",
        f"data.hflip_alternate={flip == 'alternate'}",
    ]
    full, out = tmp_path / "full", tmp_path / "run"
    assert main(["train", "--out", str(full), *sum((["--set", s] for s in batch), [])]) == 0
    signal_at_call(monkeypatch, STEPS_PER_EPOCH + 7)
    assert main(["train", "--out", str(out), *sum((["--set", s] for s in batch), [])]) == 128 + signal.SIGTERM
    assert read_checkpoint(out / "checkpoints" / "last.pt")["step"] == 7
    monkeypatch.undo()
    assert main(["train", "--resume", str(out)]) == 0
    assert_same_run(full, out)


def test_periodic_checkpoints_and_previous_checkpoint_fallback(tmp_path, monkeypatch):
    saved = []
    real = checkpointing.save
    monkeypatch.setattr(
        checkpointing,
        "save",
        lambda run_dir, model, cfg, state, improved: (
            saved.append((state["epoch"], state["step"])),
            real(run_dir, model, cfg, state, improved),
        ),
    )
    out = tmp_path / "run"
    assert main(cli_args(out, ["optim.epochs=1", "run.checkpoint_every_min=1e-9"])) == 0
    assert saved == [(0, s) for s in range(1, STEPS_PER_EPOCH + 1)] + [(1, 0)]
    assert read_checkpoint(out / "checkpoints" / "previous.pt")["step"] == STEPS_PER_EPOCH  # the one before
    (out / "checkpoints" / "last.pt").write_bytes(b"PK\x03\x04 damaged")
    with pytest.warns(UserWarning, match="skipped a damaged checkpoint.*last.pt"):
        assert latest_checkpoint(out)["step"] == STEPS_PER_EPOCH


def test_full_disk_keeps_the_previous_checkpoint_and_ends_in_one_line(tmp_path, monkeypatch, capsys):
    real_save, writes = torch.save, {"n": 0}

    def save(obj, f, *args, **kwargs):
        if ".last.pt.tmp" in str(f):
            writes["n"] += 1
            if writes["n"] == 2:  # the checkpoint of epoch 2: half a file, then the disk is full
                Path(f).write_bytes(b"x" * 1000)
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    out = tmp_path / "run"
    assert main(cli_args(out)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(
        "error: cannot write the checkpoint at the end of epoch 2 (No space left on device)"
    )
    assert "No space left on device" in err and f"the previous checkpoint {out}/checkpoints/last.pt is kept" in err
    assert read_checkpoint(out / "checkpoints" / "last.pt")["epoch"] == 1
    assert not [p for p in (out / "checkpoints").iterdir() if ".tmp" in p.name]


def test_a_run_directory_in_use_is_refused_and_a_stale_lock_taken_over(tmp_path, capsys):
    out = tmp_path / "run"
    with run_lock(out):
        assert main(cli_args(out, ["optim.epochs=1"])) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {out} is in use by another run (pid and host: {os.getpid()} ")
    assert not (out / "checkpoints").exists()  # nothing was written
    (out / ".lock").write_text("4194999 somehost\n")  # left by a killed run: no one holds it
    assert main(cli_args(out, ["optim.epochs=1"])) == 0
    assert "took over the lock of a run that is gone (4194999 somehost)" in capsys.readouterr().out
    assert not (out / ".lock").exists()  # released at the end


# ----------------------------------------------------------------- real processes, real signals


def _env():
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
    env.pop("RESMLP_DEBUG", None)
    return env


@pytest.mark.slow
def test_sigterm_from_outside_then_resume_equals_the_uninterrupted_run(tmp_path):
    """`resmlp train` in a subprocess, SIGTERM once it has trained a random while, resume: bit-exact."""
    full, out = tmp_path / "full", tmp_path / "run"
    extra = ["optim.epochs=4", "run.progress=true"]
    assert (
        subprocess.run(
            [sys.executable, "-m", "resmlp", *cli_args(full, extra)], env=_env(), capture_output=True
        ).returncode
        == 0
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "resmlp", *cli_args(out, extra)],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    for line in proc.stdout:  # wait until training runs (the first epoch line), then a random extra while
        if line.startswith("epoch 1/4"):
            break
    time.sleep(random.Random(0).uniform(0.0, 0.3))
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "stopped by SIGTERM" in err and f"resume with `resmlp train --resume {out}`" in err
    resumed = subprocess.run(
        [sys.executable, "-m", "resmlp", "train", "--resume", str(out)], env=_env(), capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr
    assert_same_run(full, out)


KILL_DURING_WRITE = """
import os, signal, sys, torch
from pathlib import Path
real, n = torch.save, {"n": 0}
def save(obj, f, *a, **k):
    if ".last.pt.tmp" in str(f):
        n["n"] += 1
        if n["n"] == int(sys.argv[1]):
            real(obj, f, *a, **k)
            data = Path(f).read_bytes()
            Path(f).write_bytes(data[: len(data) // 2])  # half written, not yet renamed
            os.kill(os.getpid(), signal.SIGKILL)
    return real(obj, f, *a, **k)
torch.save = save
from resmlp.cli import main
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.slow
def test_sigkill_inside_a_checkpoint_write_leaves_a_loadable_checkpoint_and_resume_works(tmp_path, full_run):
    out = tmp_path / "run"
    killed = subprocess.run(
        [sys.executable, "-c", KILL_DURING_WRITE, "2", *cli_args(out)], env=_env(), capture_output=True, text=True
    )
    assert killed.returncode == -signal.SIGKILL
    assert [p.name for p in (out / "checkpoints").iterdir() if ".tmp" in p.name]  # the half-written file
    assert read_checkpoint(out / "checkpoints" / "last.pt")["epoch"] == 1  # the previous one, intact
    assert (out / ".lock").exists()  # left behind by the killed process
    resumed = subprocess.run(
        [sys.executable, "-m", "resmlp", "train", "--resume", str(out)], env=_env(), capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr
    assert "took over the lock of a run that is gone" in resumed.stdout
    assert not [p.name for p in (out / "checkpoints").iterdir() if ".tmp" in p.name]
    assert_same_run(full_run, out)


def _free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


DDP = [s for s in TINY if not s.startswith("data.batch_size")] + ["data.batch_size=16", "run.threads=1"]


def _ddp_worker(rank, world, port, out, signal_rank, signal_call, resume):
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
        LOCAL_WORLD_SIZE=str(world),
    )
    from resmlp.config import load_config
    from resmlp.train import distributed as dist

    if rank == signal_rank:
        real, calls = losses.soft_target_cross_entropy, {"n": 0}

        def loss(logits, targets):
            calls["n"] += 1
            if calls["n"] == signal_call:
                os.kill(os.getpid(), signal.SIGTERM)
            return real(logits, targets)

        losses.soft_target_cross_entropy = loss
    cfg = load_config("digits", DDP) if not resume else checkpointing.config_of_run(out)
    summary = run_mod.train(cfg, out=None if resume else out, resume=out if resume else None)
    if signal_rank >= 0:
        assert summary["stopped_by"] == "SIGTERM"  # every rank stopped, not only the one signalled
    dist.shutdown()


@pytest.mark.slow
def test_two_processes_stop_at_the_same_step_when_one_is_signalled_and_resume_exactly(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_ddp_worker, args=(2, _free_port(), tmp_path / "full", -1, 0, False), nprocs=2, join=True)
    out = tmp_path / "run"
    mp.spawn(_ddp_worker, args=(2, _free_port(), out, 1, 13, False), nprocs=2, join=True)  # only rank 1 signalled
    ckpt = read_checkpoint(out / "checkpoints" / "last.pt")
    assert (ckpt["epoch"], ckpt["step"]) == (0, 13)  # rank 0 wrote it, at the step rank 1 got the signal
    assert (out / "checkpoints" / "rank1" / "e0-s13.pt").is_file()  # rank 1's own generators
    mp.spawn(_ddp_worker, args=(2, _free_port(), out, -1, 0, True), nprocs=2, join=True)
    assert_same_run(tmp_path / "full", out)
