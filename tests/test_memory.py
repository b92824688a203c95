"""The host memory a population may plan to fill: the kernel's available memory, within the limits of the
process's cgroups, read from files laid out as the kernel writes them."""
import pytest

from study import memory


def test_available_is_the_kernel_s_count_or_less():
    kernel = memory._meminfo_available()
    assert kernel is not None and 0 < memory.available() <= kernel


@pytest.fixture
def cgroups(tmp_path, monkeypatch):
    """Empty cgroup v2 and v1 mounts, and this process's /proc/self/cgroup, to be written by each test."""
    v2, v1, proc = tmp_path / "v2", tmp_path / "v1", tmp_path / "cgroup"
    v1.mkdir()
    v2.mkdir()
    for name, value in (("_CGROUP_V2", v2), ("_CGROUP_V1", v1), ("_PROC_CGROUP", proc)):
        monkeypatch.setattr(memory, name, value)
    return v2, v1, proc


def _limit(folder, files: dict):
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)


def test_a_container_s_limit_bounds_what_is_available(cgroups):
    """A container on a large host (cgroup v2, its own namespace: /proc says "/", the mount is its cgroup):
    the kernel's count is the host's, the container's limit far less; its reclaimable file cache is room,
    which the kernel frees before an OOM kill."""
    v2, _, proc = cgroups
    proc.write_text("0::/\n")
    assert memory._cgroup_room() is None
    _limit(v2, {"memory.max": "4294967296\n", "memory.current": "1073741824\n",
                "memory.stat": "anon 805306368\nfile 268435456\ninactive_file 268435456\n"})
    assert memory._cgroup_room() == 4294967296 - 1073741824 + 268435456
    assert memory.available() == min(memory._meminfo_available(), memory._cgroup_room())
    (v2 / "memory.max").write_text("max\n")  # no limit
    assert memory._cgroup_room() is None


def test_the_tightest_limit_of_the_process_s_cgroup_and_those_above_it_counts(cgroups):
    """A job in a slice (cgroup v1, no namespace): the job's own folder has no limit, the slice above it
    has one, and the root has none."""
    _, v1, proc = cgroups
    proc.write_text("12:cpu,cpuacct:/slice/job\n4:memory:/slice/job\n0::/slice/job\n")
    unlimited = {"memory.limit_in_bytes": "9223372036854771712\n", "memory.usage_in_bytes": "1000\n",
                 "memory.stat": "total_inactive_file 0\n"}
    _limit(v1, unlimited)
    _limit(v1 / "slice" / "job", unlimited)
    assert memory._cgroup_room() is None
    _limit(v1 / "slice", {"memory.limit_in_bytes": "2147483648\n", "memory.usage_in_bytes": "2200000000\n",
                          "memory.stat": "cache 0\ntotal_inactive_file 100000000\n"})
    assert memory._cgroup_room() == 2147483648 - 2200000000 + 100000000
    (v1 / "slice" / "memory.usage_in_bytes").write_text("2900000000\n")
    assert memory._cgroup_room() == 0  # over its limit: no room, not a negative one


def test_no_cgroup_file_is_no_limit(cgroups):
    assert memory._cgroup_room() is None  # no /proc/self/cgroup: not Linux
