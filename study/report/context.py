"""What the report's sections read and what they return: one ReportContext, computed once, and Sections
of paragraphs, tables and figures that page.py lays out.

    >>> from study import records
    >>> study = optuna.create_study()
    >>> raw = records.trials(study)                      # the storage, read once
    >>> ctx = ReportContext.of(study, T.trials_frame(raw), raw)
    >>> ctx.best, ctx.direction, ctx.record.metric
    (None, 'minimize', 'value')
    >>> s = Section("history", "Optimization history")   # then s.table(df), s.figure(fig, "caption")
    >>> s.say("No trial has completed yet.")
    >>> s.paragraphs
    [{'text': 'No trial has completed yet.', 'note': False}]
"""
from __future__ import annotations

import base64
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import optuna
import pandas as pd
from markupsafe import Markup

from study.config import Direction
from study.report import tables as T
from study import records
from study.records import FINISHED, StudyRecord, TrialRecord, status_of


@dataclass
class Figure:
    title: str
    caption: str  # one sentence: what to read from it
    png: str  # base64


@dataclass
class Section:
    id: str
    title: str
    paragraphs: list[dict] = field(default_factory=list)
    summary: list[tuple[str, str]] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    tables: list[dict] = field(default_factory=list)
    code: str = ""  # a snippet shown as code

    def say(self, text: str, note: bool = False) -> None:
        self.paragraphs.append({"text": text, "note": note})

    def table(self, df: pd.DataFrame, title: str = "", index: bool = False) -> None:
        html = df.to_html(index=index, escape=True, na_rep="", float_format=lambda v: f"{v:.4g}", border=0)
        self.tables.append({"title": title, "html": Markup(html)})  # pandas escaped every cell

    def figure(self, fig: Any, caption: str) -> None:
        from study.report.figures import to_png

        title = fig.axes[0].get_title() if fig.axes else ""
        self.figures.append(Figure(title, caption, base64.b64encode(to_png(fig)).decode()))


@dataclass
class ReportContext:
    """What every section reads, computed once per report."""

    study: optuna.Study
    raw: list[optuna.trial.FrozenTrial]  # the study's search trials as read once, by number
    record: StudyRecord  # the study's user attrs
    trials: pd.DataFrame
    history: pd.DataFrame
    metric: str
    direction: Direction
    best: int | None  # the best complete trial's number
    counts: dict
    changed: list[str]  # settings that took more than one value
    finished: pd.DataFrame  # complete, pruned and diverged trials
    every: pd.DataFrame  # search trials and confirmation runs (the trials table)
    verdict: dict | None  # from the confirmation runs (verdict.py), or None
    engines: dict[str, Counter]  # phase ("search", "confirm") -> (engine, device, threads) -> finished trials

    @classmethod
    def of(cls, study: optuna.Study, trials: pd.DataFrame,
           raw: list[optuna.trial.FrozenTrial] | None = None) -> "ReportContext":
        """`trials` is `trials_frame(raw)`; `raw`, the study's trials as the caller read them (else read here)."""
        from study.verdict import decide

        direction = Direction(study.direction.name.lower())
        record = StudyRecord.of(study)
        raw = records.trials(study) if raw is None else raw
        every = trials
        # The search's figures and tables show search trials; the confirmation runs feed the verdict.
        search_raw = [t for t in raw if not records.TrialRecord.of(t).confirm]
        trials = trials[trials["phase"] == "search"] if len(trials) else trials
        return cls(study, search_raw, record, trials, T.history_frame(search_raw), record.metric, direction,
                   T.best_number(trials, direction),
                   trials["status"].value_counts().to_dict() if len(trials) else {},
                   T.varied(trials) if len(trials) else [],
                   trials[trials["status"].isin(FINISHED)] if len(trials) else trials,
                   every, decide(raw, record.scientific, direction, record.metric), engines_of(raw))

    @property
    def scientific(self) -> list[str]:
        return [p for p in self.record.scientific if p in self.changed]


def engines_of(raw: list[optuna.trial.FrozenTrial]) -> dict[str, Counter]:
    """Which engine trained the finished trials of each phase, on which device and, on a CPU, how many
    threads (trials from before engines were recorded: sequential, the only one there was; None where a
    record does not say)."""
    used: dict[str, Counter] = {}
    for t in raw:
        if status_of(t) in FINISHED:
            record = TrialRecord.of(t)
            how = ((record.engine or {}).get("name", "sequential"), record.provenance.get("device"), record.threads)
            used.setdefault(record.phase, Counter())[how] += 1
    return used
