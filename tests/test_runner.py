"""Workers, crashes and interruptions, with real processes and real signals on a real SQLite storage."""
import signal

import pytest
from optuna.trial import TrialState

from conftest import finished, run_cli, start, trials, wait_for

def test_parallel_workers_reach_exactly_the_target(tmp_path, synth_space):
    result = run_cli("run", str(synth_space), "--storage", "sqlite:///s.db", "--jobs", "2", "--trials", "7",
                     "--no-report", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    ts = trials(tmp_path)
    assert len(finished(ts)) == 7
    assert len({t.number for t in ts}) == len(ts)
    counted = [t for t in ts if not t.user_attrs.get("surplus")]
    assert all(t.state == TrialState.COMPLETE for t in counted) and len(counted) == 7
    assert len({tuple(sorted(t.params.items())) for t in counted}) == 7  # workers sample differently
    assert "database is locked" not in result.stderr + result.stdout


def test_a_killed_worker_s_trial_is_retried_from_its_checkpoint(tmp_path, slow_space):
    first = start(slow_space, tmp_path, "--trials", "2", "-q")
    wait_for(tmp_path, "checkpoints/synth-*/trial-0/epoch-0002.pt", first)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    assert [t.state for t in trials(tmp_path)] == [TrialState.RUNNING]  # what the dead worker left

    second = start(slow_space, tmp_path, "--trials", "2")
    out, err = second.communicate(timeout=180)
    assert second.returncode == 0, err
    ts = trials(tmp_path)
    assert ts[0].state == TrialState.FAIL  # found dead by the heartbeat
    assert len(finished(ts)) == 2
    retry = next(t for t in ts if t.user_attrs.get("resumed"))
    assert retry.state == TrialState.COMPLETE and retry.params == ts[0].params
    assert retry.user_attrs["resumed"]["from_trial"] == 0 and retry.user_attrs["resumed"]["from_epoch"] >= 3
    assert [h["epoch"] for h in retry.user_attrs["history"]] == list(range(8))
    assert sorted(retry.intermediate_values) == list(range(8))
    assert "(resumed trial 0 at epoch" in out


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_an_interrupted_run_marks_its_trial_and_the_rerun_resumes_it(tmp_path, slow_space, sig):
    first = start(slow_space, tmp_path, "--trials", "2", "-q")
    wait_for(tmp_path, "checkpoints/synth-*/trial-0/epoch-0001.pt", first)
    first.send_signal(sig)
    _, err = first.communicate(timeout=60)
    assert first.returncode == 130
    assert "interrupted: rerun the same command to resume the study" in err and "Traceback" not in err
    ts = trials(tmp_path)
    assert [t.state for t in ts] == [TrialState.FAIL, TrialState.WAITING]  # consistent: nothing left running
    assert ts[0].user_attrs["interrupted"] is True and ts[1].user_attrs["first_number"] == 0

    again = start(slow_space, tmp_path, "--trials", "2", "-q")
    _, err = again.communicate(timeout=180)
    assert again.returncode == 0, err
    ts = trials(tmp_path)
    assert len(finished(ts)) == 2
    assert ts[1].user_attrs["resumed"]["from_trial"] == 0 and ts[1].user_attrs["resumed"]["from_epoch"] >= 2


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")  # ask() by hand, on purpose
def test_surplus_trials_are_not_counted(tmp_path, synth_space):
    """A trial created when the target is already taken fails as surplus, and no summary counts it."""
    from study.config import load_config
    from study.runner import RunSummary, _Worker, context, create_or_load
    from study.storage import open_storage

    import torch

    url = f"sqlite:///{tmp_path / 's.db'}"
    cfg = load_config(str(synth_space), ["study.n_trials=1"])
    study = create_or_load(cfg, open_storage(url), url)
    study.enqueue_trial({"optimizer": "adam", "lr": 0.01})  # the one slot, taken by a queued trial
    worker = _Worker(cfg, study, context(cfg, study, torch.device("cpu"), tmp_path), quiet=True)
    study.optimize(worker.objective, n_trials=1, catch=(Exception,))  # pops the queued trial
    extra = study.ask()  # a trial that lost the race
    with pytest.raises(Exception, match="already has 1 trials"):
        worker.objective(extra)
    assert extra.user_attrs["surplus"] is True
    summary = RunSummary(study, cfg, url, tmp_path)
    assert summary.counts()["failed"] == 0 and summary.counts()["complete"] == 1
