"""Intra-op threads chosen from a trial's work, its forward pass's flops: one for a small network, the
worker's share otherwise."""
import os
from types import SimpleNamespace

import optuna
import pytest
import torch
from torch import nn

from conftest import call_cli
from study.config import load_config
from study.models import build_model
from study.records import TrialRecord
from study import pool, threads
from study.runner import run_study
from study.threads import SMALL_WORK, choose, for_work, held, oversubscribed, work


def test_small_work_runs_on_one_thread():
    assert for_work(SMALL_WORK - 1, allowed=4) == 1
    assert for_work(SMALL_WORK, allowed=4) == 4


def test_work_counts_what_a_step_computes_not_the_parameters():
    mlp = build_model("mlp", (8,), 3, depth=1, width=16, activation="relu")
    assert work(mlp, torch.zeros(32, 8)) == 2 * 32 * (8 * 16 + 16 * 3)   # a multiply and an add per weight
    cnn = build_model("cnn", (8,), 3, depth=2, width=64, activation="relu", kernel_size=5)
    conv = 64 * 5 * 8 + 64 * 64 * 5 * 4  # each kernel over every position: 8, then 4 after the pooling
    assert work(cnn, torch.zeros(32, 8)) == 2 * 32 * (conv + 64 * 2 * 3)
    params = sum(p.numel() for p in cnn.parameters())
    assert params * 32 < SMALL_WORK // 2 < work(cnn, torch.zeros(32, 8)), "few parameters, much work"


def test_a_trial_on_another_device_leaves_the_threads_as_they_are():
    """Its steps run on the device; the population engine chose CPU threads for CUDA trials until 2026-12-07."""
    with held(1):
        choose(SimpleNamespace(device=torch.device("cuda")), allowed=3, fixed=True)
        assert torch.get_num_threads() == 1
        choose(SimpleNamespace(device=torch.device("cpu")), allowed=3, fixed=True)
        assert torch.get_num_threads() == 3


class Noise(nn.Module):
    """A user's layer that draws random numbers in evaluation too."""

    def forward(self, x):
        return x + torch.rand_like(x)


def test_work_leaves_the_model_and_the_random_stream_as_they_were():
    model = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.Dropout(0.5), Noise(), nn.Linear(16, 3))
    model[2].eval()  # a user's own choice of mode for one layer, kept
    modes = [m.training for m in model.modules()]
    stats = model[1].running_mean.clone(), model[1].num_batches_tracked.clone()
    batch = torch.randn(4, 8)
    rng = torch.get_rng_state()
    assert work(model, batch) > 0
    assert [m.training for m in model.modules()] == modes
    assert torch.equal(model[1].running_mean, stats[0]) and torch.equal(model[1].num_batches_tracked, stats[1])
    assert torch.equal(torch.get_rng_state(), rng)


MLP = "{name: mlp, depth: 1, width: 16}"  # 11,000 flops a step
CNN = "{name: cnn, depth: 2, width: 64, kernel_size: 5}"  # 5.4 million from 21,315 parameters (x batch: 0.7)
NARROW_CNN = "{name: cnn, depth: 2, width: 32, kernel_size: 5}"  # 1.4 million: 4.2 for a population of 3


@pytest.mark.parametrize("model, engine, expected", [(MLP, "sequential", 1), (CNN, "sequential", 4),
                                                     (NARROW_CNN, "sequential", 1), (NARROW_CNN, "population", 4),
                                                     (MLP, "population", 1)])
def test_a_run_gives_a_trial_threads_by_its_work_unless_threads_fixes_them(tmp_path, synth_space, monkeypatch,
                                                                           model, engine, expected):
    """A population's fused step does all its members' work at once. Each epoch's record says what it
    trained on."""
    seen = []
    original = torch.Tensor.backward

    def spy(self, *args, **kwargs):  # the threads each training step runs with
        seen.append(torch.get_num_threads())
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "backward", spy)
    monkeypatch.setattr(pool, "fitting", lambda p, cap, share: cap)  # its memory probe's step trains nothing
    monkeypatch.setattr(threads, "cores", lambda: 4)  # the worker's share: all of 4 cores
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)  # a user's cap (below)
    before = torch.get_num_threads()
    try:
        for fixed, want in ((None, expected), (2, 2)):
            seen.clear()
            cfg = load_config(str(synth_space), ["study.n_trials=3", f"study.name=t{fixed}", f"model={model}",
                                                 f"study.engine={engine}", "study.population=3",
                                                 f"study.threads={'null' if fixed is None else fixed}"])
            storage = f"sqlite:///{tmp_path / 's.db'}"
            run_study(cfg, storage, torch.device("cpu"), checkpoint_root=tmp_path / "ck", quiet=True)
            assert seen and set(seen) == {want}, (fixed, set(seen))
            trials = optuna.load_study(study_name=f"t{fixed}", storage=storage).trials
            assert {(TrialRecord.of(t).engine or {}).get("name", "sequential") for t in trials} == {engine}
            assert {h["threads"] for t in trials for h in TrialRecord.of(t).history} == {want}
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("count, jobs, expected", [
    (None, 1, None), (2, 1, None), (1, 2, None),  # by the rule, or within the cores
    (3, 1, "study.threads is 3, more than the 2 cores this process may use"),
    (2, 2, "study.threads is 2 on each of 2 workers, more than the 2 cores this process may use"),
    (None, 3, "--jobs 3 is more workers than the 2 cores"), (1, 4, "--jobs 4 is more workers than the 2 cores"),
])
def test_fixed_threads_beyond_the_cores_are_named_with_the_count_that_fits(monkeypatch, count, jobs, expected):
    monkeypatch.setattr(threads, "cores", lambda: 2)
    said = oversubscribed(count, jobs)
    assert said == expected if expected is None else said.startswith(expected)
    if said:  # what fits instead: never the count or the workers that were given
        fits = "--jobs 2 fits" if jobs > 2 else f"--threads {2 // jobs} is faster, its sums in another order"
        assert said.endswith(fits)


def test_a_run_warns_at_once_and_in_its_summary_when_its_threads_crowd_the_cores(tmp_path, synth_space,
                                                                                  monkeypatch):
    """A best.yaml from a larger machine fixes its count: retraining it there is exact, and here slow
    (a short lecture trial: 6 s on 2 threads, 33 s on 8, on 2 cores)."""
    monkeypatch.setattr(threads, "cores", lambda: 2)
    result = call_cli("run", str(synth_space), "--trials", "1", "--threads", "3", "--no-report", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    warned = [i for i, line in enumerate(lines) if line.startswith("warning: study.threads is 3, more than the 2")]
    assert len(warned) == 2 and warned[0] == 0 and lines[warned[1] - 1].startswith("  params:")
    fits = call_cli("run", str(synth_space), "--trials", "1", "--threads", "2", "--no-report", "--study-name", "b",
                    cwd=tmp_path)
    assert fits.returncode == 0 and "study.threads" not in fits.stdout


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or (os.cpu_count() or 1) < 2, reason="needs 2 cores")
def test_a_trial_takes_the_cores_this_process_may_use_not_the_machines(tmp_path, synth_space):
    """Under taskset, a container's cpuset or a cluster job's, threads beyond the allowed cores take turns
    on them: a short lecture trial under `taskset -c 0` on 2 cores took 13.8 s on 2 threads, 5.2 s on 1."""
    allowed = os.sched_getaffinity(0)
    cfg = load_config(str(synth_space), ["study.n_trials=1", f"model={CNN}", "study.confirm.seeds=0"])
    try:
        os.sched_setaffinity(0, {min(allowed)})
        with held():
            study = run_study(cfg, f"sqlite:///{tmp_path / 's.db'}", torch.device("cpu"),
                              checkpoint_root=tmp_path / "ck", quiet=True).study
    finally:
        os.sched_setaffinity(0, allowed)
    assert {h["threads"] for h in TrialRecord.of(study.trials[0]).history} == {1}  # its work alone would take all


@pytest.mark.parametrize("omp, expected", [(None, 4), ("1", 1), ("3", 3), ("8", 4), ("4,2", 4)])
def test_omp_num_threads_caps_a_trials_threads_as_it_caps_torchs(tmp_path, synth_space, monkeypatch, omp, expected):
    """OMP_NUM_THREADS is how a user (or a cluster's job script) keeps one process to a few threads, and
    torch reads it at import; the runner's own count, set per trial, would override it. A nested value
    ("4,2") is not a cap."""
    monkeypatch.setattr(threads, "cores", lambda: 4)
    if omp is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", omp)
    assert threads.share() == expected and threads.share(jobs=2) == min(2, expected)
    cfg = load_config(str(synth_space), ["study.n_trials=1", f"model={CNN}", "study.confirm.seeds=0"])
    with held():
        study = run_study(cfg, f"sqlite:///{tmp_path / 's.db'}", torch.device("cpu"),
                          checkpoint_root=tmp_path / "ck", quiet=True).study
    assert TrialRecord.of(study.trials[0]).threads == expected
