"""Per-epoch checkpoints of a trial, rotated, and the study's best weights.

    ck = Checkpoints(root / "trial-3", keep=2)
    ck.save(epoch, {"model": ..., "optimizer": ..., ...})
    state = ck.latest()        # None when there is none; loaded with weights_only=True

Writes go to a temporary file and are renamed into place, so a worker killed mid-save leaves the
previous checkpoint intact.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch

_NAME = re.compile(r"epoch-(\d+)\.pt$")


def atomic_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load(path: Path) -> Any:
    return torch.load(path, map_location="cpu", weights_only=True)


class Checkpoints:
    def __init__(self, folder: Path, keep: int = 2):
        self.folder, self.keep = Path(folder), keep

    def epochs(self) -> list[int]:
        if not self.folder.is_dir():
            return []
        return sorted(int(m.group(1)) for p in self.folder.iterdir() if (m := _NAME.search(p.name)))

    def path(self, epoch: int) -> Path:
        return self.folder / f"epoch-{epoch:04d}.pt"

    def save(self, epoch: int, state: dict[str, Any]) -> Path:
        path = self.path(epoch)
        atomic_save(state, path)
        for old in self.epochs()[:-self.keep]:
            self.path(old).unlink(missing_ok=True)
        return path

    def latest(self) -> dict[str, Any] | None:
        epochs = self.epochs()
        return load(self.path(epochs[-1])) if epochs else None
