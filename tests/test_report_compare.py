"""`report --compare`: several studies of one storage on one page."""
from conftest import call_cli, make_study


def test_two_studies_side_by_side_with_their_best_values_settings_and_curves(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    a, b = make_study(10, storage=url, name="adam-ish", seed=1), make_study(10, storage=url, name="sgd-ish", seed=2)
    result = call_cli("report", "--storage", url, "--compare", "adam-ish", "sgd-ish", "--out", "out", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    page = tmp_path / "out" / "compare-adam-ish-sgd-ish" / "index.html"
    html = page.read_text()
    assert f"report: {page}" in result.stdout
    for study in (a, b):
        assert study.study_name in html and f"{study.best_value:.4g}" in html
    assert html.count("<img") == 1 and "Best trial of each study" in html

    missing = call_cli("report", "--storage", url, "--compare", "adam-ish", "nope", cwd=tmp_path)
    assert missing.returncode == 2 and "no such study" in missing.stderr and "Traceback" not in missing.stderr
    assert missing.stderr.startswith("error: --compare: compare: no such study")  # the flag that named it


def test_one_study_to_compare_is_refused_and_nothing_is_written(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    make_study(3, storage=url, name="only")
    before = sorted(p.name for p in tmp_path.iterdir())
    for names in (["only"], ["only", "only"]):
        result = call_cli("report", "--storage", url, "--compare", *names, "--out", "out", cwd=tmp_path)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        assert result.stderr.startswith("error: --compare: compare: names one study; give two or more")
        assert sorted(p.name for p in tmp_path.iterdir()) == before  # no out/ folder, no page


def test_a_study_s_confirmation_runs_are_counted_apart_from_its_search():
    import optuna
    from optuna.trial import TrialState, create_trial

    from study.report.compare import comparison_data

    study = make_study(5, name="a")
    for seed in (1, 2):  # retrained with fresh seeds: not search trials, and never the best, however low
        study.add_trial(create_trial(state=TrialState.COMPLETE, value=0.001, user_attrs={"confirm": {"of": 0,
                                                                                                    "seed": seed}}))
    table, _ = comparison_data([study, optuna.create_study(study_name="b")])
    assert table["trials"].tolist() == ["5 complete, 0 pruned, 0 diverged; 2 confirmation runs",
                                        "0 complete, 0 pruned, 0 diverged"]
    assert table["best"][0] == min(t.value for t in study.trials[:5])


def test_each_study_s_verdict_is_computed_from_its_confirmation_runs_not_read_from_storage():
    """A verdict stored by an older version may claim what the tests no longer support: the page computes
    it from the runs, as the study's own report does."""
    from optuna.trial import TrialState, create_trial

    from study import records
    from study.report.compare import comparison_data
    from study.verdict import decide

    study = make_study(4, name="a", verdict={"sentence": "adam and sgd are tied (stored by an older version)"})
    for of, values in ((0, (0.30, 0.31, 0.29)), (1, (0.60, 0.62, 0.61))):
        base = study.trials[of]
        for seed, value in enumerate(values):
            study.add_trial(create_trial(
                state=TrialState.COMPLETE, value=value, params=base.params, distributions=base.distributions,
                user_attrs=records.attrs(confirm={"of": of, "seed": seed}, config=base.user_attrs["config"])))
    table, _ = comparison_data([study])
    want = decide(records.trials(study), ["optimizer", "batch_size"], "minimize", "val_loss")["sentence"]
    assert table["verdict"][0] == want and "older version" not in want
