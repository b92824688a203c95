"""How much memory this process may still take on the host: what the kernel counts as available, within
the limits of the cgroups it runs in (a container's, a systemd slice's or a cluster job's), which the
kernel's own count does not see.

    >>> available() > 0      # bytes; None where neither is known (not Linux)
    True
"""
from __future__ import annotations

from pathlib import Path

_PROC_CGROUP = Path("/proc/self/cgroup")
_CGROUP_V2 = Path("/sys/fs/cgroup")
_CGROUP_V1 = Path("/sys/fs/cgroup/memory")
# (limit, usage, stat, the stat's reclaimable file cache) of each version
_V2 = ("memory.max", "memory.current", "memory.stat", "inactive_file")
_V1 = ("memory.limit_in_bytes", "memory.usage_in_bytes", "memory.stat", "total_inactive_file")


def available() -> int | None:
    known = [n for n in (_meminfo_available(), _cgroup_room()) if n is not None]
    return min(known) if known else None


def _meminfo_available() -> int | None:
    """MemAvailable: free memory plus the page cache and buffers the kernel can reclaim."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_room() -> int | None:
    """The least room left under any limit of this process's memory cgroup or one above it; None where
    none has a limit."""
    rooms = [room for folder, names in _own_cgroups() if (room := _room(folder, *names)) is not None]
    return min(rooms, default=None)


def _own_cgroups() -> list[tuple[Path, tuple[str, ...]]]:
    """This process's memory cgroup folders, from its own up to the mount's root, v2 and v1."""
    try:
        lines = _PROC_CGROUP.read_text().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            mount, names = _CGROUP_V2, _V2
        elif "memory" in controllers.split(","):
            mount, names = _CGROUP_V1, _V1
        else:
            continue
        folder = mount / path.lstrip("/")
        if not folder.is_dir():  # a cgroup namespace (a container's): the mount's root is its own cgroup
            folder = mount
        out.append((folder, names))
        while folder != mount and mount in folder.parents:
            folder = folder.parent
            out.append((folder, names))
    return out


def _room(folder: Path, limit: str, usage: str, stat: str, inactive: str) -> int | None:
    """The limit less the usage, its reclaimable file cache not counted (as `docker stats` counts it);
    None without a limit."""
    try:
        cap = (folder / limit).read_text().strip()
        if cap == "max" or int(cap) >= 1 << 60:  # no limit: v2 writes "max", v1 a number near 2^63
            return None
        used = int((folder / usage).read_text()) - _stat(folder / stat, inactive)
    except (OSError, ValueError):
        return None
    return max(0, int(cap) - used)


def _stat(path: Path, key: str) -> int:
    for line in path.read_text().splitlines():
        name, _, value = line.partition(" ")
        if name == key:
            return int(value)
    return 0
