"""Intra-op threads chosen from a trial's work: one for a small network, the worker's share otherwise."""
import torch

from study.config import load_config
from study.runner import run_study
from study.threads import SMALL_WORK, for_work


def test_small_work_runs_on_one_thread():
    assert for_work(params=SMALL_WORK // 64 - 1, batch=64, allowed=4) == 1
    assert for_work(params=SMALL_WORK // 64, batch=64, allowed=4) == 4


def test_a_run_gives_a_small_trial_one_thread_unless_threads_fixes_them(tmp_path, synth_space, monkeypatch):
    seen = []
    original = torch.nn.Module.__call__

    def spy(self, *args, **kwargs):  # the threads each forward pass runs with
        seen.append(torch.get_num_threads())
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.nn.Module, "__call__", spy)
    before = torch.get_num_threads()
    try:
        for fixed, expected in ((None, 1), (2, 2)):
            seen.clear()
            cfg = load_config(str(synth_space), ["study.n_trials=1", f"study.name=t{fixed}"])
            run_study(cfg, f"sqlite:///{tmp_path / 's.db'}", torch.device("cpu"), checkpoint_root=tmp_path / "ck",
                      quiet=True, threads=fixed)
            assert seen and set(seen) == {expected}, (fixed, set(seen))
    finally:
        torch.set_num_threads(before)
