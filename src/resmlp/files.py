"""Files we write and fingerprint: one atomic writer and one file digest for the whole package."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Callable

TMP_MARK = ".tmp"  # temporary files are named .<name>.tmp<pid>; a killed writer may leave one behind


def write_atomic(
    path: str | os.PathLike, write: Callable[[Path], object], *, keep_previous: str | os.PathLike | None = None
) -> Path:
    """Call `write(tmp)` on a temporary file beside `path`, flush it to disk, then rename it over `path`.

    A crash (or an exception from `write`: a failed export check, a full disk) never leaves half a file
    at `path`: readers see the old file or the new one, and the temporary file is removed.
    `keep_previous`: before the rename, the old `path` also becomes this name (a hard link, so there is
    no moment without a complete `path`), a second copy to fall back on.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}")
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        if keep_previous is not None and path.exists():
            _link_over(path, Path(keep_previous))
        tmp.replace(path)
        _fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _link_over(src: Path, dst: Path) -> None:
    """Make `dst` another name of `src`'s file, replacing `dst` atomically (a copy where links fail)."""
    staged = dst.with_name(f".{dst.name}{TMP_MARK}{os.getpid()}")
    staged.unlink(missing_ok=True)
    try:
        os.link(src, staged)
    except OSError:  # a file system without hard links
        import shutil  # noqa: PLC0415

        shutil.copyfile(src, staged)
    staged.replace(dst)


def _fsync_dir(directory: Path) -> None:
    """Make a rename in `directory` durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_stale_temporaries(directory: str | os.PathLike) -> list[Path]:
    """Delete the temporary files a killed writer left in `directory` (call only while no one writes there)."""
    removed = []
    for p in Path(directory).glob(f".*{TMP_MARK}*"):
        if p.is_file():
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    return write_atomic(path, lambda tmp: tmp.write_text(text))


def file_digest(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes with hashlib's `algorithm`: sha256 identifies a teacher or an exported
    model, md5 checks a download against its publisher's checksum. Identities and checksums, not security
    (so md5 works where FIPS mode forbids it for security)."""
    h = hashlib.new(algorithm, usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes (identifies a teacher or an exported model)."""
    return file_digest(path, "sha256")
