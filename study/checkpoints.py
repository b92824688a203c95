"""Per-epoch checkpoints of one trial of one study, rotated, and the files that outlive a trial.

    >>> ck = Checkpoints(Path("trial-3"), keep=2, identity={"study": "ab12", "trial": 3, "config": {"lr": 0.1}})
    >>> for epoch in range(3):
    ...     _ = ck.save(epoch, {"epoch": epoch})   # the identity is stored with the state; two are kept
    >>> sorted(p.name for p in ck.folder.iterdir())
    ['epoch-0001.pt', 'epoch-0002.pt']
    >>> ck.latest()["epoch"]                     # the newest readable one of this identity, loaded weights_only
    2
    >>> other = Checkpoints(Path("trial-3"), identity={"study": "ab12", "trial": 3, "config": {"lr": 0.2}})
    >>> other.latest() is None, other.warnings[0]   # what latest() skipped, and why
    (True, 'epoch-0002.pt belongs to another study, trial or config; ignored')
    >>> ck.clear(); ck.folder.exists()           # a trial that starts fresh, or has finished, keeps no epoch files
    False

A checkpoint is resumed only if it carries the same study, trial and resolved config: files that a
deleted study, another trial or another config left in the folder are ignored and then cleared. Writes
go to a temporary file that is renamed into place, so a worker killed mid-save leaves the previous
checkpoint intact; a damaged file is skipped in favour of the one before it, never fatal.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from study.files import atomic_write

_NAME = re.compile(r"epoch-(\d+)\.pt$")


def atomic_save(obj: Any, path: Path) -> None:
    atomic_write(path, lambda f: torch.save(obj, f))


def load(path: Path) -> Any:
    return torch.load(path, map_location="cpu", weights_only=True)


def try_load(path: Path) -> tuple[Any, str | None]:
    """(the object, None), or (None, why it could not be read): truncated, empty, not a torch file,
    refused by weights_only=True."""
    try:
        return load(path), None
    except Exception as exc:  # torch raises RuntimeError, UnpicklingError, EOFError, zipfile errors...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return None, f"{path.name} could not be read ({type(exc).__name__}: {first[:160]})"


class Checkpoints:
    def __init__(self, folder: Path, keep: int = 2, identity: dict[str, Any] | None = None):
        self.folder, self.keep, self.identity = Path(folder), keep, identity
        self.warnings: list[str] = []

    def epochs(self) -> list[int]:
        if not self.folder.is_dir():
            return []
        return sorted(int(m.group(1)) for p in self.folder.iterdir() if (m := _NAME.search(p.name)))

    def path(self, epoch: int) -> Path:
        return self.folder / f"epoch-{epoch:04d}.pt"

    def save(self, epoch: int, state: dict[str, Any]) -> Path:
        path = self.path(epoch)
        atomic_save({**state, "identity": self.identity}, path)
        for old in self.epochs()[:-self.keep]:
            self.path(old).unlink(missing_ok=True)
        return path

    def latest(self) -> dict[str, Any] | None:
        for epoch in reversed(self.epochs()):
            state, problem = try_load(self.path(epoch))
            if problem:
                self.warnings.append(f"{problem}; skipped")
            elif not isinstance(state, dict) or state.get("identity") != self.identity:
                self.warnings.append(f"{self.path(epoch).name} belongs to another study, trial or config; ignored")
            else:
                return state
        return None

    def clear(self) -> None:
        """Remove every epoch checkpoint (and temporary file) in the folder, and the folder if empty."""
        if not self.folder.is_dir():
            return
        for p in self.folder.iterdir():
            if _NAME.search(p.name) or p.name.endswith(".tmp"):
                p.unlink(missing_ok=True)
        try:
            self.folder.rmdir()
        except OSError:  # something else lives there (a kept final.pt)
            pass
