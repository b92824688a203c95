"""The registered sections: each applies to a study that varies everything, and the page is their order."""
import re

import pandas as pd
import pytest

from conftest import confirmed_study, make_study
from study.report import tables as T
from study.report.context import ReportContext, Section
from study.report.sections import SECTIONS, build_sections


@pytest.fixture(scope="module")
def everything():
    """A study in which every section applies: lr, scientific choices, batch, schedules and init varied,
    enough complete trials for importance, and the best trial's test split."""
    study = make_study(30, statuses=("complete", "complete", "pruned", "diverged", "failed"))
    trials = T.trials_frame(study)
    trials["init"] = ["he", "xavier"] * 15
    best = T.best_number(trials, "minimize")
    study.set_user_attr("test", {"trial": best, "metrics": {"test_loss": 0.3},
                                 "confusion": [[5, 1], [0, 4]],
                                 "per_class": {"precision": [1.0, 0.8], "recall": [0.83, 1.0], "f1": [0.9, 0.9],
                                               "support": [6, 4]}})
    return study, trials


@pytest.mark.parametrize("make", SECTIONS, ids=[m.__name__ for m in SECTIONS])
def test_every_registered_section_applies_to_a_study_that_varies_everything(everything, make):
    made = make(ReportContext.of(*everything))
    made = made if isinstance(made, list) else [made]
    assert made and all(isinstance(s, Section) and s.title for s in made)
    assert all(s.figures or s.tables or s.summary or s.paragraphs for s in made)


def test_the_page_is_the_sections_in_registered_order(everything, monkeypatch):
    """Each maker runs once, in registered order, and the page is what they made, in that order (recorded
    as the page is built, so the figures are rendered once)."""
    from study.report import sections as S

    made = []  # (registered position, ids made), in call order

    def recorded(position, make):
        def wrapped(ctx):
            out = make(ctx)
            made.append((position, [s.id for s in (out if isinstance(out, list) else [out])]))
            return out
        return wrapped

    monkeypatch.setattr(S, "SECTIONS", [recorded(i, make) for i, make in enumerate(SECTIONS)])
    ctx = ReportContext.of(*everything)
    sections, verdict = build_sections(ctx)
    assert [position for position, _ in made] == list(range(len(SECTIONS)))
    assert [s.id for s in sections] == [i for _, ids in made for i in ids]
    assert verdict.startswith(f"Best: trial {ctx.best} ")


def test_a_study_larger_than_the_table_shows_its_best_trials_and_says_so(everything, monkeypatch):
    from study.report import sections as S

    monkeypatch.setattr(S, "MAX_TABLE_ROWS", 5)
    ctx = ReportContext.of(*everything)
    s = S.all_trials(ctx)
    best = ctx.trials.sort_values("value")["number"].head(5).tolist()
    assert s.title == "The best 5 trials" and "5 of the 30 trials, best first" in s.paragraphs[0]["text"]
    shown = [int(n) for n in re.findall(r"<tr>\s*<td>(\d+)</td>", s.tables[0]["html"])]
    assert shown == best


def test_the_summary_says_which_engine_trained_each_phase():
    """The one line in which a population run's report differs: per phase, finished trials only."""
    import optuna

    from study import records
    from study.report.sections import summary

    study = make_study(4)
    assert dict(summary(ReportContext.of(study, T.trials_frame(study))).summary)["trained by"] == \
        "the sequential engine (4 trials)"  # records from before engines were stored: sequential
    template = study.trials[0]
    for i, (engine, state) in enumerate([("population", "COMPLETE")] * 3 + [("sequential", "COMPLETE"),
                                                                            ("population", "FAIL")]):
        attrs = {**template.user_attrs, **records.attrs(engine={"name": engine}, confirm={"of": 0, "seed": i})}
        study.add_trial(optuna.trial.create_trial(
            state=optuna.trial.TrialState[state], params=template.params, distributions=template.distributions,
            user_attrs=attrs, value=template.value if state == "COMPLETE" else None))
    line = dict(summary(ReportContext.of(study, T.trials_frame(study))).summary)["trained by"]
    assert line == ("search: the sequential engine (4 trials); "
                    "confirmation runs: the population engine (3 trials), the sequential engine (1 trial)")


def test_the_engine_line_says_where_trials_trained_and_the_table_shows_threads_where_they_differ():
    """On a CPU the thread count can move a chaotic config's result: the summary says it per engine and
    device, and the trials table shows the column where trials differ in it."""
    import optuna

    from study import records
    from study.records import TrialRecord
    from study.report.sections import all_trials, summary

    study = make_study(1)
    template = study.trials[0]
    for device, threads in (("cpu", 1), ("cpu", 2), ("cpu", 2), ("cuda:0", 4)):
        history = [{**epoch, "threads": threads} for epoch in TrialRecord.of(template).history]
        attrs = {**template.user_attrs, **records.attrs(provenance={"device": device}, history=history)}
        study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.COMPLETE, params=template.params,
                                                  distributions=template.distributions, user_attrs=attrs,
                                                  value=template.value))
    ctx = ReportContext.of(study, T.trials_frame(study))
    assert dict(summary(ctx).summary)["trained by"] == (
        "the sequential engine (1 trial, cpu, 1 thread), the sequential engine (2 trials, cpu, 2 threads), "
        "the sequential engine (1 trial, cuda:0), the sequential engine (1 trial)")
    table = all_trials(ctx).tables[0]["html"]
    assert "<th>device</th>" in table and "<th>threads</th>" in table
    assert ctx.every["threads"].tolist()[1:] == [1, 2, 2, pd.NA] and ctx.every["device"].tolist()[-1] == "cuda:0"


def test_the_trials_table_shows_no_threads_or_device_where_only_a_failed_trial_lacks_them():
    """A trial that failed before training records neither: its blanks are not another value of them."""
    import optuna

    from study import records
    from study.records import TrialRecord
    from study.report.sections import all_trials

    study = make_study(1)
    template = study.trials[0]
    history = [{**epoch, "threads": 1} for epoch in TrialRecord.of(template).history]
    attrs = {**template.user_attrs, **records.attrs(provenance={"device": "cpu"}, history=history)}
    for state in ("COMPLETE", "COMPLETE", "FAIL"):
        study.add_trial(optuna.trial.create_trial(
            state=optuna.trial.TrialState[state], params=template.params, distributions=template.distributions,
            user_attrs=attrs if state == "COMPLETE" else {}, value=template.value if state == "COMPLETE" else None))
    table = all_trials(ReportContext.of(study, T.trials_frame(study))).tables[0]["html"]
    assert "<th>device</th>" not in table and "<th>threads</th>" not in table


def test_the_trials_table_leaves_blank_a_setting_the_trial_did_not_read():
    """momentum searched for SGD with momentum: Adam's rows show none, not the config's default 0.9."""
    from study.report.sections import all_trials

    study = make_study(4)
    trials = T.trials_frame(study)
    trials["optimizer"], trials["momentum"] = ["adam", "sgd_momentum"] * 2, [0.9, 0.8, 0.9, 0.95]
    html = all_trials(ReportContext.of(study, trials)).tables[0]["html"]
    header = re.findall(r"<th>([^<]*)</th>", html)
    rows = [re.findall(r"<td>([^<]*)</td>", row) for row in re.findall(r"<tr>(.*?)</tr>", html, re.S) if "<td>" in row]
    shown = [(row[header.index("optimizer")], row[header.index("momentum")]) for row in rows]
    assert shown == [("adam", ""), ("sgd_momentum", "0.8"), ("adam", ""), ("sgd_momentum", "0.95")]


def test_the_trials_table_of_a_study_not_made_by_study_run_shows_no_metric_it_never_measured():
    """A plain Optuna study's table had empty val_accuracy and val_f1 columns under a val_loss objective."""
    import optuna

    from study import records
    from study.report.sections import all_trials

    study = optuna.create_study()
    study.optimize(lambda t: t.suggest_float("x", -1, 1) ** 2, n_trials=3)
    raw = records.trials(study)
    html = all_trials(ReportContext.of(study, T.trials_frame(raw), raw)).tables[0]["html"]
    header = re.findall(r"<th>([^<]*)</th>", html)
    assert "value" in header and not {"val_accuracy", "val_f1"} & set(header), header
    made = make_study(3)  # one that measured them shows them
    assert "val_f1" in re.findall(r"<th>([^<]*)</th>", all_trials(ReportContext.of(made, T.trials_frame(made)))
                                  .tables[0]["html"])


def _timed(spans: list[tuple[float, float, float]]) -> tuple:
    """make_study's study and trials (copies, which the report reads) with (start, end, seconds trained) each."""
    import datetime

    study = make_study(len(spans))
    at, trials = datetime.datetime(2026, 12, 3), study.trials
    for t, (a, b, trained) in zip(trials, spans, strict=True):
        t.datetime_start, t.datetime_complete = (at + datetime.timedelta(seconds=x) for x in (a, b))
        t.user_attrs["history"][-1]["wall_time"] = trained
    return study, trials


def test_the_summary_says_when_trial_times_overlap_and_how_long_training_took():
    """Sixty-four trials of a population each took about 1 s within 6 s of training: "62 s in total" read
    as what the search cost. The sum is said to be of trials that trained at once, with the time while
    any ran beside it; trials that ran one at a time keep the plain line."""
    from study.report.sections import summary

    def line(spans):
        study, trials = _timed(spans)
        return dict(summary(ReportContext.of(study, T.trials_frame(trials), trials)).summary)["trial time"]

    assert line([(0, 2, 1.9), (2, 4, 1.9)]) == "3.8 s in total, 1.90 s mean"
    assert line([(0, 3, 3), (0, 3, 3), (1, 4, 3)]) == \
        "9.0 s summed over trials that trained at once (4.0 s while any ran), 3.00 s mean"


def test_a_trial_s_time_is_the_time_it_trained_not_the_time_it_waited_for_a_population():
    """Asked at 0 with trials of another graph, it waited for their population and trained from 6 to 8:
    its time is the 2 s its training clock ran; a trial with no epoch keeps its start-to-end span."""
    _, trials = _timed([(0, 6, 6), (0, 8, 2)])
    trials[0].user_attrs["history"] = []
    assert list(T.trials_frame(trials)["duration_s"]) == [6, 2]


def test_the_summary_puts_what_the_best_trial_s_seeds_gave_beside_it():
    from study.report.sections import summary

    study = confirmed_study({0: (2.30, 0.21, 2.31), 1: (0.26, 0.25, 0.27)})
    rows = dict(summary(ReportContext.of(study, T.trials_frame(study))).summary)
    assert rows["best trial"] == "0: opt=a"
    assert rows["confirmed"] == "1.61 [0, 4.61] over 3 seeds; it fails (chance on 2 of 3 seeds)"
    assert "trial 1, the candidate of b, which leads the verdict" in rows["reproduce the leader"]


def test_the_verdict_says_an_arm_chosen_among_several_candidates_is_judged_by_fresh_seeds():
    from study.report.sections import answer

    def paragraphs(study):
        return " ".join(p["text"] for p in answer(ReportContext.of(study, T.trials_frame(study))).paragraphs)

    one_each = confirmed_study({0: (0.2, 0.21, 0.19), 1: (0.26, 0.25, 0.27)})
    assert "several confirmed candidates" not in paragraphs(one_each)
    two_of_a = confirmed_study({0: (0.30, 0.31, 0.29), 2: (0.2, 0.21, 0.19), 1: (0.26, 0.25, 0.27)},
                               searched=(("a", 0.2), ("b", 0.25), ("a", 0.22)), verified={2: (0.24, 0.23, 0.25)})
    assert "several confirmed candidates, the one whose seeds gave the best mean was retrained with as many " \
        "fresh seeds, and the arm is judged by those alone" in paragraphs(two_of_a)


def test_the_verdict_of_a_space_without_arms_describes_its_one_arm_and_no_tests():
    from study.report.sections import answer

    study = confirmed_study({0: (0.24, 0.26, 0.25)}, searched=(("a", 0.2), ("a", 0.3)), scientific=())
    made = answer(ReportContext.of(study, T.trials_frame(study)))
    text = " ".join(p["text"] for p in made.paragraphs)
    assert text.startswith("the best config (trial 0): 0.25 [0.225, 0.275] (n = 3), against 0.2 from the one search "
                           "seed that chose it, which is optimistic. The space has no scientific param")
    assert "Pairs are compared" not in text and "separate the arms" not in made.figures[0].caption
    assert len(made.tables) == 1  # the arm; no table of pairs
