"""Journal storages (a file, Redis) have no heartbeat: a killed run's trials stay RUNNING. A rerun says so
and exits non-zero; `--retry-stale` fails and re-queues them, and the retries resume from their checkpoints."""
import signal

import pytest

from optuna.trial import TrialState

from conftest import call_cli, finished, start, trials, wait_for
from study.storage import existing_storage
from study.records import TrialRecord


@pytest.mark.parametrize("kind", ["file", pytest.param("redis", marks=pytest.mark.redis)])
def test_a_killed_run_on_a_journal_storage_is_reported_then_retried_with_retry_stale(tmp_path, slow_space, kind,
                                                                                     request):
    journal = str(tmp_path / "journal.log") if kind == "file" else request.getfixturevalue("redis_url")
    first = start(slow_space, tmp_path, "--trials", "3", "-q", storage=journal)
    wait_for(tmp_path, "checkpoints/synth-*/trial-1/epoch-0002.pt", first)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)

    def stored():
        return trials(tmp_path, storage=existing_storage(journal))

    assert [t.state for t in stored()] == [TrialState.COMPLETE, TrialState.RUNNING]

    again = ("run", str(slow_space), "--storage", journal, "--no-report", "--trials", "3", "-q")
    rerun = call_cli(*again, cwd=tmp_path)
    out = rerun.stdout
    assert rerun.returncode == 1, (out, rerun.stderr)
    assert "stopped: 1 trial(s) are marked running in a storage without a heartbeat" in out
    assert "trial 1 (worker pid" in out and "gone)" in out and "rerun with --retry-stale" in out
    assert len(finished(stored())) == 2  # the rerun did what it could, and said why it stopped short

    retry = call_cli(*again, "--retry-stale", cwd=tmp_path)
    out = retry.stdout
    assert retry.returncode == 0, (out, retry.stderr)
    assert "--retry-stale: failed and re-queued 1 trial(s) [1]" in out
    ts = stored()
    assert ts[1].state == TrialState.FAIL and TrialRecord.of(ts[1]).stale is True
    assert len(finished(ts)) == 3 and not [t for t in ts if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    resumed = [t for t in ts if TrialRecord.of(t).resumed]
    assert len(resumed) == 1 and TrialRecord.of(resumed[0]).resumed["from_trial"] == 1
    assert TrialRecord.of(resumed[0]).resumed["from_epoch"] >= 3
    assert resumed[0].params == ts[1].params


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
