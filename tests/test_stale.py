"""Journal storages (a file, Redis) have no heartbeat: a killed run's trials stay RUNNING. A rerun says so
and exits non-zero; `--retry-stale` fails and re-queues them, and the retries resume from their checkpoints."""
import signal

import pytest

from optuna.trial import TrialState

from conftest import call_cli, finished, start, trials, wait_for
from study.storage import existing_storage
from study import records
from study.records import TrialRecord


@pytest.mark.parametrize("kind", ["file", pytest.param("redis", marks=pytest.mark.redis)])
def test_a_killed_run_on_a_journal_storage_is_retried_at_once_on_its_machine_else_with_retry_stale(
        tmp_path, slow_space, kind, request):
    """A journal has no heartbeat. A worker that ran on this machine is known dead (its process is gone), so
    a rerun retries its trial; one that ran elsewhere cannot be told from a live one: the rerun says so,
    and `--retry-stale` is the user's word that no other worker runs it."""
    journal = str(tmp_path / "journal.log") if kind == "file" else request.getfixturevalue("redis_url")
    first = start(slow_space, tmp_path, "--trials", "4", "-q", storage=journal)
    wait_for(tmp_path, "checkpoints/synth-*/trial-1/epoch-0002.pt", first)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)

    def stored():
        return trials(tmp_path, storage=existing_storage(journal))

    assert [t.state for t in stored()] == [TrialState.COMPLETE, TrialState.RUNNING]
    again = ("run", str(slow_space), "--storage", journal, "--no-report", "-q")
    rerun = call_cli(*again, "--trials", "3", cwd=tmp_path)
    assert rerun.returncode == 0, (rerun.stdout, rerun.stderr)
    assert "3 complete, 0 pruned, 0 diverged, 0 failed, 1 interrupted" in rerun.stdout
    ts = stored()
    assert ts[1].state == TrialState.FAIL and TrialRecord.of(ts[1]).stale is True
    resumed = [t for t in ts if TrialRecord.of(t).resumed]
    assert len(resumed) == 1 and TrialRecord.of(resumed[0]).resumed["from_trial"] == 1
    assert TrialRecord.of(resumed[0]).resumed["from_epoch"] >= 3
    assert resumed[0].params == ts[1].params

    # The next trial's worker ran on another machine (as its record would say), and is killed there.
    second = start(slow_space, tmp_path, "--trials", "4", "-q", storage=journal)
    wait_for(tmp_path, f"checkpoints/synth-*/trial-{len(ts)}/epoch-0001.pt", second)
    second.send_signal(signal.SIGSTOP)  # held still while its record is rewritten
    running = stored()[len(ts)]
    import optuna

    study = optuna.load_study(study_name="synth", storage=existing_storage(journal))
    records.write_stored(study, running, worker={**TrialRecord.of(running).worker, "host": "another-machine"})
    second.send_signal(signal.SIGKILL)
    second.wait(timeout=30)

    rerun = call_cli(*again, "--trials", "4", cwd=tmp_path)
    out = rerun.stdout
    assert rerun.returncode == 1, (out, rerun.stderr)
    assert "stopped: 1 trial(s) are marked running in a storage without a heartbeat" in out
    assert f"trial {running.number} (worker pid" in out and "unknown)" in out and "rerun with --retry-stale" in out
    assert len(finished(stored())) == 3  # the rerun did what it could, and said why it stopped short

    retry = call_cli(*again, "--trials", "4", "--retry-stale", cwd=tmp_path)
    out = retry.stdout
    assert retry.returncode == 0, (out, retry.stderr)
    assert f"--retry-stale: failed and re-queued 1 trial(s) [{running.number}]" in out
    ts = stored()
    assert records.status_of(ts[running.number]) == "interrupted" and TrialRecord.of(ts[running.number]).stale
    assert len(finished(ts)) == 4 and not [t for t in ts if t.state in (TrialState.RUNNING, TrialState.WAITING)]


def test_retry_stale_never_fails_a_trial_whose_worker_is_alive(tmp_path, slow_space):
    journal = str(tmp_path / "journal.log")
    running = start(slow_space, tmp_path, "--trials", "1", "-q", storage=journal)
    wait_for(tmp_path, "checkpoints/synth-*/trial-0/epoch-0001.pt", running)
    from study.stale import retry_stale

    import optuna

    study = optuna.load_study(study_name="synth", storage=existing_storage(journal))
    assert retry_stale(study) == []
    out, err = running.communicate(timeout=120)
    assert running.returncode == 0, err
    assert [t.state for t in trials(tmp_path, storage=existing_storage(journal))] == [TrialState.COMPLETE]


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning", "ignore:Heartbeat of storage")
def test_the_heartbeat_fails_a_dead_worker_s_trial_marked_and_queues_it_again_at_most_max_retry_times(
        tmp_path, monkeypatch):
    """stale.fail_dead, on a real SQLite storage with a 1 s heartbeat: a dead worker's trial is failed and
    marked as a journal's is, and queued once; a trial its worker queued itself (interrupted) is not queued
    twice; a late worker that tells its trial meanwhile keeps what it told; a trial whose tries keep dying is
    given up after MAX_RETRY retries, failed with that as its error."""
    import time

    import optuna

    from study import records, stale
    from study.stale import MAX_RETRY

    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 's.db'}", heartbeat_interval=1, grace_period=1)
    study = optuna.create_study(storage=storage)

    def die(*trials):  # their worker beats once, then is gone
        for t in trials:
            storage.record_heartbeat(t._trial_id)
        time.sleep(2.2)

    dead, late, interrupted = (study.ask({"x": optuna.distributions.FloatDistribution(0, 1)}) for _ in range(3))
    records.write(interrupted, interrupted=True)
    records.queue_retry(study, interrupted)  # its worker queued its retry, and was killed before it failed it
    write = records.write_stored

    def told_meanwhile(study_, trial, **fields):  # late's worker tells it between the mark and the fail
        write(study_, trial, **fields)
        if trial.number == late.number:
            study.tell(late, 0.5)

    monkeypatch.setattr(records, "write_stored", told_meanwhile)
    die(dead, late, interrupted)
    assert sorted(stale.fail_dead(study)) == [dead.number, interrupted.number]
    monkeypatch.undo()
    ts = study.get_trials()
    assert [records.status_of(ts[t.number]) for t in (dead, late, interrupted)] == ["interrupted", "complete",
                                                                                   "interrupted"]
    assert TrialRecord.of(ts[dead.number]).stale and TrialRecord.of(ts[interrupted.number]).stale  # no time counted
    waiting = [t for t in ts if t.state == TrialState.WAITING]
    assert sorted(records.first_number(t) for t in waiting) == [dead.number, interrupted.number]  # one each
    assert all(not TrialRecord.of(t).interrupted and not TrialRecord.of(t).stale for t in waiting)
    assert stale.fail_dead(study) == []  # a second look finds nothing and queues nothing

    for death in range(2, MAX_RETRY + 2):  # the dead trial's retries die too
        asked = [study.ask() for _ in range(2)] if death == 2 else [study.ask()]
        retry = next(t for t in asked if records.first_number(t) == dead.number)
        for other in asked:
            if other is not retry:
                study.tell(other, 0.5)
        die(retry)
        assert stale.fail_dead(study) == [retry.number]
    ts = study.get_trials()
    assert [t for t in ts if t.state == TrialState.WAITING] == []  # its first try and MAX_RETRY retries died
    last = ts[retry.number]
    assert records.status_of(last) == "failed" and TrialRecord.of(last).stale  # given up, and says why
    assert records.error_of(last) == f"its worker died running it, {MAX_RETRY + 1} times; not retried"


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning", "ignore:Heartbeat of storage")
def test_a_trial_whose_worker_ran_here_and_is_gone_is_failed_at_once_and_no_other(tmp_path):
    """stale.fail_dead on a real SQLite storage whose heartbeat would take a minute: the trial of a worker
    process that has exited is retried now; a live worker's is not, nor one whose pid is recorded with
    another boot or pid namespace (another machine of the same name, a container), where it means nothing."""
    import json
    import subprocess
    import sys

    import optuna

    from study import stale

    gone = json.loads(subprocess.run([sys.executable, "-c", "import json; from study.stale import worker_identity; "
                                      "print(json.dumps(worker_identity()))"], capture_output=True, text=True,
                                     check=True).stdout)
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 's.db'}", heartbeat_interval=20)
    study = optuna.create_study(storage=storage)
    workers = {"gone": gone, "alive": stale.worker_identity(), "other boot": {**gone, "boot": "another"},
               "other namespace": {**gone, "pidns": "pid:[1]"}, "unknown": None}
    for who in workers.values():
        trial = study.ask()
        storage.record_heartbeat(trial._trial_id)
        if who:
            records.write(trial, worker=who)
    running = study.get_trials(states=(TrialState.RUNNING,))
    assert [stale.alive_here(t) for t in running] == [False, True, None, None, None]

    assert stale.fail_dead(study, running) == [0]
    ts = study.get_trials()
    assert records.status_of(ts[0]) == "interrupted" and TrialRecord.of(ts[0]).stale
    assert [t.state for t in ts[1:5]] == [TrialState.RUNNING] * 4
    assert [records.first_number(t) for t in ts if t.state == TrialState.WAITING] == [0]  # queued once
    assert stale.fail_dead(study, study.get_trials(states=(TrialState.RUNNING,))) == []


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning", "ignore:Heartbeat of storage")
def test_a_trial_killed_before_its_first_heartbeat_is_dead_once_old_enough(tmp_path, monkeypatch):
    """Killed between Optuna's ask and its first beat, a worker left a trial that the heartbeat never sees
    and that names no worker: it held its slot, and a rerun waited for it forever. A live worker names
    itself at once."""
    import time

    import optuna

    from study import stale

    monkeypatch.setattr(stale, "NAMELESS_AFTER", 1)  # heartbeat intervals (1 s here); 6 as shipped
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 's.db'}", heartbeat_interval=1)
    study = optuna.create_study(storage=storage)
    nameless, named = study.ask(), study.ask()
    records.write(named, worker=stale.worker_identity())  # alive: this process

    def running():
        return study.get_trials(states=(TrialState.RUNNING,))

    assert stale.fail_dead(study, running()) == []  # young: its worker may be about to name itself
    time.sleep(1.2)
    assert stale.fail_dead(study, running()) == [nameless.number]
    assert stale.fail_dead(study, running(), heartbeat=False) == []  # a journal's are --retry-stale's
    ts = study.get_trials()
    assert records.status_of(ts[nameless.number]) == "interrupted" and ts[named.number].state == TrialState.RUNNING
