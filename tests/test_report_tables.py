"""The report's data, checked by equality."""
import math

import optuna
import pandas as pd
import pandas.testing as pdt
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial

from conftest import confirmed_study, make_study
from study import records
from study.report import tables as T


def _study(rows):
    """rows: (state, value, optimizer, lr, extra user attrs)"""
    study = optuna.create_study(direction="minimize")
    dists = {"optimizer": CategoricalDistribution(["sgd", "adam"]), "lr": FloatDistribution(1e-5, 1, log=True)}
    for state, value, opt, lr, attrs in rows:
        study.add_trial(create_trial(state=state, value=value, params={"optimizer": opt, "lr": lr},
                                     distributions=dists,
                                     user_attrs=records.attrs(config={"optimizer": opt, "lr": lr}, **attrs),
                                     intermediate_values={0: value if value is not None else 9.0}))
    return study


C, P, F = TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL


def test_statuses_and_values():
    study = _study([(C, 0.5, "sgd", 0.1, {}), (P, None, "adam", 0.01, {}),
                    (P, None, "sgd", 1.0, {"diverged": {"reason": "nan", "step": 3}}),
                    (F, None, "adam", 0.001, {"error": "boom"})])
    df = T.trials_frame(study)
    assert df["status"].tolist() == ["complete", "pruned", "diverged", "failed"]
    assert df["value"].tolist()[:3] == [0.5, 9.0, 9.0]
    assert math.isnan(df["value"].iloc[3]) and df["error"].tolist()[3] == "boom"


def _ran(spans: list[tuple[float, float]], state=TrialState.COMPLETE, **attrs) -> list[optuna.trial.FrozenTrial]:
    """Trials (complete, unless `state` says) that ran from a to b seconds after a fixed instant."""
    import datetime

    at = datetime.datetime(2026, 12, 3)
    trials = []
    for a, b in spans:
        t = create_trial(state=state, value=1.0 if state == TrialState.COMPLETE else None, user_attrs=attrs)
        t.datetime_start, t.datetime_complete = (at + datetime.timedelta(seconds=x) for x in (a, b))
        trials.append(t)
    return trials


def test_busy_seconds_count_trials_that_ran_at_once_once_and_a_pause_not_at_all():
    assert T.busy_seconds(_ran([(0, 2), (2, 5), (5, 6)])) == 6  # one at a time: their sum
    assert T.busy_seconds(_ran([(0, 5), (1, 5), (0.5, 4), (6, 7)])) == 6  # four at once, then one
    assert T.busy_seconds(_ran([(0, 1), (86_400, 86_401)])) == 2  # resumed a day later
    assert T.busy_seconds(_ran([(0, 1), (0, 9)], TrialState.FAIL, **records.attrs(surplus=True))) == 0  # never trained


def test_a_dead_worker_s_trial_counts_no_time():
    """Its span ends when another worker found it dead (the heartbeat's grace later, or a day later with
    --retry-stale), not when it stopped: no training time, and no time while any trial ran."""
    dead = _ran([(0, 86_400)], TrialState.FAIL, **records.attrs(interrupted=True, stale=True))
    retry = _ran([(86_400, 86_403)])
    assert T.busy_seconds(dead + retry) == 3
    assert math.isnan(T.trained_seconds(dead[0], records.TrialRecord.of(dead[0])))
    dead[0].intermediate_values = {0: 0.9, 1: 0.7, 2: 0.6}  # reported to Optuna; its history was never written
    assert T.trials_frame(dead)["epochs"].tolist() == [3]
    interrupted = _ran([(0, 2)], TrialState.FAIL, **records.attrs(interrupted=True))  # Ctrl-C: its own end
    assert T.busy_seconds(interrupted) == 2 and T.trained_seconds(interrupted[0], records.TrialRecord.of(
        interrupted[0])) == 2
    assert T.busy_seconds([]) == 0


def test_as_read_leaves_blank_each_setting_a_trial_s_training_did_not_read():
    """kernel_size beside the MLP, momentum beside Adam, gamma beside cosine, warmup_iters without a warmup,
    reference_batch without linear scaling; a user's model or optimizer is not imported to tell, and a
    trial without a config keeps its row."""
    trials = pd.DataFrame({
        "model": ["mlp", "cnn", "mymod:net", None], "depth": [2] * 4, "width": [8] * 4, "activation": ["relu"] * 4,
        "kernel_size": [3, 5, 7, 9],
        "optimizer": ["adam", "sgd_momentum", "mymod:opt", None], "schedule": ["cosine", "step", "multistep", None],
        "warmup": [False, True, True, None], "lr_scaling": ["none", "linear", "none", None],
        "momentum": [0.9, 0.8, 0.7, math.nan], "weight_decay": [0.0] * 3 + [math.nan],
        "gamma": [0.1, 0.2, 0.3, math.nan], "step_fraction": [0.3] * 3 + [math.nan],
        "warmup_iters": [10, 20, 30, 40], "reference_batch": [64, 32, 16, 8]})
    expected = trials.astype({k: "Int64" for k in ("depth", "width", "kernel_size", "warmup_iters", "reference_batch")})
    expected.loc[0, ["kernel_size", "momentum", "gamma", "step_fraction", "warmup_iters", "reference_batch"]] = None
    expected.loc[2, ["step_fraction", "reference_batch"]] = None  # multistep reads gamma alone
    pdt.assert_frame_equal(T.as_read(trials), expected)
    assert len(T.as_read(T.trials_frame([]))) == 0


def test_a_setting_blank_on_some_trials_is_not_varied_by_its_blanks():
    """A trial that failed before its config was stored leaves its settings blank: not another value."""
    columns = {k: "same" for k in T._KNOB_COLUMNS} | {"init": ["he", "he", None, "xavier"],
                                                      "lr": [0.1, 0.01, math.nan, 0.1]}
    trials = pd.DataFrame({"status": ["complete", "complete", "failed", "waiting"], **columns})
    assert T.varied(trials) == ["lr"]


def test_history_data_best_so_far_stands_through_pruned_trials():
    study = _study([(C, 0.5, "sgd", 0.1, {}), (P, None, "adam", 0.01, {}), (C, 0.3, "sgd", 0.1, {}),
                    (C, 0.4, "adam", 0.1, {})])
    got = T.history_data(T.trials_frame(study), "minimize")
    expected = pd.DataFrame({"number": [0, 1, 2, 3], "status": ["complete", "pruned", "complete", "complete"],
                             "value": [0.5, 9.0, 0.3, 0.4], "best_so_far": [0.5, 0.5, 0.3, 0.3],
                             "plotted": [0.5, 9.0, 0.3, 0.4]})
    pdt.assert_frame_equal(got, expected)


def test_isolation_takes_each_values_best_after_the_nuisance_search():
    study = _study([(C, 0.9, "sgd", 1e-4, {}), (C, 0.2, "sgd", 0.1, {}), (C, 0.3, "adam", 1e-3, {}),
                    (C, 0.6, "adam", 0.1, {}), (P, None, "adam", 1e-5, {})])
    got = T.comparison_data(T.trials_frame(study), "optimizer", "minimize")
    assert got[["optimizer", "trials", "complete", "pruned", "best", "best_trial"]].to_dict("records") == [
        {"optimizer": "sgd", "trials": 2, "complete": 2, "pruned": 0, "best": 0.2, "best_trial": 1},
        {"optimizer": "adam", "trials": 3, "complete": 2, "pruned": 1, "best": 0.3, "best_trial": 2}]
    assert got["median"].tolist() == pytest.approx([0.55, 0.45])


def test_lr_data_keeps_diverged_trials_at_the_top():
    study = _study([(C, 0.5, "sgd", 0.1, {}), (C, 1.0, "sgd", 0.5, {})])
    study.add_trial(create_trial(  # what a diverged trial reports: a non-finite loss
        state=P, params={"optimizer": "sgd", "lr": 1.0}, intermediate_values={0: 0.9, 1: math.inf},
        distributions={"optimizer": CategoricalDistribution(["sgd", "adam"]),
                       "lr": FloatDistribution(1e-5, 1, log=True)},
        user_attrs=records.attrs(config={"optimizer": "sgd", "lr": 1.0}, diverged={"reason": "inf", "step": 3})))
    df = T.lr_data(T.trials_frame(study), "minimize")
    assert df["status"].tolist() == ["complete", "complete", "diverged"]
    assert math.isinf(df["value"].iloc[2])
    plotted = df["plotted"]
    assert math.isfinite(plotted.iloc[2]) and plotted.iloc[2] > plotted.iloc[:2].max()  # drawn, above the rest


def test_lr_data_gives_the_lr_as_applied_after_linear_scaling():
    study = optuna.create_study()
    for batch, scaling in ((128, "linear"), (128, "none")):
        study.add_trial(create_trial(state=C, value=0.1, user_attrs=records.attrs(config={
            "optimizer": "sgd", "lr": 0.01, "batch_size": batch, "lr_scaling": scaling, "reference_batch": 32})))
    assert T.lr_data(T.trials_frame(study), "minimize")["effective_lr"].tolist() == pytest.approx([0.04, 0.01])


@pytest.mark.parametrize("direction,worst", [("minimize", 1.05), ("maximize", 0.45)])  # range 0.5, margin 10%
def test_non_finite_values_are_drawn_at_the_worst_end(direction, worst):
    trials = pd.DataFrame({"number": [0, 1, 2], "status": ["complete", "complete", "diverged"],
                           "value": [0.5, 1.0, math.inf], "lr": [0.1, 0.2, 5.0], "optimizer": ["sgd"] * 3})
    assert T.lr_data(trials, direction)["plotted"].tolist() == pytest.approx([0.5, 1.0, worst])
    assert T.history_data(trials, direction)["plotted"].tolist() == pytest.approx([0.5, 1.0, worst])


def test_batch_vs_iterations_pairs_batches_at_one_sample_budget():
    batches = pd.DataFrame({"samples_seen": [3200] * 3, "batch_size": [16, 32, 64], "total_iters": [200, 100, 50],
                            "trials": [1, 1, 1], "best": [0.30, 0.25, 0.40]})
    got = T.batch_vs_iterations(batches, "minimize")
    assert got[["batch", "iterations", "2x_batch", "2x_batch_iterations", "better"]].to_dict("records") == [
        {"batch": 16, "iterations": 200, "2x_batch": 32, "2x_batch_iterations": 100, "better": "2x batch"},
        {"batch": 32, "iterations": 100, "2x_batch": 64, "2x_batch_iterations": 50, "better": "2x iterations"}]


def test_schedule_data_recomputes_the_best_trials_curve():
    study = make_study(12, seed=1)
    trials = T.trials_frame(study)
    curves = T.schedule_data(trials, "minimize")
    assert set(curves["schedule"]) == set(trials.loc[trials["status"] == "complete", "schedule"])
    assert set(curves["schedule"]) == {"cosine", "constant"}  # seed 1 has complete trials of both: no silent skip
    cosine = curves[curves["schedule"] == "cosine"]
    assert cosine["lr"].iloc[0] > cosine["lr"].iloc[-1]
    constant = curves[curves["schedule"] == "constant"]
    assert constant["lr"].nunique() == 1


def test_importance_needs_enough_complete_trials():
    df, reason = T.importance_data(make_study(3).trials, "minimize")
    assert df is None and "at least" in reason
    df, note = T.importance_data(make_study(30).trials, "minimize")
    assert note == "" and set(df["param"]) <= {"optimizer", "lr", "batch_size", "schedule"}
    assert df["importance"].sum() == pytest.approx(1.0)


def test_importance_of_a_large_study_is_fitted_on_a_seeded_sample_and_says_so(monkeypatch):
    monkeypatch.setattr(T, "IMPORTANCE_SAMPLE", 20)
    trials = make_study(40).trials
    df, note = T.importance_data(trials, "minimize")
    again, _ = T.importance_data(make_study(40).trials, "minimize")
    assert "random sample of 20 of the 40 complete trials (seed 0)" in note
    pd.testing.assert_frame_equal(df, again)  # the same sample, hence the same numbers


def test_importance_is_what_optuna_dashboard_shows_for_the_same_study(tmp_path):
    import json
    from wsgiref.util import setup_testing_defaults

    from optuna_dashboard import wsgi

    study = make_study(30, storage=f"sqlite:///{tmp_path / 's.db'}")
    df, _ = T.importance_data(study.trials, "minimize")
    environ = {"PATH_INFO": f"/api/studies/{study._study_id}/param_importances"}
    setup_testing_defaults(environ)
    body = b"".join(wsgi(study._storage)(environ, lambda status, headers, exc_info=None: None))
    shown = json.loads(body)["param_importances"][0]  # what the dashboard's importance chart draws
    assert dict(zip(df["param"], df["importance"], strict=True)) == pytest.approx(
        {i["name"]: i["importance"] for i in shown})


def test_interaction_takes_the_best_of_each_combination():
    study = _study([(C, 0.9, "sgd", 1e-4, {}), (C, 0.2, "sgd", 0.1, {}), (C, 0.3, "adam", 1e-3, {}),
                    (P, None, "adam", 0.1, {})])
    trials = T.trials_frame(study)
    trials["batch_size"] = [32, 32, 64, 32]
    got = T.interaction_data(trials, "optimizer", "batch_size", "minimize")
    assert got.index.tolist() == ["adam", "sgd"] and got.columns.tolist() == ["32", "64"]
    assert got.loc["sgd", "32"] == 0.2 and got.loc["adam", "64"] == 0.3
    assert pd.isna(got.loc["adam", "32"]) and pd.isna(got.loc["sgd", "64"])  # the pruned one does not count


def test_numeric_choices_read_in_numeric_order():
    assert T.in_order(pd.Series([128, 16, 256, 32, 64])) == ["16", "32", "64", "128", "256"]
    assert T.in_order(pd.Series(["sgd", "adam"])) == ["adam", "sgd"]
    trials = T.trials_frame(make_study(30, seed=1))
    trials.loc[trials.index[:3], "batch_size"] = 128  # as text, "128" sorts before "16"
    table = T.interaction_data(trials, "optimizer", "batch_size", "minimize")
    assert list(table.columns) == ["16", "32", "64", "128"]


def test_the_distribution_figure_orders_batch_sizes_numerically():
    from study.report.figures import distribution_figure

    trials = T.trials_frame(make_study(30, seed=1))
    trials.loc[trials.index[:3], "batch_size"] = 128
    ax = distribution_figure(trials, "batch_size", "val_loss").axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["16", "32", "64", "128"]


def test_the_arms_table_says_which_arm_was_chosen_among_candidates_and_judged_by_fresh_seeds():
    one_each = records.StudyRecord.of(confirmed_study({0: (0.2, 0.21, 0.19), 1: (0.26, 0.25, 0.27)})).verdict
    assert "chosen_among" not in T.verdict_data(one_each)[0]
    two_of_a = records.StudyRecord.of(confirmed_study(
        {0: (0.30, 0.31, 0.29), 2: (0.2, 0.21, 0.19), 1: (0.26, 0.25, 0.27)},
        searched=(("a", 0.2), ("b", 0.25), ("a", 0.22)), verified={2: (0.25, 0.24, 0.26)})).verdict
    arms = T.verdict_data(two_of_a)[0].set_index("arm")
    assert arms.loc["a", ["chosen_among", "verified", "confirms_trial", "n"]].tolist() == [2, "yes", 2, 3]
    assert arms.loc["b", ["chosen_among", "verified"]].tolist() == [1, "no"]


def test_the_arms_table_marks_a_lottery_where_there_is_one():
    calm = records.StudyRecord.of(confirmed_study({0: (0.2, 0.21, 0.19), 1: (0.26, 0.25, 0.27)})).verdict
    assert "lottery" not in T.verdict_data(calm)[0]
    chaotic = records.StudyRecord.of(confirmed_study(
        {0: [0.2, 0.21, 0.19], 1: [0.18, 0.2, 0.22], 2: [0.25, 0.23, 0.24], 3: [0.18, 0.25, 2.88]},
        searched=(("a", 0.2), ("b", 0.2), ("c", 0.22), ("d", 0.18)))).verdict
    assert T.verdict_data(chaotic)[0].set_index("arm")["lottery"].to_dict() == {"a": "no", "b": "no", "c": "no",
                                                                               "d": "yes"}
