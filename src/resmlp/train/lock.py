"""One run directory, one writer: `run_lock` holds `RUN/.lock` for as long as a run trains in it.

The lock is an advisory `flock` on that file, which names its holder (`pid host`). The kernel drops the
lock when the holder dies, even by SIGKILL, so a lock file left by a killed run is recognised as stale
and taken over; a live holder makes a second `resmlp train --out/--resume` on the directory an error.
"""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path
from typing import Iterator, Optional

from ..rundir import RunDir

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; the run directory is then unguarded
    fcntl = None


class RunDirectoryInUse(ValueError):
    """Another live process trains in this run directory."""


def _holder(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return ""
    return text


def _acquire(path: Path, run_dir: str | os.PathLike) -> int:
    """Open and flock `path`; retried when the file was replaced meanwhile (a holder unlinks it on exit)."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        if fcntl is None:
            return fd
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = _holder(path) or "unknown"
            raise RunDirectoryInUse(
                f"{run_dir} is in use by another run (pid and host: {holder}; lock file {path}); wait for it "
                "to end or stop it, or pick another --out"
            ) from None
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)  # we locked a file its holder had just unlinked: try the new one


@contextlib.contextmanager
def run_lock(run_dir: str | os.PathLike) -> Iterator[Optional[str]]:
    """Hold `run_dir`/.lock while inside; yields the stale holder taken over ("pid host"), or None."""
    path = RunDir(run_dir).lock
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = _acquire(path, run_dir)
    try:
        stale = _holder(path) or None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
        try:
            yield stale
        finally:
            path.unlink(missing_ok=True)  # still holding the lock: no one else can be between here and close
    finally:
        os.close(fd)


__all__ = ["RunDirectoryInUse", "run_lock"]
