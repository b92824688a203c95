"""Search, then confirm: confirmation runs are tagged trials of the same storage, never pruned, resumable,
planned once; `study confirm` runs the phase alone on a stored study."""
import json
import signal

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial

from conftest import RERUN, SLOW_MODEL, SYNTH_SPACE, call_cli, confirmed_study, finished, start, trials, wait_for
from study import confirm, records
from study.records import StudyRecord, TrialRecord

# Every trial after the first would be pruned at its first epoch: confirmation runs must not be.
CONFIRMED = SYNTH_SPACE.replace(
    "  confirm: {seeds: 0}       # no confirmation phase here: tests/test_confirm.py has its own\n",
    "  confirm: {top: 1, seeds: 2}\n").replace(
    "  pruner: {name: none}", "  pruner: {name: percentile, options: {percentile: 1.0, n_startup_trials: 1}}")


def _trial(study, value, opt, intermediate=None, state=TrialState.COMPLETE, lr=None):
    """A search trial of arm `opt`, a config of its own unless `lr` makes it another's."""
    lr = lr or 1e-3 * (1 + len(study.trials))
    study.add_trial(create_trial(state=state, value=value if state == TrialState.COMPLETE else None,
                                 params={"opt": opt, "lr": lr}, intermediate_values=intermediate or {},
                                 distributions={"opt": CategoricalDistribution(["a", "b"]),
                                                "lr": FloatDistribution(1e-4, 1.0, log=True)}))


def test_candidates_are_each_arm_s_best_by_the_best_value_reported_pruned_ones_included():
    study = optuna.create_study()
    _trial(study, 0.50, "a")
    _trial(study, None, "a", {0: 0.9, 1: 0.2, 2: 0.3}, TrialState.PRUNED)  # stopped early, but its best is 0.2
    _trial(study, 0.40, "a")
    _trial(study, 0.70, "b")
    _trial(study, None, "b", {0: float("nan")}, TrialState.PRUNED)  # nothing finite reported: no candidate
    got = confirm.candidates(records.trials(study), ["opt"], "minimize", top=2)
    assert [t.number for t in got] == [1, 2, 3]
    runs = confirm.plan(records.trials(study), ["opt"], "minimize", top=1, seeds=3, vary_split=True, base=7)
    assert [r["of"] for r in runs] == [1, 1, 1, 3, 3, 3]
    assert len({r["seed"] for r in runs}) == 6 and all(r["split_seed"] == r["seed"] for r in runs)
    assert 0 not in {r["seed"] for r in runs}  # never the search's own seed


def test_a_config_trained_twice_is_one_candidate():
    """A grid point run again, or a space that searches nothing: its seeds would count twice in its arm."""
    study = optuna.create_study()
    for value, opt in [(0.20, "a"), (0.22, "a"), (0.25, "b")]:
        _trial(study, value, opt, lr=0.01)
    got = confirm.candidates(records.trials(study), [], "minimize", top=2)  # one arm: the configs a and b
    assert [t.number for t in got] == [0, 2]


def test_a_run_searches_then_confirms_each_arm_s_best_with_fresh_seeds_never_pruned(tmp_path, write_space):
    space = write_space(CONFIRMED, "synth.yaml")
    result = call_cli("run", str(space), "--storage", "sqlite:///s.db", "--trials", "4", "--no-report", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    ts = trials(tmp_path)
    search = [t for t in ts if not TrialRecord.of(t).confirm]
    runs = [t for t in ts if TrialRecord.of(t).confirm]
    assert len(finished(search)) == 4 and any(t.state == TrialState.PRUNED for t in search)
    plan = StudyRecord.of(optuna.load_study(study_name="synth", storage=f"sqlite:///{tmp_path / 's.db'}")).confirm_plan
    assert len(runs) == len(plan) == 2 * 2  # two arms (sgd_momentum, adam), top 1, 2 seeds
    assert all(t.state == TrialState.COMPLETE for t in runs)  # the percentile pruner would have pruned them
    by_number = {t.number: t for t in ts}
    for t in runs:
        tag = TrialRecord.of(t).confirm
        assert t.params == by_number[tag["of"]].params
        assert TrialRecord.of(t).config["seed"] == tag["seed"] != TrialRecord.of(by_number[tag["of"]]).config["seed"]
    assert "confirms trial" in result.stdout and "verdict (mean [95% interval] over seeds):" in result.stdout
    listed = call_cli("list", "--storage", "sqlite:///s.db", cwd=tmp_path).stdout  # as the run's summary says
    best = records.best_trial(optuna.load_study(study_name="synth", storage=f"sqlite:///{tmp_path / 's.db'}"))
    assert f"best val_loss={best.value:.4g} (trial {best.number}); confirmation runs: 4 complete, 0 diverged, " \
        "0 failed" in listed

    again = call_cli("run", str(space), "--storage", "sqlite:///s.db", "--trials", "4", "--no-report", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert len(trials(tmp_path)) == len(ts)  # the plan is queued once: a rerun adds nothing


def test_verification_waits_for_every_first_run_then_gives_each_chosen_candidate_fresh_seeds():
    study = confirmed_study({0: (0.30, 0.31), 2: (0.2, 0.21), 1: (0.26, 0.25)},
                            searched=(("a", 0.2), ("b", 0.25), ("a", 0.22)))
    ts = records.trials(study)
    runs = [TrialRecord.of(t).confirm for t in ts if TrialRecord.of(t).confirm]
    got = confirm.verification(ts, ["opt"], "minimize", runs, seeds=2, vary_split=True)
    assert [(r["of"], r["verify"]) for r in got] == [(2, True), (2, True)]  # a chose 2 of 0 and 2; b had one
    assert all(r["split_seed"] == r["seed"] for r in got) and not {r["seed"] for r in got} & {r["seed"] for r in runs}
    waiting = runs + [{"of": 1, "seed": 99}]  # a planned first run that has not finished
    assert confirm.verification(ts, ["opt"], "minimize", waiting, seeds=2) == []


def test_a_run_that_two_processes_both_ran_counts_once():
    """Two processes that finish the same phase at the same instant may both queue, and both run, one run."""
    study = confirmed_study({0: (0.2, 0.21, 0.19), 1: (0.26, 0.25, 0.27)})
    twice = next(t for t in study.trials if TrialRecord.of(t).confirm)
    study.add_trial(create_trial(state=TrialState.COMPLETE, value=twice.value, params=twice.params,
                                 distributions=twice.distributions, user_attrs=twice.user_attrs))
    first, _ = confirm.confirmed_runs(records.trials(study))
    assert sorted(len(runs) for runs in first.values()) == [3, 3]


def test_an_arm_of_several_candidates_is_retrained_with_fresh_seeds_and_judged_by_them(tmp_path, write_space):
    """With top 2, the first runs choose each arm's candidate; they would flatter it, so the chosen one is
    retrained with as many fresh seeds, and the verdict compares those."""
    space = write_space(CONFIRMED.replace("top: 1, seeds: 2", "top: 2, seeds: 2"), "synth.yaml")
    args = ("run", str(space), "--storage", "sqlite:///s.db", "--trials", "4", "--no-report")
    result = call_cli(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    ts = trials(tmp_path)
    firsts = [t for t in ts if (c := TrialRecord.of(t).confirm) and not c.get("verify")]
    checks = [t for t in ts if (c := TrialRecord.of(t).confirm) and c.get("verify")]
    verdict = StudyRecord.of(optuna.load_study(study_name="synth", storage=f"sqlite:///{tmp_path / 's.db'}")).verdict
    several = [arm for arm in verdict["arms"] if arm["chosen_from"] > 1]
    assert several and all(arm["verified"] for arm in several)
    assert len(checks) == 2 * len(several) and all(t.state == TrialState.COMPLETE for t in checks)
    for arm in several:
        mine = [t for t in checks if TrialRecord.of(t).confirm["of"] == arm["candidate"]]
        assert sorted(arm["values"]) == sorted(t.value for t in mine)
        assert {TrialRecord.of(t).config["seed"] for t in mine}.isdisjoint(TrialRecord.of(t).config["seed"]
                                                                          for t in firsts)
    assert "verifies trial" in result.stdout
    assert f"(auto: {len(checks)} confirmation runs)" in result.stdout  # the second round sized by what it runs

    again = call_cli(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert len(trials(tmp_path)) == len(ts)  # both rounds are planned once
    fewer = call_cli("confirm", "--storage", "sqlite:///s.db", "--top", "1", "--no-report", cwd=tmp_path)
    assert fewer.returncode == 0 and len(trials(tmp_path)) == len(ts), fewer.stderr  # none dropped, none added
    assert ("warning: study.confirm.top is 1, and this study's plan already holds 2 candidates per arm: a planned "
            "run is never dropped, so the verdict reads all 2") in fewer.stdout
    assert "already holds" not in again.stdout


def test_run_with_confirm_seeds_0_searches_only_and_a_later_run_confirms(tmp_path, write_space):
    space = write_space(CONFIRMED, "synth.yaml")  # confirm: {top: 1, seeds: 2}
    args = ("run", str(space), "--storage", "sqlite:///s.db", "--trials", "2", "--no-report")
    searched = call_cli(*args, "--confirm-seeds", "0", cwd=tmp_path)
    assert searched.returncode == 0, searched.stderr
    assert len(trials(tmp_path)) == 2 and not any(TrialRecord.of(t).confirm for t in trials(tmp_path))
    assert "verdict" not in searched.stdout

    confirmed = call_cli(*args, cwd=tmp_path)  # the same study, now with the space's own confirmation phase
    assert confirmed.returncode == 0, confirmed.stderr
    assert len([t for t in trials(tmp_path) if TrialRecord.of(t).confirm]) == 2 * len(
        {t.params["optimizer"] for t in trials(tmp_path)[:2]})
    assert "verdict (mean [95% interval] over seeds):" in confirmed.stdout


NO_ARMS = CONFIRMED.replace("  optimizer: {choices: [sgd_momentum, adam]}\n", "").replace(
    "momentum: {type: float, low: 0.5, high: 0.9, when: {optimizer: [sgd_momentum]}}", "momentum: 0.9")


def test_a_space_with_no_arms_confirms_its_best_config_and_sets_its_seeds_against_the_search_s_one(
        tmp_path, write_space):
    """A space of continuous params is one arm. Its phase used to be skipped, and its best trial's one-seed value,
    chosen for being best, stood as the answer."""
    space = write_space(NO_ARMS)
    result = call_cli("run", str(space), "--storage", "sqlite:///s.db", "--trials", "3", "--no-report", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    ts = trials(tmp_path)
    runs = [t for t in ts if TrialRecord.of(t).confirm]
    best = min((t for t in ts[:3] if t.state == TrialState.COMPLETE), key=lambda t: t.value)
    assert [TrialRecord.of(t).confirm["of"] for t in runs] == [best.number] * 2  # top 1, seeds 2
    verdict = StudyRecord.of(optuna.load_study(study_name="synth", storage=f"sqlite:///{tmp_path / 's.db'}")).verdict
    (arm,) = verdict["arms"]
    assert arm["label"] == f"the best config (trial {best.number})" and arm["values"] == [t.value for t in runs]
    assert verdict["sentence"] == (f"the best config (trial {best.number}): {arm['mean']:.3g} [{arm['low']:.3g}, "
                                   f"{arm['high']:.3g}] (n = 2), against {best.value:.3g} from the one search seed "
                                   "that chose it, which is optimistic.")
    assert f"verdict (mean [95% interval] over seeds): {verdict['sentence']}\n" in result.stdout
    assert "no confirmation runs" not in result.stdout

    # `study confirm` on such a stored study grows the plan as on one with arms (it used to refuse: "no arms")
    more = call_cli("confirm", "--storage", "sqlite:///s.db", "--seeds", "3", "--no-report", cwd=tmp_path)
    assert more.returncode == 0, more.stderr
    (arm,) = StudyRecord.of(optuna.load_study(study_name="synth", storage=f"sqlite:///{tmp_path / 's.db'}")).verdict[
        "arms"]
    assert arm["n"] == 3 and arm["candidate"] == best.number


def test_a_space_that_searches_nothing_has_nothing_to_confirm(tmp_path, write_space):
    """Its trials are one config, chosen by nothing: seeds would only repeat it."""
    space = write_space(NO_ARMS.replace("  lr: {type: float, low: 1.0e-3, high: 1.0e-1, log: true}\n", ""))
    result = call_cli("run", str(space), "--storage", "sqlite:///s.db", "--trials", "1", "--no-report", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert len(trials(tmp_path)) == 1 and "verdict" not in result.stdout
    before = (tmp_path / "s.db").read_bytes()
    asked = call_cli("confirm", "--storage", "sqlite:///s.db", "--seeds", "2", "--no-report", cwd=tmp_path)
    assert asked.returncode == 2 and asked.stderr == (  # it ran nothing and said nothing, exit 0
        "error: --study-name: study-name: searches no params: its trials are one config, chosen by nothing, so "
        "there is nothing to confirm (got 'synth')\n")
    assert (tmp_path / "s.db").read_bytes() == before


def test_an_interrupted_confirmation_run_is_resumed_by_the_rerun(tmp_path, write_space):
    (tmp_path / "slowmodel.py").write_text(SLOW_MODEL)
    space = write_space(CONFIRMED.replace("name: mlp", "name: slowmodel:net").replace("budget: 3", "budget: 8")
                        .replace("seeds: 2", "seeds: 1"), "slow.yaml")
    first = start(space, tmp_path, "--trials", "2", "-q")
    wait_for(tmp_path, "checkpoints/synth-*/trial-2/epoch-0001.pt", first)  # trials 0, 1 search; 2 confirms
    first.send_signal(signal.SIGTERM)
    first.communicate(timeout=60)
    assert first.returncode == 130
    ts = trials(tmp_path)
    assert TrialRecord.of(ts[2]).interrupted and TrialRecord.of(ts[2]).confirm
    queued = [t for t in ts if t.state == TrialState.WAITING]
    assert TrialRecord.of(ts[2]).confirm in [TrialRecord.of(q).confirm for q in queued]  # the retry keeps its tag

    again = call_cli("run", str(space), *RERUN, "--trials", "2", "-q", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    runs = [t for t in trials(tmp_path) if TrialRecord.of(t).confirm and t.state == TrialState.COMPLETE]
    assert sorted(TrialRecord.of(t).confirm["of"] for t in runs) == [0, 1]  # each planned run once
    resumed = next(t for t in runs if TrialRecord.of(t).resumed)
    assert TrialRecord.of(resumed).confirm == TrialRecord.of(ts[2]).confirm
    assert TrialRecord.of(resumed).resumed["from_trial"] == 2 and TrialRecord.of(resumed).resumed["from_epoch"] >= 2


def test_study_confirm_runs_the_phase_alone_on_a_stored_study_and_writes_the_verdict(tmp_path, synth_space):
    searched = call_cli("run", str(synth_space), "--storage", "sqlite:///s.db", "--trials", "3", "--no-report",
                        cwd=tmp_path)  # confirm: {seeds: 0}: a search only
    assert searched.returncode == 0, searched.stderr
    assert not any(TrialRecord.of(t).confirm for t in trials(tmp_path))

    result = call_cli("confirm", "--storage", "sqlite:///s.db", "--top", "1", "--seeds", "2", "--vary-split",
                      cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    runs = [t for t in trials(tmp_path) if TrialRecord.of(t).confirm]
    arms = {t.params["optimizer"] for t in trials(tmp_path) if not TrialRecord.of(t).confirm}
    assert len(runs) == 2 * len(arms) and all(t.state == TrialState.COMPLETE for t in runs)
    assert all(TrialRecord.of(t).config["split_seed"] == TrialRecord.of(t).confirm["seed"] for t in runs)
    verdict = json.loads((tmp_path / "reports" / "synth" / "verdict.json").read_text())
    stored = StudyRecord.of(optuna.load_study(study_name="synth", storage=f"sqlite:///{tmp_path / 's.db'}")).verdict
    assert verdict["sentence"] == stored["sentence"] and verdict["sentence"] in result.stdout

    more = call_cli("confirm", "--storage", "sqlite:///s.db", "--top", "1", "--seeds", "3", "--no-report", cwd=tmp_path)
    assert more.returncode == 0, more.stderr  # asked for more seeds than the stored plan has: it grows
    again = [t for t in trials(tmp_path) if TrialRecord.of(t).confirm]
    assert len(again) == 3 * len(arms) and [TrialRecord.of(t).confirm for t in again[:len(runs)]] == [
        TrialRecord.of(t).confirm for t in runs]  # the first runs kept, one more seed each
    stored = StudyRecord.of(optuna.load_study(study_name="synth", storage=f"sqlite:///{tmp_path / 's.db'}")).verdict
    assert all(arm["n"] == 3 for arm in stored["arms"] if not arm["fails"])

    fewer = call_cli("confirm", "--storage", "sqlite:///s.db", "--top", "1", "--seeds", "2", "--no-report",
                     cwd=tmp_path)
    assert fewer.returncode == 0, fewer.stderr  # asked for fewer: none dropped, none added, and it says so
    assert len([t for t in trials(tmp_path) if TrialRecord.of(t).confirm]) == 3 * len(arms)
    assert ("warning: study.confirm.seeds is 2, and this study's plan already holds 3 seeds per candidate: a planned "
            "run is never dropped, so the verdict reads all 3") in fewer.stdout
    assert "already holds" not in more.stdout
    one = call_cli("confirm", "--storage", "sqlite:///s.db", "--top", "1", "--seeds", "3", "--no-report", cwd=tmp_path)
    assert one.returncode == 0 and "already holds" not in one.stdout, one.stdout  # as planned: nothing to say


def test_study_confirm_on_a_search_short_of_its_target_says_so_and_confirms_nothing(tmp_path, synth_space):
    """Its candidates are not final: one found later could win its arm. It used to exit 0 in silence."""
    cut = call_cli("run", str(synth_space), "--storage", "sqlite:///s.db", "--trials", "3", "--timeout", "1e-6",
                   "--no-report", cwd=tmp_path)
    assert cut.returncode == 0 and "the search holds 0 of 3 finished trials" in cut.stdout
    result = call_cli("confirm", "--storage", "sqlite:///s.db", "--seeds", "2", "--no-report", cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert ("stopped: the study holds 0 of 3 finished trials of its search, which must reach them before its arms "
            "are confirmed; `study run` with its space and name finishes the search, then confirms") in result.stdout
    assert trials(tmp_path) == []


@pytest.mark.parametrize("args, fragment", [
    (["--storage", "sqlite:///missing.db"], "no such storage"),
    (["--seeds", "0"], "must be an integer >= 1"),
])
def test_study_confirm_refuses_bad_input_with_one_line(tmp_path, args, fragment):
    result = call_cli("confirm", *args, cwd=tmp_path)
    assert result.returncode == 2 and fragment in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "missing.db").exists()
