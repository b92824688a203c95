"""Several studies of one storage side by side: each one's best value and winning settings in one table,
and each best trial's learning curve on one axis.

    >>> from pathlib import Path
    >>> a, b = optuna.create_study(study_name="a"), optuna.create_study(study_name="b")
    >>> build_comparison([a, b], Path("reports")).parts[-2:]     # a safe folder name, never a path
    ('compare-a-b', 'index.html')
"""
from __future__ import annotations

import math
from pathlib import Path

import optuna
from optuna.trial import TrialState
import pandas as pd

from study.records import StudyRecord, TrialRecord, best_trial, counts, phase_of
from study.report.context import Section
from study.verdict import decide


def comparison_data(studies: list[optuna.Study]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(one row per study: its best trial's value and settings, its counts and its verdict;
    one row per (study, epoch) of each best trial's history)."""
    rows, curves = [], []
    for study in studies:
        record, best, trials = StudyRecord.of(study), best_trial(study), study.get_trials(deepcopy=False)
        c = counts(t for t in trials if phase_of(t) == "search")
        runs = sum(phase_of(t) == "confirm" and t.state == TrialState.COMPLETE for t in trials)
        # From the runs, as the study's own report computes it: a stored sentence may be an older version's.
        verdict = decide(trials, record.scientific, study.direction.name.lower(), record.metric)
        row = {"study": study.study_name, "metric": record.metric,
               "best": best.value if best is not None else math.nan,
               "best_trial": best.number if best is not None else None,
               "trials": f"{c['complete']} complete, {c['pruned']} pruned, {c['diverged']} diverged"
                         + (f"; {runs} confirmation runs" if runs else ""),  # counted apart, as list does
               "verdict": verdict["sentence"] if verdict else ""}
        row.update({k: v for k, v in (best.params if best is not None else {}).items()})
        rows.append(row)
        for epoch in TrialRecord.of(best).history if best is not None else []:
            curves.append({"study": study.study_name, **epoch})
    return pd.DataFrame(rows), pd.DataFrame(curves)


def sections(studies: list[optuna.Study]) -> list[Section]:
    from study.report import figures as F

    table, curves = comparison_data(studies)
    s = Section("compare", "Studies side by side")
    s.say("Each study's best search trial (one seed each: within a study, its verdict, when it has one, is the "
          "comparison that holds) and the settings it won with; a blank setting was not searched in that study.")
    s.table(table)
    if len(curves):
        metric = table["metric"].iloc[0]
        s.figure(F.compare_curves_figure(curves, metric),
                 "Each study's best trial, validation value against training samples seen: one axis for all.")
    return [s]


def build_comparison(studies: list[optuna.Study], out_root: Path) -> Path:
    """<out_root>/compare-<names>/index.html; returns its path."""
    from study.files import atomic_write_text
    from study.paths import child
    from study.report.page import render

    folder = child(Path(out_root), "compare-" + "-".join(s.study_name for s in studies))
    folder.mkdir(parents=True, exist_ok=True)
    html = render(name=" vs ".join(s.study_name for s in studies), question="Several studies side by side",
                  verdict="", sections=sections(studies))
    atomic_write_text(folder / "index.html", html)
    return folder / "index.html"
