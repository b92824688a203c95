"""Writing files so that a failure leaves nothing half-written, and checking output folders up front.

    >>> atomic_write(Path("out.txt"), lambda f: f.write(b"done"))   # a temporary file renamed into place
    >>> Path("out.txt").read_text()
    'done'
    >>> check_writable(Path("out.txt"), "--report-dir")   # a ConfigError now, not after an hour of training
    Traceback (most recent call last):
    ...
    study.errors.ConfigError: --report-dir: report-dir: out.txt is not a folder (got 'out.txt')

A full disk is reported as such: `DiskFull("no space left on device: <path>")`.
"""
from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import IO, Callable

from study.errors import ConfigError


class DiskFull(OSError):
    """A write failed for lack of space (or quota); the message says so plainly."""

    def __str__(self) -> str:
        return str(self.strerror)


def atomic_write(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    """Call write(f) on a temporary file beside `path`, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if _disk_full(exc):
            raise DiskFull(errno.ENOSPC, f"no space left on device: cannot write {path}") from None
        raise


def _disk_full(exc: BaseException | None) -> bool:
    """Whether a write failed for lack of space. torch.save says so in its own words when the disk is full
    to begin with, and as "unexpected pos 704 vs 598" when it fills part-way, over the OSError it met."""
    for _ in range(8):  # down the chain of causes and contexts, a link or two in practice
        if exc is None:
            return False
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if isinstance(exc, RuntimeError) and "No space left on device" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def check_writable(path: Path, flag: str) -> None:
    """Refuse an output folder that could not be created or written, without creating anything."""
    path = Path(path)
    probe = path
    while not probe.exists():
        if probe.is_symlink():
            raise ConfigError(flag, flag.lstrip("-"), str(path), f"{probe} is a broken symbolic link")
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise ConfigError(flag, flag.lstrip("-"), str(path), f"{probe} is not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        reason = "is on a read-only file system" if _read_only(probe) else "is not writable"
        raise ConfigError(flag, flag.lstrip("-"), str(path), f"cannot write there: {probe} {reason}")


def _read_only(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        return False
