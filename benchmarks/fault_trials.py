"""Repeated fault injection into `resmlp train` on the digits demo: how often each fault was tried and what
happened. The counts in docs/reliability.md come from this script:

    PYTHONPATH=src python benchmarks/fault_trials.py --trials 10 --seed 0

Faults, each in its own run directory, compared with one uninterrupted reference run (2 epochs x 20 steps,
augmentation, Mixup/CutMix, drop-path and EMA on):
    sigterm    a real SIGTERM / SIGINT / SIGUSR1 at a random optimizer step (the process signals itself from
               inside the loss), then `--resume`: exit status, message, bit-exact weights and EMA
    external   `resmlp train` in a subprocess, SIGTERM from outside at a random time after its start line, then
               `--resume`
    sigkill    a subprocess SIGKILLed inside a checkpoint write (after a random fraction of the bytes), then
               `--resume`: the previous checkpoint loads and the resumed run is bit-exact
    enospc     the disk "fills" during a random checkpoint write: one error line, the old checkpoint kept,
               `--resume` bit-exact
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

import resmlp.train.losses as losses
from resmlp.checkpoint import read_checkpoint
from resmlp.cli import main
from resmlp.files import TMP_MARK
from resmlp.rundir import LAST, RunDir

SETTINGS = [
    "model.embed_dim=16",
    "model.depth=1",
    "data.batch_size=64",
    "data.workers=0",
    "optim.warmup_epochs=1",
    "run.progress=false",
    "run.tensorboard=false",
    "run.ema=true",
    "run.ema_decay=0.9",
    "optim.epochs=2",
    "data.repeated_aug=true",
    "data.re_prob=0.25",
    "model.drop_path_rate=0.1",
]
SRC = str(Path(losses.__file__).resolve().parents[2])
TMP_LAST = f".{LAST}{TMP_MARK}"  # the atomic writer's temporary of checkpoints/last.pt


@dataclass(frozen=True)
class Reference:
    """The uninterrupted run every trial is compared with, the settings all of them train with, and its
    optimizer steps per epoch (counted, so that `--set` may change them)."""

    run_dir: Path
    settings: tuple[str, ...]
    steps_per_epoch: int

    @property
    def steps(self) -> int:
        return 2 * self.steps_per_epoch  # optim.epochs=2

    def same_as(self, out: Path) -> bool:
        """Whether the run at `out` ended with this run's weights and EMA, bit for bit."""
        a, b = (read_checkpoint(RunDir(d).last) for d in (self.run_dir, out))
        return all(torch.equal(a[p][k], b[p][k]) for p in ("model", "ema") for k in a[p])


def train_args(out: Path, settings: tuple[str, ...]) -> list[str]:
    return ["train", "--out", str(out), *sum((["--set", s] for s in settings), [])]


@contextlib.contextmanager
def loss_calls(at_call: Callable[[int], None] = lambda n: None):
    """Count the training loss's calls (one per optimizer step) while the block runs, `at_call(n)` at each."""
    real, calls = losses.soft_target_cross_entropy, [0]

    def loss(logits, targets):
        calls[0] += 1
        at_call(calls[0])
        return real(logits, targets)

    losses.soft_target_cross_entropy = loss
    try:
        yield calls
    finally:
        losses.soft_target_cross_entropy = real


def reference_run(out: Path, settings: tuple[str, ...]) -> Reference:
    with loss_calls() as calls:
        assert quiet_main(train_args(out, settings))[0] == 0
    return Reference(out, settings, calls[0] // 2)


def quiet_main(args: list[str]) -> tuple[int, str]:
    """`resmlp ...` in this process; (exit status, stderr)."""
    with tempfile.TemporaryFile("w+") as err:
        saved, fd = os.dup(2), err.fileno()
        os.dup2(fd, 2)
        old, sys.stderr = sys.stderr, open(fd, "w", closefd=False)
        try:
            code = main(args)
        finally:
            sys.stderr.flush()
            sys.stderr = old
            os.dup2(saved, 2)
            os.close(saved)
        err.seek(0)
        return code, err.read()


def resume(out: Path) -> int:
    return quiet_main(["train", "--resume", str(out)])[0]


def trial_sigterm(rng: random.Random, work: Path, reference: Reference) -> str:
    step, signum = rng.randrange(1, reference.steps), rng.choice([signal.SIGTERM, signal.SIGINT, signal.SIGUSR1])
    with loss_calls(lambda n: os.kill(os.getpid(), signum) if n == step else None):
        code, err = quiet_main(train_args(work, reference.settings))
    ckpt = read_checkpoint(RunDir(work).last)
    ok = (
        code == 128 + signum
        and "resume with" in err
        and ckpt["epoch"] * reference.steps_per_epoch + ckpt["step"] == step
        and resume(work) == 0
        and reference.same_as(work)
    )
    return "stopped at the step, resumed bit-exact" if ok else f"FAILED (step {step}, {signum}, exit {code})"


def _env() -> dict:
    return dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))


def trial_external(rng: random.Random, work: Path, reference: Reference) -> str:
    proc = subprocess.Popen(
        [sys.executable, "-m", "resmlp", *train_args(work, reference.settings)],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    for line in proc.stdout:  # the start line: set-up is done and the stop handlers are in place
        if line.startswith("run "):
            break
    time.sleep(rng.uniform(0.0, 8.0))  # a random point of the ~10-20 s of training on the loaded 2-core host
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate()
    if proc.returncode == 0:
        return "finished before the signal (not counted as a stop)"
    if proc.returncode == -signal.SIGTERM:
        return "FAILED (killed by the signal after the start line)"
    ok = proc.returncode == 128 + signal.SIGTERM and resume(work) == 0 and reference.same_as(work)
    return "stopped, resumed bit-exact" if ok else f"FAILED (exit {proc.returncode}: {err.strip()[-200:]})"


KILLER = """
import os, signal, sys, torch
from pathlib import Path
real, count, target, fraction, marker = torch.save, [0], int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
def save(obj, f, *a, **k):
    real(obj, f, *a, **k)
    if marker in str(f):
        count[0] += 1
        if count[0] == target:
            data = Path(f).read_bytes()
            Path(f).write_bytes(data[: int(len(data) * fraction)])
            os.kill(os.getpid(), signal.SIGKILL)
torch.save = save
from resmlp.cli import main
from resmlp.files import TMP_MARK
from resmlp.rundir import LAST, RunDir
sys.exit(main(sys.argv[4:]))
"""


def trial_sigkill(rng: random.Random, work: Path, reference: Reference) -> str:
    write, fraction = rng.choice([1, 2]), rng.random()
    done = subprocess.run(
        [sys.executable, "-c", KILLER, str(write), f"{fraction:.3f}", TMP_LAST, *train_args(work, reference.settings)],
        env=_env(),
        capture_output=True,
    )
    if done.returncode != -signal.SIGKILL:
        return f"FAILED (not killed: exit {done.returncode})"
    if write == 1:  # killed inside the very first write: nothing to resume, which --resume must say in one line
        code, err = quiet_main(["train", "--resume", str(work)])
        one_line = code == 2 and len(err.strip().splitlines()) == 1 and "no loadable checkpoint" in err
        return "first write killed: no checkpoint, --resume says so in one line" if one_line else f"FAILED ({err})"
    loads = read_checkpoint(RunDir(work).last)["epoch"] == 1
    ok = loads and resume(work) == 0 and reference.same_as(work)
    return "previous checkpoint intact, resumed bit-exact" if ok else "FAILED"


def trial_enospc(rng: random.Random, work: Path, reference: Reference) -> str:
    write, real, count = rng.choice([1, 2]), torch.save, [0]

    def save(obj, f, *args, **kwargs):
        if TMP_LAST in str(f):
            count[0] += 1
            if count[0] == write:
                Path(f).write_bytes(os.urandom(rng.randrange(1, 4096)))
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(obj, f, *args, **kwargs)

    torch.save = save
    try:
        code, err = quiet_main(train_args(work, reference.settings))
    finally:
        torch.save = real
    lines = err.strip().splitlines()
    one_line = code == 2 and len(lines) == 1 and "No space left on device" in lines[0]
    if write == 1:
        ok = one_line and not RunDir(work).last.exists()
        return "first write failed: one error line, no half file" if ok else f"FAILED ({err})"
    ok = one_line and read_checkpoint(RunDir(work).last)["epoch"] == 1 and resume(work) == 0 and reference.same_as(work)
    return "one error line, previous checkpoint kept, resumed bit-exact" if ok else f"FAILED ({err})"


TRIALS = {"sigterm": trial_sigterm, "external": trial_external, "sigkill": trial_sigkill, "enospc": trial_enospc}


def main_(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10, help="trials per fault (default 10)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--faults", default=",".join(TRIALS), help=f"comma-separated subset of {','.join(TRIALS)}")
    parser.add_argument(
        "--set",
        dest="extra",
        nargs="+",
        default=[],
        help="overrides after the trials' own (a smaller data set for a smoke run); keep optim.epochs=2",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        reference = reference_run(Path(tmp) / "reference", (*SETTINGS, *args.extra))
        results = {}
        for name in args.faults.split(","):
            outcomes = Counter(TRIALS[name](rng, Path(tmp) / f"{name}{i}", reference) for i in range(args.trials))
            results[name] = dict(outcomes)
            print(f"{name}: {json.dumps(results[name])}", flush=True)
    return 0 if not any("FAILED" in o for r in results.values() for o in r) else 1


if __name__ == "__main__":
    sys.exit(main_())
