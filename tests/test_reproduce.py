"""The winner, reproducible: best.yaml retrains the best trial to the same validation loss on the CPU, and
best.pt loads into the rebuilt model; leader.yaml does the same for the verdict's leader where that is
another trial."""
import pytest
import torch
import yaml

from conftest import confirmed_study, make_study
from study.commands import write_report
from study.config import load_config
from study.report import build_report
from study.records import TrialRecord
from study.reproduce import load_best, trial_space
from study.runner import run_study
from study.threads import held


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


def test_best_yaml_retrains_on_the_threads_its_trial_trained_on_to_the_same_bits(tmp_path, synth_space):
    """On a CPU the sums' blocking follows the thread count, and a chaotic config carries the difference
    as far as a new seed does. By their size these trials would get one thread; study.threads gave them two,
    and best.yaml fixes it too."""
    cfg = load_config(str(synth_space), ["study.n_trials=2", "study.threads=2"])
    with held():
        first = run_study(cfg, f"sqlite:///{tmp_path / 'a.db'}", torch.device("cpu"),
                          checkpoint_root=tmp_path / "ck", quiet=True)
        page = build_report(first.study, tmp_path / "reports")
        assert yaml.safe_load((page.parent / "best.yaml").read_text())["study"]["threads"] == 2
        again = run_study(load_config(str(page.parent / "best.yaml")), f"sqlite:///{tmp_path / 'b.db'}",
                          torch.device("cpu"), checkpoint_root=tmp_path / "ck", quiet=True)
    assert TrialRecord.of(again.study.trials[0]).threads == 2 == TrialRecord.of(first.study.best_trial).threads
    assert again.study.trials[0].value == first.study.best_value


def test_best_yaml_of_a_population_member_says_that_alone_it_agrees_up_to_float_rounding(tmp_path, synth_space):
    cfg = load_config(str(synth_space), ["study.n_trials=2", "study.engine=population", "study.population=2"])
    first = run_study(cfg, f"sqlite:///{tmp_path / 'a.db'}", torch.device("cpu"), checkpoint_root=tmp_path / "ck",
                      quiet=True)
    text = (build_report(first.study, tmp_path / "reports").parent / "best.yaml").read_text()
    assert "# It trained in a population of 2, as one fused model: retrained alone, its numbers agree up to " \
           "float\n# rounding" in text


def test_any_trial_s_space_retrains_it_to_the_same_validation_loss(tmp_path, synth_space):
    """leader.yaml is trial_space of a trial that is not the best: it too must retrain as that trial ran."""
    cfg = load_config(str(synth_space), ["study.n_trials=3"])
    first = run_study(cfg, f"sqlite:///{tmp_path / 'a.db'}", torch.device("cpu"), checkpoint_root=tmp_path / "ck",
                      quiet=True)
    other = next(t for t in first.study.trials if t.value is not None and t.number != first.study.best_trial.number)
    path = tmp_path / "other.yaml"
    path.write_text(yaml.safe_dump(trial_space(first.study, other, "leader")))
    again = run_study(load_config(str(path)), f"sqlite:///{tmp_path / 'b.db'}", torch.device("cpu"),
                      checkpoint_root=tmp_path / "ck", quiet=True)
    assert again.study.study_name == f"{first.study.study_name}-leader-{other.number}"
    assert again.study.trials[0].value == pytest.approx(other.value, rel=1e-6)


def test_leader_yaml_is_the_verdict_s_leader_where_the_best_trial_s_seeds_fail(tmp_path, capsys):
    study = confirmed_study({0: (2.30, 0.21, 2.31), 1: (0.26, 0.25, 0.27)})  # 0 best in the search, 1 leads
    assert write_report(study, tmp_path, None)
    folder = tmp_path / study.study_name
    text = (folder / "leader.yaml").read_text()
    assert "trial 1 of study" in text and "candidate of 'b', which leads the verdict\n# with 0.26 [0.235, 0.285] " \
        "over 3 seeds" in text
    assert yaml.safe_load(text)["study"]["name"] == f"{study.study_name}-leader-1"
    assert yaml.safe_load((folder / "best.yaml").read_text())["study"]["name"] == f"{study.study_name}-best-0"
    out = capsys.readouterr().out
    assert f"reproduce the verdict's leader: python -m study run {folder / 'leader.yaml'}" in out
    assert "python -m study run leader.yaml" in (folder / "index.html").read_text()


def test_no_leader_yaml_where_the_best_trial_leads_and_an_earlier_one_is_removed(tmp_path, capsys):
    study = confirmed_study({0: (0.2, 0.21, 0.22), 1: (0.26, 0.25, 0.27)})
    folder = tmp_path / study.study_name
    folder.mkdir()
    (folder / "leader.yaml").write_text("# an earlier report's leader\n")
    assert write_report(study, tmp_path, None)
    assert not (folder / "leader.yaml").exists() and (folder / "best.yaml").is_file()
    assert "verdict's leader" not in capsys.readouterr().out
    assert "leader.yaml" not in (folder / "index.html").read_text()


def test_an_earlier_best_yaml_is_removed_when_no_trial_has_completed(tmp_path):
    study = make_study(3, statuses=("failed",))
    folder = tmp_path / study.study_name
    folder.mkdir()
    (folder / "best.yaml").write_text("# an earlier report's winner\n")
    build_report(study, tmp_path)
    assert not (folder / "best.yaml").exists() and (folder / "index.html").is_file()
