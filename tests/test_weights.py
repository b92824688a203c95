"""What a study keeps on disk: best.pt always, the best few trials' final weights when asked, and no
epoch checkpoints of finished trials."""
import optuna
import torch

from conftest import SYNTH_SPACE
from study.cli import main


def _files(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_finished_trials_keep_no_epoch_checkpoints(tmp_path, write_space):
    space = write_space(SYNTH_SPACE.replace("pruner: {name: none}", "pruner: {name: none}\n  checkpoints: {keep: 3}"))
    assert main(["run", str(space), "--storage", f"sqlite:///{tmp_path / 's.db'}", "--trials", "5", "-q",
                 "--no-report", "--checkpoint-dir", str(tmp_path / "ck")]) == 0
    files = _files(tmp_path / "ck")
    assert len(files) == 1 and files[0].endswith("/best.pt")
    study = optuna.load_study(study_name="synth", storage=f"sqlite:///{tmp_path / 's.db'}")
    best = torch.load(tmp_path / "ck" / files[0], weights_only=True)
    assert best["trial"] == study.best_trial.number and best["value"] == study.best_value


def test_keep_best_keeps_the_final_weights_of_the_best_trials(tmp_path, write_space):
    space = write_space(SYNTH_SPACE.replace("pruner: {name: none}",
                                            "pruner: {name: none}\n  checkpoints: {keep_best: 2}"))
    assert main(["run", str(space), "--storage", f"sqlite:///{tmp_path / 's.db'}", "--trials", "5", "-q",
                 "--no-report", "--checkpoint-dir", str(tmp_path / "ck")]) == 0
    study = optuna.load_study(study_name="synth", storage=f"sqlite:///{tmp_path / 's.db'}")
    ranked = sorted(study.get_trials(), key=lambda t: t.value)
    finals = [p for p in (tmp_path / "ck").rglob("final.pt")]
    assert sorted(p.parent.name for p in finals) == sorted(f"trial-{t.number}" for t in ranked[:2])
    for p in finals:
        state = torch.load(p, weights_only=True)
        assert state["value"] == study.trials[state["trial"]].value and "model" in state
    assert not list((tmp_path / "ck").rglob("epoch-*.pt"))
