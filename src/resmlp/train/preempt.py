"""Stopping on request: SIGTERM, SIGINT and SIGUSR1 (SLURM's advance warning) end a run at the next
optimizer-step boundary, after a checkpoint, instead of killing it mid-step.

`StopSignals` records the signal (a second one of the same kind acts at once: Ctrl-C twice interrupts);
`StepGate.poll` is asked after every optimizer step whether to stop and whether a periodic checkpoint
(`run.checkpoint_every_min`) is due. Under torchrun the answer is agreed by all processes (one small
all-reduce per step), so every rank stops after the same step even when only one got the signal.
"""

from __future__ import annotations

import signal
import threading
import time
from dataclasses import dataclass
from typing import Optional

import torch

from . import distributed as dist

STOP_SIGNALS = tuple(s for s in (getattr(signal, n, None) for n in ("SIGTERM", "SIGINT", "SIGUSR1")) if s is not None)


class StopSignals:
    """Context manager: while inside, the stop signals set `signum` instead of ending the process."""

    def __init__(self) -> None:
        self.signum: Optional[int] = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: object) -> None:
        if self.signum == signum:  # asked twice: give the signal its usual effect now
            self._restore()
            signal.raise_signal(signum)
            return
        self.signum = signum

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():  # handlers can only be set there
            for s in STOP_SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def _restore(self) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous.clear()

    def __exit__(self, *exc: object) -> None:
        self._restore()


def ignore_stop_signals(worker_id: int) -> None:
    """DataLoader `worker_init_fn`: workers leave stopping to the training process (a scheduler signals the
    whole process group; a worker killed by it would take the run down before the checkpoint)."""
    for s in STOP_SIGNALS:
        signal.signal(s, signal.SIG_IGN)


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name


@dataclass(frozen=True)
class Decision:
    stop: Optional[int]  # the signal number to stop for, else None
    save: bool  # a periodic checkpoint is due


class StepGate:
    """After each optimizer step: stop (a signal arrived in any process)? save (rank 0's timer is due)?"""

    def __init__(self, signals: StopSignals, *, every_min: float | None, device: torch.device) -> None:
        self.signals = signals
        self.every_s = every_min * 60 if every_min else None
        self.device = device
        self.last_save = time.monotonic()

    def saved(self) -> None:
        """A checkpoint was just written: the periodic timer starts again."""
        self.last_save = time.monotonic()

    def poll(self) -> Decision:
        due = self.every_s is not None and dist.is_main() and time.monotonic() - self.last_save >= self.every_s
        signum = self.signals.signum or 0
        if dist.world_size() > 1:  # every rank must take the same branch: agree on both flags
            flags = torch.tensor([float(signum), float(due)], device=self.device)
            flags = dist.all_reduce_max(flags)
            signum, due = int(flags[0].item()), bool(flags[1].item())
        return Decision(stop=signum or None, save=due)


__all__ = ["Decision", "STOP_SIGNALS", "StepGate", "StopSignals", "ignore_stop_signals", "signal_name"]
