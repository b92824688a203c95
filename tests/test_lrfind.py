"""The LR range test: suggested ranges where the loss falls, `study lr-find`, and `range: auto`."""
import os
import signal
import subprocess
import sys
import time

import optuna
import torch

from conftest import SYNTH_SPACE, call_cli, cli_env, trials
from study import lrfind
from study.config import load_config
from study.records import StudyRecord


def test_each_optimizer_s_range_lies_where_its_loss_falls_and_sgd_s_above_adam_s():
    # digits, not the synthetic blobs: on those the loss keeps falling up to lr = 10, with any optimizer.
    found = lrfind.find(load_config("quick"), torch.device("cpu"), iterations=150)
    for name, r in found.items():
        at = r["lrs"].index(r["high"])
        assert r["low"] < r["steepest"] <= r["high"] < lrfind.END, name  # the loss turned up before the end
        assert r["loss"][at] < 0.5 * r["loss"][0], name  # at the top of its range, it learns fast
        assert max(r["loss"][at:]) > r["loss"][at], name  # and beyond it, the loss rises again
    # Plain SGD takes (and needs) a far larger lr than Adam: the known ordering of their optima.
    assert found["sgd"]["high"] > 3 * found["adam"]["high"] and found["adam"]["high"] < 1


AUTO = SYNTH_SPACE.replace("  lr: {type: float, low: 1.0e-3, high: 1.0e-1, log: true}",
                           "  lr: {type: float, log: true, range: auto}")


def test_range_auto_is_found_once_stored_with_the_study_and_sampled_within(tmp_path, write_space):
    space = write_space(AUTO, "synth.yaml")
    first = call_cli("run", str(space), "--storage", "sqlite:///s.db", "--trials", "2", "--no-report", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "lr range test: lr in [" in first.stdout
    stored = StudyRecord.of(optuna.load_study(study_name="synth", storage=f"sqlite:///{tmp_path / 's.db'}")).lr_range
    assert set(stored["by_optimizer"]) == {"sgd_momentum", "adam"} and stored["low"] < stored["high"]
    assert all(stored["low"] <= t.params["lr"] <= stored["high"] for t in trials(tmp_path))

    again = call_cli("run", str(space), "--storage", "sqlite:///s.db", "--trials", "3", "--no-report", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "lr range test" not in again.stdout and len(trials(tmp_path)) == 3  # the stored range, reused


def test_lr_find_prints_each_range_and_draws_the_curves(tmp_path, synth_space):
    result = call_cli("lr-find", str(synth_space), "--iterations", "60", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "sgd_momentum" in result.stdout and "suggested range [" in result.stdout
    assert (tmp_path / "reports" / "synth" / "lr-find.png").read_bytes().startswith(b"\x89PNG")


def test_ctrl_c_stops_lr_find_between_two_steps_with_one_line(tmp_path, synth_space):
    """A million steps would take many minutes: Ctrl-C, during the imports or the test, stops it at the
    next step, exit 130, with no traceback and no figure."""
    run = subprocess.Popen([sys.executable, "-m", "study", "lr-find", str(synth_space), "--iterations", "1000000"],
                           cwd=tmp_path, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           start_new_session=True)
    try:
        time.sleep(3)
        os.killpg(run.pid, signal.SIGINT)
        _, err = run.communicate(timeout=60)
    finally:
        if run.poll() is None:  # a failed test leaves no million-step run behind
            os.killpg(run.pid, signal.SIGKILL)
    assert run.returncode == 130 and err.strip() == "interrupted", err
    assert not (tmp_path / "reports").exists()


def test_range_auto_is_for_lr_with_log_only(tmp_path, write_space):
    space = write_space(SYNTH_SPACE.replace("low: 0.5, high: 0.9,", "log: true, range: auto,"), "bad.yaml")
    result = call_cli("run", str(space), "--storage", "sqlite:///s.db", cwd=tmp_path)
    assert result.returncode == 2 and "params.momentum.range: only lr takes range: auto" in result.stderr
    assert not (tmp_path / "s.db").exists()
