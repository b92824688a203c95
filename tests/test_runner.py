"""Workers, crashes and interruptions, with real processes and real signals on a real SQLite storage. A
rerun after a kill or a stop is a run like any other: it goes through main() in this process (call_cli)."""
import re
import signal

import pytest
from optuna.trial import TrialState

from conftest import RERUN, call_cli, finished, run_cli, start, trials, wait_for
from study import records
from study.records import TrialRecord

def test_parallel_workers_reach_exactly_the_target(tmp_path, synth_space):
    result = run_cli("run", str(synth_space), "--storage", "sqlite:///s.db", "--jobs", "2", "--trials", "7",
                     "--no-report", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    ts = trials(tmp_path)
    assert len(finished(ts)) == 7
    assert len({t.number for t in ts}) == len(ts)
    counted = [t for t in ts if not TrialRecord.of(t).surplus]
    assert all(t.state == TrialState.COMPLETE for t in counted) and len(counted) == 7
    assert len({tuple(sorted(t.params.items())) for t in counted}) == 7  # workers sample differently
    assert "database is locked" not in result.stderr + result.stdout


def test_a_killed_worker_s_trial_is_retried_from_its_checkpoint(tmp_path, slow_space):
    first = start(slow_space, tmp_path, "--trials", "2", "-q")
    wait_for(tmp_path, "checkpoints/synth-*/trial-0/epoch-0002.pt", first)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    assert [t.state for t in trials(tmp_path)] == [TrialState.RUNNING]  # what the dead worker left
    listed = call_cli("list", "--storage", "sqlite:///s.db", cwd=tmp_path).stdout
    assert "1 running; no complete trial; 1 running trial was left by a worker of this machine's that is gone: " \
           "`study run` again retries it" in listed

    # Its worker ran here and is gone, so the rerun retries its trial at once: not after the heartbeat's
    # grace period (3 x 60 s), well past the rerun's --timeout, after which no trial starts.
    rerun = ("--storage", "sqlite:///s.db", "--heartbeat", "60", "--timeout", "60", "--no-report")
    second = call_cli("run", str(slow_space), *rerun, "--trials", "2", cwd=tmp_path)
    out = second.stdout
    assert second.returncode == 0, second.stderr
    ts = trials(tmp_path)
    assert ts[0].state == TrialState.FAIL  # found dead, and marked so, as a journal's are
    assert TrialRecord.of(ts[0]).stale and records.status_of(ts[0]) == "interrupted"
    assert "2 complete, 0 pruned, 0 diverged, 0 failed, 1 interrupted" in out  # not "1 failed", with no error
    assert len(finished(ts)) == 2
    retry = next(t for t in ts if TrialRecord.of(t).resumed)
    assert retry.state == TrialState.COMPLETE and retry.params == ts[0].params
    assert not TrialRecord.of(retry).stale and records.status_of(retry) == "complete"  # the marks stay behind
    assert TrialRecord.of(retry).resumed["from_trial"] == 0 and TrialRecord.of(retry).resumed["from_epoch"] >= 3
    assert [h["epoch"] for h in TrialRecord.of(retry).history] == list(range(8))
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
    assert TrialRecord.of(ts[0]).interrupted is True and TrialRecord.of(ts[1]).first_number == 0
    assert all(set(t.user_attrs) <= set(records.FIELDS) for t in ts)

    again = call_cli("run", str(slow_space), *RERUN, "--trials", "2", "-q", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    ts = trials(tmp_path)
    assert len(finished(ts)) == 2
    assert TrialRecord.of(ts[1]).resumed["from_trial"] == 0 and TrialRecord.of(ts[1]).resumed["from_epoch"] >= 2


@pytest.mark.parametrize("engine", ["sequential", "population"])
def test_no_trial_starts_after_the_timeout(tmp_path, slow_space, engine):
    """--timeout stops starting trials; those running finish. A population refills its slots between the
    worker's own looks, and once ran a whole 400-trial search past a 3 s timeout."""
    result = call_cli("run", str(slow_space), *RERUN, "--trials", "40", "--timeout", "2", "--engine", engine,
                      "--population", "4", "-q", cwd=tmp_path)
    assert result.returncode == 0, result.stderr  # a timeout is what was asked for, not a failure
    ts = trials(tmp_path)
    done = len(finished(ts))
    assert 0 < done < 40 and all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in ts)
    starts = [t.datetime_start.timestamp() for t in ts]
    assert max(starts) - min(starts) < 2 + 0.25  # the clock starts before the first trial, with the command
    assert (f"warning: timeout: no trial started after 2 s; the search holds {done} of 40 finished trials; "
            "the same command adds the rest") in result.stdout


def test_surplus_trials_are_failed_when_asked_for_and_not_counted(tmp_path, synth_space):
    """A trial asked for when the target is already taken fails as surplus at once, before any training,
    and no summary counts it."""
    from study.config import load_config
    from study.runner import RunSummary, context, worker_for
    from study.studies import create_or_load
    from study.storage import open_storage

    import torch

    url = f"sqlite:///{tmp_path / 's.db'}"
    cfg = load_config(str(synth_space), ["study.n_trials=1"])
    study = create_or_load(cfg, open_storage(url), url)
    study.enqueue_trial({"optimizer": "adam", "lr": 0.01})  # the one slot, taken by a queued trial
    worker = worker_for(cfg, study, context(cfg, study, torch.device("cpu"), tmp_path), quiet=True)
    worker.run_one()  # pops the queued trial and trains it
    assert worker.ask() is None  # a trial that lost the race
    extra = study.trials[-1]
    assert extra.number == 1 and TrialRecord.of(extra).surplus is True and extra.state == TrialState.FAIL
    assert TrialRecord.of(extra).history == [] and TrialRecord.of(extra).config == {}  # nothing trained
    summary = RunSummary(study, cfg, url, tmp_path)
    assert summary.counts()["failed"] == 0 and summary.counts()["complete"] == 1


@pytest.mark.parametrize("how", ["rm", "empty_file", "new_storage"])
def test_a_new_study_of_the_same_name_never_resumes_an_old_one_s_checkpoints(tmp_path, slow_space, how):
    """The reproduction: a run is killed mid-trial, its storage goes, and a new run of the same space with
    another seed starts. Its trials must train from scratch, never report the old trials' values."""
    first = start(slow_space, tmp_path, "--trials", "2", "-q")
    wait_for(tmp_path, "checkpoints/synth-*/trial-0/epoch-0003.pt", first)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    storage = "sqlite:///s.db"
    if how == "rm":
        (tmp_path / "s.db").unlink()
    elif how == "empty_file":
        (tmp_path / "s.db").write_bytes(b"")
        for p in tmp_path.glob("s.db-*"):
            p.unlink()
    else:
        storage = "sqlite:///other.db"
    second = call_cli("run", str(slow_space), "--storage", storage, "--no-report", "--trials", "2", "--seed", "1",
                      "--set", "model.depth=2", "--set", "training.budget=4", cwd=tmp_path)
    out = second.stdout
    assert second.returncode == 0, second.stderr
    assert "resumed" not in out
    ts = trials(tmp_path, storage=f"sqlite:///{tmp_path / storage.removeprefix('sqlite:///')}")
    assert len(finished(ts)) == 2
    for t in ts:
        assert TrialRecord.of(t).resumed is None and len(TrialRecord.of(t).history) == 4
    folders = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert len(folders) == 2 and all(f.startswith("synth-") for f in folders)  # one per study identity


def test_a_forged_first_number_in_a_shared_storage_never_becomes_a_path(tmp_path, synth_space):
    """Anyone who can write to a shared storage can queue a trial; its `first_number` is checked, and a
    trial whose value is not a number <= its own uses its own number."""
    import optuna

    from study.config import load_config
    from study.studies import create_or_load
    from study.storage import open_storage

    url = f"sqlite:///{tmp_path / 's.db'}"
    study = create_or_load(load_config(str(synth_space)), open_storage(url), url)
    for forged in ("../../../../outside", 10**6, -3, "0/../../x"):
        study.enqueue_trial({"optimizer": "adam", "lr": 0.01}, user_attrs=records.attrs(first_number=forged))
    result = call_cli("run", str(synth_space), "--storage", url, "--trials", "4", "-q", "--no-report", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    ts = optuna.load_study(study_name="synth", storage=url).get_trials()
    assert [TrialRecord.of(t).first_number for t in ts] == [0, 1, 2, 3]
    assert not (tmp_path.parent / "outside").exists() and not (tmp_path / "x").exists()
    inside = {p.relative_to(tmp_path).parts[0] for p in tmp_path.rglob("*")}
    assert inside <= {"s.db", "s.db-wal", "s.db-shm", "checkpoints", "synth.yaml"}


def test_a_retry_resumes_from_the_previous_checkpoint_when_the_newest_is_damaged(tmp_path, slow_space):
    first = start(slow_space, tmp_path, "--trials", "1", "-q")
    newest = wait_for(tmp_path, "checkpoints/synth-*/trial-0/epoch-0003.pt", first)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    epochs = sorted(newest.parent.glob("epoch-*.pt"))
    data = epochs[-1].read_bytes()
    epochs[-1].write_bytes(data[: len(data) // 3])  # killed mid-write by something that bypassed the rename
    second = call_cli("run", str(slow_space), *RERUN, "--trials", "1", "-q", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    retry = next(t for t in trials(tmp_path) if t.state == TrialState.COMPLETE)
    assert TrialRecord.of(retry).resumed["from_epoch"] == int(epochs[-2].stem.split("-")[1]) + 1
    assert "could not be read" in TrialRecord.of(retry).checkpoint_warnings[0]
    assert [h["epoch"] for h in TrialRecord.of(retry).history] == list(range(8))


def test_a_damaged_best_pt_never_stops_a_later_run(tmp_path, synth_space):
    assert call_cli("run", str(synth_space), "--storage", "sqlite:///s.db", "-q", "--no-report",
                    cwd=tmp_path).returncode == 0
    best = next((tmp_path / "checkpoints").glob("synth-*/best.pt"))
    best.write_bytes(best.read_bytes()[:100])
    again = call_cli("run", str(synth_space), "--storage", "sqlite:///s.db", "--trials", "4", "-q", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "Traceback" not in again.stderr
    assert "report:" in again.stdout and "study 'synth': 4 complete" in again.stdout
    if "best trial 3" not in again.stdout:  # the best did not change: best.pt cannot be rewritten; said so
        assert "warning: best.pt not written: the weights of trial 0 are not available" in again.stdout


def test_a_symlinked_study_checkpoint_folder_pointing_outside_is_refused_before_any_change(tmp_path, synth_space):
    import optuna

    assert call_cli("run", str(synth_space), "--storage", "sqlite:///s.db", "--trials", "1", "-q", "--no-report",
                    cwd=tmp_path).returncode == 0
    folder = next((tmp_path / "checkpoints").glob("synth-*"))
    outside = tmp_path / "outside"
    folder.rename(outside)
    folder.symlink_to(outside)
    result = call_cli("run", str(synth_space), "--storage", "sqlite:///s.db", "--trials", "2", "-q", "--no-report",
                      cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.startswith("error: --checkpoint-dir: ")
    assert "symbolic link" in result.stderr and result.stderr.count("\n") == 1
    assert len(optuna.load_study(study_name="synth", storage=f"sqlite:///{tmp_path / 's.db'}").trials) == 1
    assert sorted(p.name for p in outside.iterdir()) == ["best.pt"]


def test_the_progress_bar_reads_the_storage_at_most_once_a_second_not_per_trial(tmp_path, synth_space, monkeypatch,
                                                                                 capsys):
    """Counting the finished trials for the bar re-reads every running trial; a population's runs finish
    together, and the bar now counts them itself between reads (the worker's own are all there are)."""
    from study import runner
    from study.cli import main

    common = ["--storage", f"sqlite:///{tmp_path}/s.db", "--no-report", "--checkpoint-dir", str(tmp_path)]
    assert main(["run", str(synth_space), *common, "--trials", "4", "-q"]) == 0
    reads = []
    monkeypatch.setattr(runner, "advance", lambda *a, read=runner.advance: reads.append(1) or read(*a))
    assert main(["confirm", "--top", "1", "--seeds", "6", *common]) == 0
    runs = [t for t in trials(tmp_path) if TrialRecord.of(t).confirm]
    assert len(runs) == 12 and all(t.state == TrialState.COMPLETE for t in runs)
    printed = capsys.readouterr().out
    assert all(re.search(rf"^trial +{t.number} complete .*confirms trial", printed, re.M) for t in runs)
    assert 1 <= len(reads) < len(runs) / 2


def test_the_confirmation_phase_reads_the_search_best_not_once_per_run(tmp_path, synth_space, monkeypatch):
    """best_trial re-reads every running trial from the storage; a confirmation run is never the search's
    best (best_trial leaves them out), so no run reads it for its weights, and best.pt stays the search's."""
    import optuna
    import torch

    from study import runner, weights
    from study.cli import main

    common = ["--storage", f"sqlite:///{tmp_path}/s.db", "--no-report", "--checkpoint-dir", str(tmp_path), "-q"]
    assert main(["run", str(synth_space), *common, "--trials", "4"]) == 0  # the space confirms nothing itself
    reads = []
    for module in (runner, weights):
        monkeypatch.setattr(module, "best_trial", lambda study, read=module.best_trial: reads.append(1) or read(study))
    assert main(["confirm", "--top", "1", "--seeds", "3", *common]) == 0
    runs = [t for t in trials(tmp_path) if TrialRecord.of(t).confirm]
    assert len(runs) == 6 and all(t.state == TrialState.COMPLETE for t in runs) and len(reads) <= 1  # best.pt
    best = records.best_trial(optuna.load_study(study_name="synth", storage=f"sqlite:///{tmp_path}/s.db"))
    assert torch.load(next(tmp_path.glob("*/best.pt")), weights_only=True)["trial"] == best.number
