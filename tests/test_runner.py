"""Workers, crashes and interruptions, with real processes and real signals on a real SQLite storage."""
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from conftest import SYNTH_SPACE, cli_env, run_cli

SLOW_MODEL = """\
import time
import torch


class Slow(torch.nn.Module):
    \"\"\"A linear classifier that sleeps in every forward pass, so that a trial takes seconds.\"\"\"

    def __init__(self, input_shape, n_classes, delay):
        super().__init__()
        self.delay = delay
        self.linear = torch.nn.Linear(input_shape[0], n_classes)

    def forward(self, x):
        time.sleep(self.delay)
        return self.linear(x)


def net(input_shape, n_classes, delay=0.05):
    return Slow(input_shape, n_classes, delay)
"""


@pytest.fixture
def slow_space(tmp_path, write_space):
    (tmp_path / "slowmodel.py").write_text(SLOW_MODEL)
    return write_space(SYNTH_SPACE.replace("name: mlp", "name: slowmodel:net").replace("budget: 3", "budget: 8"),
                       "slow.yaml")


def start(space: Path, cwd: Path, *args: str, session: bool = False) -> subprocess.Popen:
    """`study run` as a real process; with `session`, in a process group of its own, as a terminal's job."""
    return subprocess.Popen([sys.executable, "-m", "study", "run", str(space), "--storage", "sqlite:///s.db",
                             "--heartbeat", "1", "--no-report", *args], cwd=cwd,
                            env=cli_env(PYTHONPATH=str(cwd)), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=session)


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 90) -> None:
    end = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < end, f"{path} never appeared"
        time.sleep(0.05)


def trials(cwd: Path) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name="synth", storage=f"sqlite:///{cwd / 's.db'}").get_trials()


def finished(ts) -> list:
    return [t for t in ts if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]


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
    wait_for(tmp_path / "checkpoints" / "synth" / "trial-0" / "epoch-0002.pt", first)
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
    wait_for(tmp_path / "checkpoints" / "synth" / "trial-0" / "epoch-0001.pt", first)
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
    from study.runner import RunSummary, _Worker, create_or_load
    from study.storage import open_storage
    from study.trial import TrialContext

    import torch

    url = f"sqlite:///{tmp_path / 's.db'}"
    cfg = load_config(str(synth_space), ["study.n_trials=1"])
    study = create_or_load(cfg, open_storage(url), url)
    study.enqueue_trial({"optimizer": "adam", "lr": 0.01})  # the one slot, taken by a queued trial
    worker = _Worker(cfg, study, TrialContext(torch.device("cpu"), tmp_path), quiet=True)
    study.optimize(worker.objective, n_trials=1, catch=(Exception,))  # pops the queued trial
    extra = study.ask()  # a trial that lost the race
    with pytest.raises(Exception, match="already has 1 trials"):
        worker.objective(extra)
    assert extra.user_attrs["surplus"] is True
    summary = RunSummary(study, cfg, url, tmp_path)
    assert summary.counts()["failed"] == 0 and summary.counts()["complete"] == 1


def test_ctrl_c_to_parallel_workers_queues_each_trial_once(tmp_path, slow_space):
    """Ctrl-C reaches every worker of --jobs 2; whatever state each trial was left in, every interrupted
    trial is queued again exactly once, and the rerun finishes the study from the checkpoints."""
    import os

    run = start(slow_space, tmp_path, "--trials", "6", "--jobs", "2", "-q", session=True)
    wait_for(tmp_path / "checkpoints" / "synth" / "trial-1" / "epoch-0001.pt", run)
    os.killpg(run.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole foreground group
    _, err = run.communicate(timeout=60)
    assert run.returncode == 130, err
    time.sleep(4)  # the heartbeat grace (3 x 1 s): trials a killed worker left running are now stale
    again = start(slow_space, tmp_path, "--trials", "6", "--jobs", "2", "-q")
    _, err = again.communicate(timeout=240)
    assert again.returncode == 0, err
    ts = trials(tmp_path)
    counted = [t for t in ts if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(counted) == 6
    firsts = [t.user_attrs["first_number"] for t in counted]
    assert len(firsts) == len(set(firsts))  # no trial was run twice to completion
    assert not [t for t in ts if t.state in (TrialState.RUNNING, TrialState.WAITING)]
