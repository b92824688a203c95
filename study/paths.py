"""File-system names derived from untrusted values: study names, identities and trial numbers read
back from a storage that anyone with access can write to.

    >>> folder = study_dir(Path("checkpoints"), "my study", "0123456789abcdef" * 2)
    >>> folder.name                                   # the safe name, a hash of the raw one, uid[:12]
    'my_study-2dbcc6d2-0123456789ab'
    >>> trial_dir(folder, 3).name
    'trial-3'
    >>> trial_dir(folder, "../../etc")
    Traceback (most recent call last):
    ...
    ValueError: trial number '../../etc' is not a non-negative integer

Every path built from such a value goes through `child`, which keeps it inside its root.
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

_UID = re.compile(r"[0-9a-f]{32}")


def safe_name(name: str) -> str:
    """A single, harmless path component for `name`: no separators, no `..`, never empty.

    Names that had to change get a short hash, so that two different studies never share a folder."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._-")[:80] or "study"
    if slug != name:
        slug = f"{slug}-{hashlib.sha1(name.encode('utf-8', 'surrogatepass')).hexdigest()[:8]}"
    return slug


def child(root: Path, name: str) -> Path:
    """root / safe_name(name), checked to stay inside root (a symbolic link out of it is refused)."""
    root = Path(root).resolve()
    path = (root / safe_name(name)).resolve()
    if path.parent != root:
        raise ValueError(f"{name!r} does not name a folder inside {root}")
    return path


def is_uid(value: Any) -> bool:
    return isinstance(value, str) and _UID.fullmatch(value) is not None


def study_dir(root: Path, name: str, uid: str) -> Path:
    """The folder of one study: keyed by its identity, so that a new study of the same name never meets
    an old one's files."""
    if not is_uid(uid):
        raise ValueError(f"study identity {uid!r} is not 32 hex digits")
    return child(root, f"{safe_name(name)}-{uid[:12]}")


def is_trial_number(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def trial_dir(study_folder: Path, number: int) -> Path:
    if not is_trial_number(number):
        raise ValueError(f"trial number {number!r} is not a non-negative integer")
    return child(study_folder, f"trial-{number}")
