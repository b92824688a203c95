"""Writes that fail leave nothing half-written; a full disk is reported as such and the study stays
consistent. The full disk is a real one: a small tmpfs, filled up."""
import optuna
import pytest
from optuna.trial import TrialState

from conftest import call_cli, tmpfs
from study.errors import ConfigError
from study.files import DiskFull, atomic_write_text, check_writable
from study.records import TrialRecord


@pytest.fixture
def full_disk(tmp_path):
    with tmpfs(tmp_path / "full", "size=256k") as folder:
        try:
            (folder / "filler").write_bytes(b"\0" * 256 * 1024)
        except OSError:
            pass  # full: as intended
        yield folder


def _leftovers(folder):
    return [p for p in folder.rglob("*") if p.is_file() and p.name != "filler"]


def test_a_write_to_a_full_disk_says_so_and_leaves_no_temporary_file(full_disk):
    with pytest.raises(DiskFull, match=f"^no space left on device: cannot write {full_disk}/a/index.html$"):
        atomic_write_text(full_disk / "a" / "index.html", "x" * 100_000)
    assert _leftovers(full_disk) == []


def test_a_checkpoint_that_fills_the_disk_part_way_says_so_too(tmp_path):
    """torch.save's error is then "unexpected pos 704 vs 598", over the OSError it met."""
    import shutil

    import torch

    from study.files import atomic_write

    with tmpfs(tmp_path / "part", "size=256k") as folder:
        (folder / "filler").write_bytes(bytes(shutil.disk_usage(folder).free - 20_000))
        with pytest.raises(DiskFull, match=f"^no space left on device: cannot write {folder}/epoch.pt$"):
            atomic_write(folder / "epoch.pt", lambda f: torch.save({"w": torch.zeros(20_000)}, f))
        assert _leftovers(folder) == []


def test_checkpoints_on_a_full_disk_fail_the_trials_plainly_and_the_study_stays_consistent(tmp_path, synth_space,
                                                                                           full_disk):
    result = call_cli("run", str(synth_space), "--storage", "sqlite:///s.db", "--checkpoint-dir", str(full_disk),
                      "--no-report", cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "stopped: 5 trials in a row failed; last error: DiskFull: no space left on device" in result.stdout
    trials = optuna.load_study(study_name="synth", storage=f"sqlite:///{tmp_path / 's.db'}").get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL] * 5
    assert all(TrialRecord.of(t).error.startswith("DiskFull: no space left on device: cannot write ") for t in trials)
    assert _leftovers(full_disk) == []


def test_a_report_on_a_full_disk_is_one_error_line_and_leaves_no_temporary_file(tmp_path, synth_space, full_disk):
    assert call_cli("run", str(synth_space), "--storage", "sqlite:///s.db", "-q", "--no-report",
                    cwd=tmp_path).returncode == 0
    result = call_cli("report", "--storage", "sqlite:///s.db", "--out", str(full_disk), cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith("error: the report was not written: no space left on device: cannot write ")
    assert result.stderr.count("\n") == 1 and _leftovers(full_disk) == []


def test_check_writable_creates_nothing(tmp_path):
    check_writable(tmp_path / "a" / "b" / "c", "--out")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is not a folder"):
        check_writable(tmp_path / "file" / "sub", "--out")
