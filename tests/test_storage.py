"""Storages: the embedded SQLite default, Optuna's journal file, and real PostgreSQL and Redis servers."""
import shutil
import sqlite3
import subprocess
import sys
import threading
import time

import optuna
import pytest
from optuna.trial import TrialState

from conftest import call_cli, cli_env, finished, run_cli, tmpfs
from study.records import TrialRecord
from study.storage import existing_storage, has_heartbeat, open_storage


def test_sqlite_default_is_wal_with_a_heartbeat(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path / 'x.db'}")
    assert has_heartbeat(storage)
    with sqlite3.connect(tmp_path / "x.db") as con:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_workers_that_create_one_sqlite_file_at_once_all_open_it(tmp_path):
    """Two `study run` in two terminals on a fresh folder: each finds no tables and creates them, and the
    slower one used to stop with SQLite's "table studies already exists". Here the file exists and a
    writer holds its lock, so that every opener has looked and found no tables before any creates them."""
    url = f"sqlite:///{tmp_path / 'new.db'}"
    with sqlite3.connect(tmp_path / "new.db") as con:
        con.execute("PRAGMA journal_mode=WAL")
    holder = sqlite3.connect(tmp_path / "new.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    errors = []

    def open_it():
        try:
            open_storage(url)
        except Exception as exc:
            errors.append(exc)

    openers = [threading.Thread(target=open_it) for _ in range(4)]
    for t in openers:
        t.start()
    time.sleep(1.5)  # each has read the empty schema and waits for the write lock
    holder.execute("COMMIT")
    for t in openers:
        t.join(timeout=60)
    assert errors == []
    assert optuna.get_all_study_summaries(open_storage(url)) == []


@pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")  # a heartbeat's traceback
def test_a_storage_that_fills_up_stops_the_run_with_one_line_and_the_rerun_resumes(tmp_path, synth_space):
    """SQLite's "database or disk is full" came as Optuna's StorageInternalError, whose own words name no cause
    ("... e.g. exceeding max length"), under a traceback."""
    with tmpfs(tmp_path / "full", "size=2m") as folder:
        url = f"sqlite:///{folder / 's.db'}"
        args = ("run", str(synth_space), "--storage", url, "--heartbeat", "1", "-q", "--no-report")
        first = run_cli(*args, "--trials", "1", cwd=tmp_path)  # a process: its exit folds the WAL into s.db
        assert first.returncode == 0, first.stderr
        filler = folder / "filler"
        filler.write_bytes(bytes(shutil.disk_usage(folder).free - 48 * 1024))  # room to open it, not to go on
        full = call_cli(*args, "--trials", "3", cwd=tmp_path)
        assert full.returncode == 1 and full.stderr == (
            f"error: the storage {url} failed: database or disk is full. What it stored before is kept: rerun the "
            "command once it works again.\n")
        filler.unlink()
        again = call_cli(*args, "--trials", "3", cwd=tmp_path)
        assert again.returncode == 0, again.stderr
        assert len(finished(optuna.load_study(study_name="synth", storage=url).get_trials())) == 3


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_a_study_this_process_may_only_read_is_listed_and_reported_unchanged(tmp_path, synth_space, kind):
    """A study file on a read-only mount (or another user's): SQLite's was opened for writing, which failed with
    "attempt to write a readonly database"; a report over a journal file wrote its files and then said it was
    not written, when only the dashboard note failed."""
    with tmpfs(tmp_path / "ro", "size=4m") as folder:
        url = f"sqlite:///{folder / 's.db'}" if kind == "sqlite" else str(folder / "journal.log")
        made = run_cli("run", str(synth_space), "--storage", url, "-q", "--no-report", cwd=tmp_path)  # closed at exit
        assert made.returncode == 0, made.stderr
        subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
        files = {f.name: f.read_bytes() for f in folder.iterdir()}
        listed = call_cli("list", "--storage", url, cwd=tmp_path)
        assert listed.returncode == 0 and listed.stdout.startswith("synth "), listed.stderr
        assert "3 complete" in listed.stdout
        reported = call_cli("report", "--storage", url, "--out", "out", cwd=tmp_path)
        assert reported.returncode == 0, reported.stderr
        assert reported.stderr.startswith("warning: the report is written, but the storage took no dashboard note")
        assert (tmp_path / "out" / "synth" / "index.html").is_file()
        assert {f.name: f.read_bytes() for f in folder.iterdir()} == files


def test_journal_file_storage_runs_a_study(tmp_path, synth_space):
    result = call_cli("run", str(synth_space), "--storage", str(tmp_path / "journal.log"), "-q", "--no-report",
                      cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    study = optuna.load_study(study_name="synth", storage=existing_storage(str(tmp_path / "journal.log")))
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 3
    assert f"dashboard: optuna-dashboard {tmp_path / 'journal.log'}" in result.stdout


@pytest.mark.redis
def test_two_workers_share_one_redis_study(tmp_path, synth_space, redis_url):
    """Optuna's Redis journal, as the table of README's "What survives what" names it: `--jobs 2` reaches
    the exact target, and the dashboard command and `list` take the same URL."""
    result = run_cli("run", str(synth_space), "--storage", redis_url, "--trials", "4", "--jobs", "2", "-q",
                     "--no-report", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"dashboard: optuna-dashboard {redis_url}" in result.stdout
    trials = optuna.load_study(study_name="synth", storage=open_storage(redis_url)).get_trials()
    assert len([t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]) == 4
    listed = call_cli("list", "--storage", redis_url, cwd=tmp_path)
    assert listed.returncode == 0 and listed.stdout.startswith("synth ")


def test_reading_never_creates_a_storage(tmp_path):
    assert existing_storage(f"sqlite:///{tmp_path / 'none.db'}") is None
    assert existing_storage(str(tmp_path / "none.log")) is None
    assert not list(tmp_path.iterdir())


@pytest.mark.postgres
def test_three_workers_share_one_postgresql_study(tmp_path, synth_space, pg_url):
    procs = [subprocess.Popen([sys.executable, "-m", "study", "run", str(synth_space), "--storage", pg_url,
                               "--trials", "9", "-q", "--no-report", "--set", f"study.sampler.seed={i}"],
                              cwd=tmp_path, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(3)]
    for p in procs:
        out, err = p.communicate(timeout=240)
        assert p.returncode == 0, err
    study = optuna.load_study(study_name="synth", storage=pg_url)
    trials = study.get_trials()
    done = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(done) == 9
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers))
    for t in done:
        assert len(TrialRecord.of(t).history) == 3 and TrialRecord.of(t).config["dataset"] == "synthetic"


POP = """
import sys
import optuna
from study.storage import open_storage

optuna.logging.set_verbosity(optuna.logging.ERROR)
study = optuna.load_study(study_name="pop", storage=open_storage(sys.argv[1]))
for _ in range(int(sys.argv[2])):
    trial_id = study._pop_waiting_trial_id()  # what study.ask() does first
    if trial_id is not None:
        print(trial_id, flush=True)
"""


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres),
                                  pytest.param("redis", marks=pytest.mark.redis)])
def test_a_queued_trial_is_taken_by_exactly_one_worker(tmp_path, kind, request):
    """Queued trials (interrupted ones, retries) are popped by workers racing each other; each must be
    run once. SQLite's driver reads outside a transaction unless told otherwise."""
    url = {"sqlite": f"sqlite:///{tmp_path / 'pop.db'}", "postgresql": "pg_url", "redis": "redis_url"}[kind]
    url = request.getfixturevalue(url) if kind != "sqlite" else url
    study = optuna.create_study(study_name="pop", storage=open_storage(url))
    for i in range(60):
        study.enqueue_trial({"x": i})
    procs = [subprocess.Popen([sys.executable, "-c", POP, url, "40"], cwd=tmp_path, env=cli_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)]
    popped = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        popped += out.split()
    assert len(popped) == 60 and len(set(popped)) == 60


def test_a_storage_password_is_never_printed(tmp_path, synth_space, pg_url):
    """Logs of runs outlive them. The server trusts 127.0.0.1, so any password connects; each place that
    prints the URL (the summary's dashboard command, the errors that name the storage) shows *** instead."""
    url = pg_url.replace("postgres@", "postgres:s3cret-Token@")
    ran = call_cli("run", str(synth_space), "--storage", url, "--trials", "1", "--no-report", cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert f"dashboard: optuna-dashboard '{url.replace('s3cret-Token', '***')}'" in ran.stdout
    missing = call_cli("report", "--storage", url, "--study-name", "nope", cwd=tmp_path)
    other = tmp_path / "other.yaml"
    other.write_text(synth_space.read_text().replace("n_samples: 160", "n_samples: 161"))
    changed = call_cli("run", str(other), "--storage", url, "--trials", "1", cwd=tmp_path)
    gone = call_cli("list", "--storage", url.rsplit("/", 1)[0] + "/no_such_db_here", cwd=tmp_path)
    for result, says in ((missing, "no such study in"), (changed, "different search space"),
                         (gone, "cannot open the storage")):
        assert result.returncode == 2 and says in result.stderr and "postgres:***@" in result.stderr, result.stderr
    assert not any("s3cret" in r.stdout + r.stderr for r in (ran, missing, changed, gone))
