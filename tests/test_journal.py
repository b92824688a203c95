"""Optuna's journal file with whole-line appends: a full disk or a killed writer never costs the lines before."""
import shutil

import optuna
import pytest

from conftest import call_cli, finished, run_cli, tmpfs
from study.journal import JournalFile

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")


def test_an_append_that_fills_the_disk_is_undone_and_the_next_one_parses(tmp_path):
    with tmpfs(tmp_path / "full", "size=256k") as folder:
        path = str(folder / "j.log")
        backend = JournalFile(path)
        backend.append_logs([{"op": 0}])
        before = (folder / "j.log").read_bytes()
        filler = folder / "filler"
        filler.write_bytes(bytes(shutil.disk_usage(folder).free - 4096))
        with pytest.raises(OSError, match="No space left"):  # a batch larger than the room left
            backend.append_logs([{"op": 1, "pad": "x" * 100} for _ in range(200)])
        assert (folder / "j.log").read_bytes() == before  # Optuna's own append left part of a line here
        filler.unlink()
        backend.append_logs([{"op": 2}])
        assert list(JournalFile(path).read_logs(0)) == [{"op": 0}, {"op": 2}]


def test_opening_drops_the_part_line_a_killed_writer_left(tmp_path):
    path = tmp_path / "j.log"
    path.write_bytes(b'{"op":0}\n{"op":1,"pa')  # a process killed in the middle of its write
    backend = JournalFile(str(path))
    backend.append_logs([{"op": 2}])  # Optuna's would continue the cut line: '{"op":1,"pa{"op":2}'
    assert list(JournalFile(str(path)).read_logs(0)) == [{"op": 0}, {"op": 2}]


def test_a_journal_study_whose_disk_fills_up_resumes_once_there_is_room(tmp_path, synth_space):
    """Until 2026-12-07 the rerun could not open the study at all: "Expecting ',' delimiter"."""
    with tmpfs(tmp_path / "full", "size=1m") as folder:
        journal = str(folder / "j.log")
        args = ("run", str(synth_space), "--storage", journal, "-q", "--no-report")
        assert call_cli(*args, "--trials", "1", cwd=tmp_path).returncode == 0
        filler = folder / "filler"
        filler.write_bytes(bytes(shutil.disk_usage(folder).free - 2048))
        full = run_cli(*args, "--trials", "4", cwd=tmp_path)  # a process: its trial's worker must be gone
        assert full.returncode == 1 and "No space left on device" in full.stderr, full.stderr
        filler.unlink()
        again = call_cli(*args, "--trials", "4", "--retry-stale", cwd=tmp_path)
        assert again.returncode == 0, again.stdout + again.stderr
        study = optuna.load_study(study_name="synth", storage=optuna.storages.JournalStorage(JournalFile(journal)))
        assert len(finished(study.get_trials())) == 4
