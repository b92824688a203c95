"""File-system names derived from untrusted strings (study names)."""
from __future__ import annotations

import hashlib
import re
from pathlib import Path


def safe_name(name: str) -> str:
    """A single, harmless path component for `name`: no separators, no `..`, never empty.

    Names that had to change get a short hash, so that two different studies never share a folder."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._-")[:80] or "study"
    if slug != name:
        slug = f"{slug}-{hashlib.sha1(name.encode()).hexdigest()[:8]}"
    return slug


def child(root: Path, name: str) -> Path:
    """root / safe_name(name), checked to stay inside root."""
    root = Path(root).resolve()
    path = (root / safe_name(name)).resolve()
    if path.parent != root:
        raise ValueError(f"{name!r} does not name a folder inside {root}")
    return path
