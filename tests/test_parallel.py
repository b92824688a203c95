"""`--jobs N` as a job scheduler and a terminal meet it: real processes, real signals, real SQLite."""
import os
import signal
import subprocess
import sys
import time

import pytest
from optuna.trial import TrialState

from conftest import OnTerminal, cli_env, finished, start, trials, wait_for
from study.records import TrialRecord


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _assert_stopped_cleanly(cwd) -> list:
    """No trial left running; each interrupted trial queued again exactly once; every worker gone."""
    ts = trials(cwd)
    assert not [t for t in ts if t.state == TrialState.RUNNING], [(t.number, t.state) for t in ts]
    interrupted = [t for t in ts if TrialRecord.of(t).interrupted]
    queued = [TrialRecord.of(t).first_number for t in ts if t.state == TrialState.WAITING]
    assert interrupted and sorted(queued) == sorted(TrialRecord.of(t).first_number for t in interrupted)
    pids = {TrialRecord.of(t).worker["pid"] for t in ts if TrialRecord.of(t).worker}
    assert len(pids) == 2 and not [pid for pid in pids if _alive(pid)], "no worker may outlive the run"
    return ts


# Worker 0 trains at once, the other only once the forkserver has imported torch and the rest: with 6 slow
# trials, worker 0 had finished them all first on a loaded 2-core machine (seen under xdist, before and
# after 2026-12-01's changes). Sixteen leave room for both to be in a trial at once.
N_SLOW = 16


def _wait_for_two_running_trials(cwd, run, timeout: float = 90) -> None:
    """Until both workers are inside a trial at once, each past its first epoch. Waiting for two named
    files in turn raced: a trial's epoch files are rotated away and deleted when it ends, so the first
    could be gone before the second appeared."""
    end = time.monotonic() + timeout
    while len({p.parent for p in cwd.glob("checkpoints/synth-*/trial-*/epoch-*.pt")}) < 2:
        assert run.poll() is None, run.communicate()
        assert time.monotonic() < end, "two trials were never running at once"
        time.sleep(0.02)


def _rerun_finishes(slow_space, cwd, n: int) -> None:
    again = start(slow_space, cwd, "--trials", str(n), "--jobs", "2", "-q", SLOW_DELAY="0")
    _, err = again.communicate(timeout=240)
    assert again.returncode == 0, err
    ts = trials(cwd)
    counted = finished(ts)
    assert len(counted) == n
    firsts = [TrialRecord.of(t).first_number for t in counted]
    assert len(firsts) == len(set(firsts))  # no trial was run twice to completion
    assert any(TrialRecord.of(t).resumed for t in counted)  # an interrupted trial went on from its checkpoint
    assert not [t for t in ts if t.state in (TrialState.RUNNING, TrialState.WAITING)]


def test_sigterm_to_the_parent_of_jobs_2_stops_every_worker_and_exits_130(tmp_path, slow_space):
    """What `kill PID` or a job scheduler does: SIGTERM to the parent alone reaches the workers, each
    interrupts its trial the documented way, and the parent waits for them."""
    run = start(slow_space, tmp_path, "--trials", str(N_SLOW), "--jobs", "2", "-q")
    _wait_for_two_running_trials(tmp_path, run)
    run.send_signal(signal.SIGTERM)
    _, err = run.communicate(timeout=60)
    assert run.returncode == 130, err
    assert "interrupted: rerun the same command to resume the study" in err and "Traceback" not in err
    _assert_stopped_cleanly(tmp_path)
    _rerun_finishes(slow_space, tmp_path, N_SLOW)


def test_ctrl_c_to_jobs_2_is_handled_once_by_the_parent(tmp_path, slow_space):
    """Ctrl-C in a terminal signals the whole process group; the workers leave it to the parent, so no
    trial is left running and each is queued again exactly once, with no heartbeat needed."""
    run = start(slow_space, tmp_path, "--trials", str(N_SLOW), "--jobs", "2", "-q", session=True)
    _wait_for_two_running_trials(tmp_path, run)
    os.killpg(run.pid, signal.SIGINT)
    _, err = run.communicate(timeout=60)
    assert run.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    _assert_stopped_cleanly(tmp_path)
    _rerun_finishes(slow_space, tmp_path, N_SLOW)


def test_a_terminal_that_hangs_up_stops_jobs_2_as_ctrl_c_does(tmp_path, slow_space):
    """SIGHUP's default killed the run where it stood, its trials left running and its writes in s.db-wal;
    handled, the stop's lines to the hung-up terminal failed with EIO, and so did a worker's."""
    run = OnTerminal(tmp_path, "run", str(slow_space), "--storage", "sqlite:///s.db", "--heartbeat", "1", "--no-report",
                     "--trials", str(N_SLOW), "--jobs", "2")
    _wait_for_two_running_trials(tmp_path, run)
    run.hang_up()
    assert run.wait(timeout=60) == 130, run.communicate()[0]
    assert not (tmp_path / "s.db-wal").exists()  # before this process opens the file
    _assert_stopped_cleanly(tmp_path)
    _rerun_finishes(slow_space, tmp_path, N_SLOW)


def test_a_run_under_nohup_ignores_the_hang_up_and_finishes(tmp_path, slow_space):
    run = subprocess.Popen(["nohup", sys.executable, "-m", "study", "run", str(slow_space), "--storage", "sqlite:///s.db",
                            "--trials", "2", "-q", "--no-report"], cwd=tmp_path, env=cli_env(PYTHONPATH=str(tmp_path)),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(tmp_path, "checkpoints/synth-*/trial-0/epoch-0001.pt", run)
    run.send_signal(signal.SIGHUP)
    _, err = run.communicate(timeout=120)
    assert run.returncode == 0, err
    assert len(finished(trials(tmp_path))) == 2


@pytest.mark.parametrize("when", ["parent_importing", "workers_starting"])
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_during_start_up_exits_130_and_leaves_nothing_running(tmp_path, slow_space, when, sig):
    """SIGTERM to the parent, or Ctrl-C to a terminal's whole job, while torch is being imported or the
    workers start (a signal raised inside torch's import once aborted the process: exit -6 or -2)."""
    run = start(slow_space, tmp_path, "--trials", "4", "--jobs", "2", "-q", session=True)
    if when == "parent_importing":
        time.sleep(0.3)
    else:
        wait_for(tmp_path, "s.db", run)  # the study exists; the workers are being spawned or importing
    if sig == signal.SIGINT:
        os.killpg(run.pid, sig)
    else:
        run.send_signal(sig)
    _, err = run.communicate(timeout=60)
    assert run.returncode == 130, err
    assert "Traceback" not in err
    import optuna

    if "synth" in optuna.get_all_study_names(f"sqlite:///{tmp_path / 's.db'}"):
        assert not [t for t in trials(tmp_path) if t.state == TrialState.RUNNING]


def test_a_killed_worker_of_jobs_2_is_retried_by_the_other_and_the_run_finishes(tmp_path, slow_space):
    """SIGKILL to one --jobs worker (the OOM killer's way): the other finds its trial dead (its process is
    gone), fails it marked as a dead worker's and resumes it from its checkpoint; the run finishes its
    target, exit 0, and says which worker died and how."""
    run = start(slow_space, tmp_path, "--trials", str(N_SLOW), "--jobs", "2", "-q")
    _wait_for_two_running_trials(tmp_path, run)
    end, child = time.monotonic() + 30, None
    while child is None:  # a trial just asked for has no worker record yet
        assert time.monotonic() < end, "worker 1 never held a trial"
        workers = [TrialRecord.of(t).worker for t in trials(tmp_path) if t.state == TrialState.RUNNING]
        child = next((w["pid"] for w in workers if w and w["pid"] != run.pid), None)  # worker 0: this process
    os.kill(child, signal.SIGKILL)
    out, err = run.communicate(timeout=240)
    assert run.returncode == 0, err
    assert "warning: worker 1: killed by SIGKILL" in out
    assert f"{N_SLOW} complete, 0 pruned, 0 diverged, 0 failed, 1 interrupted" in out
    ts = trials(tmp_path)
    dead = next(t for t in ts if TrialRecord.of(t).worker and TrialRecord.of(t).worker["pid"] == child
                and t.state != TrialState.COMPLETE)  # not one it finished before
    assert dead.state == TrialState.FAIL and TrialRecord.of(dead).stale and TrialRecord.of(dead).interrupted
    retry = next(t for t in ts if TrialRecord.of(t).first_number == dead.number and t is not dead)
    assert retry.state == TrialState.COMPLETE and TrialRecord.of(retry).resumed["from_trial"] == dead.number
