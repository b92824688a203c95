"""What a result was produced with: versions and the git revision, stored with every trial."""
from __future__ import annotations

import functools
import platform
import re
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
    if "+" not in versions["torch"]:
        versions["torch"] = _torch_build() or versions["torch"]
    return {"python": platform.python_version(), **versions, "git_revision": _git_revision()}


def _torch_build() -> str | None:
    """torch.__version__ with its build's tag (2.5.1+cu124), which PyPI's CUDA wheels leave out of the
    version pip records: read from torch/version.py, since importing torch takes a second."""
    try:
        text = Path(metadata.distribution("torch").locate_file("torch/version.py")).read_text()
    except (metadata.PackageNotFoundError, OSError):
        return None
    found = re.search(r"^__version__\s*=\s*['\"]([^'\"]+)['\"]", text, re.MULTILINE)
    return found[1] if found else None


def _git_revision() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent,
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"
