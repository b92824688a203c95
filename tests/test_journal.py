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
        backend.append_logs([{"op_code": 0}])
        before = (folder / "j.log").read_bytes()
        filler = folder / "filler"
        filler.write_bytes(bytes(shutil.disk_usage(folder).free - 4096))
        with pytest.raises(OSError, match="No space left"):  # a batch larger than the room left
            backend.append_logs([{"op_code": 1, "pad": "x" * 100} for _ in range(200)])
        assert (folder / "j.log").read_bytes() == before  # Optuna's own append left part of a line here
        filler.unlink()
        backend.append_logs([{"op_code": 2}])
        assert list(JournalFile(path).read_logs(0)) == [{"op_code": 0}, {"op_code": 2}]


def test_opening_drops_the_part_line_a_killed_writer_left(tmp_path):
    path = tmp_path / "j.log"
    path.write_bytes(b'{"op_code":0}\n{"op_code":1,"pa')  # a process killed in the middle of its write
    backend = JournalFile(str(path))
    backend.append_logs([{"op_code": 2}])  # Optuna's would continue the cut line: '{"op_code":1,"pa{"op_code":2}'
    assert list(JournalFile(str(path)).read_logs(0)) == [{"op_code": 0}, {"op_code": 2}]


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


def test_a_first_line_cut_short_is_still_a_journal(tmp_path):
    path = tmp_path / "j.log"
    path.write_bytes(b'{"op_c')  # killed in its very first write
    JournalFile(str(path)).append_logs([{"op_code": 0}])
    assert list(JournalFile(str(path)).read_logs(0)) == [{"op_code": 0}]


def test_a_file_that_is_no_journal_is_refused_untouched(tmp_path, synth_space):
    """A study.db passed without sqlite:/// was opened as a journal, and its last "part-line" cut: the study was
    lost ("database disk image is malformed"). Any other file lost its last line the same way."""
    made = run_cli("run", str(synth_space), "--storage", "sqlite:///s.db", "--trials", "1", "-q", "--no-report",
                   cwd=tmp_path)  # a process, whose exit leaves the study in s.db alone
    assert made.returncode == 0, made.stderr
    (tmp_path / "notes.txt").write_bytes(b"my notes\nthe last line, with no newline")
    before = {f.name: f.read_bytes() for f in tmp_path.iterdir() if f.is_file()}
    for path, why in [("s.db", "s.db is a SQLite database, not a journal file: pass sqlite:///s.db"),
                      ("notes.txt", "notes.txt is not an Optuna journal file (it begins b'my notes\\nth'); it was "
                                    "left as it is")]:
        for command in [("list",), ("run", str(synth_space)), ("report",)]:
            result = call_cli(*command, "--storage", path, cwd=tmp_path)
            assert result.returncode == 2, result.stderr
            assert result.stderr == f"error: --storage: storage: cannot open the storage: {why} (got '{path}')\n"
    assert {f.name: f.read_bytes() for f in tmp_path.iterdir() if f.is_file()} == before
