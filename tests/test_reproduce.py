"""The winner, reproducible: best.yaml retrains the best trial to the same validation loss on the CPU, and
best.pt loads into the rebuilt model."""
import pytest
import torch

from study.config import load_config
from study.report import build_report
from study.reproduce import load_best
from study.runner import run_study


def test_best_yaml_retrains_the_best_trial_to_the_same_validation_loss(tmp_path, synth_space):
    cfg = load_config(str(synth_space), ["study.n_trials=3"])
    first = run_study(cfg, f"sqlite:///{tmp_path / 'a.db'}", torch.device("cpu"), checkpoint_root=tmp_path / "ck",
                      quiet=True)
    page = build_report(first.study, tmp_path / "reports")
    best = first.study.best_trial
    again = run_study(load_config(str(page.parent / "best.yaml")), f"sqlite:///{tmp_path / 'b.db'}",
                      torch.device("cpu"), checkpoint_root=tmp_path / "ck", quiet=True)
    assert len(again.study.trials) == 1 and again.study.trials[0].params == {}
    assert again.study.trials[0].value == pytest.approx(best.value, rel=1e-6)
    assert "python -m study run best.yaml" in page.read_text() and "load_best(" in page.read_text()

    model = load_best(first.study_dir / "best.pt")
    state = torch.load(first.study_dir / "best.pt", weights_only=True)
    assert state["trial"] == best.number
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), state["model"].values(), strict=True))
