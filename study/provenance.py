"""What a result was produced with: versions and the git revision, stored with every trial."""
from __future__ import annotations

import functools
import platform
import subprocess
from importlib import metadata
from pathlib import Path


@functools.lru_cache(maxsize=1)
def provenance() -> dict[str, str]:
    versions = {}
    for pkg in ("study", "torch", "optuna", "numpy", "scikit-learn"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = "not installed"
    return {"python": platform.python_version(), **versions, "git_revision": _git_revision()}


def _git_revision() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent,
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"
