"""What the report's sections read and what they return: one ReportContext, computed once, and Sections
of paragraphs, tables and figures that page.py lays out.

    ctx = ReportContext.of(study, trials_frame(study))
    s = Section("history", "Optimization history"); s.say("..."); s.table(df); s.figure(fig, "caption")
"""
from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

import optuna
import pandas as pd
from markupsafe import Markup

from study.report import tables as T
from study.states import FINISHED


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
    trials: pd.DataFrame
    history: pd.DataFrame
    metric: str
    direction: str  # minimize | maximize
    best: int | None  # the best complete trial's number
    counts: dict
    changed: list[str]  # settings that took more than one value
    finished: pd.DataFrame  # complete, pruned and diverged trials

    @classmethod
    def of(cls, study: optuna.Study, trials: pd.DataFrame) -> "ReportContext":
        direction = study.direction.name.lower()
        return cls(study, trials, T.history_frame(study), study.user_attrs.get("metric", "val_loss"), direction,
                   T.best_number(trials, direction),
                   trials["status"].value_counts().to_dict() if len(trials) else {},
                   T.varied(trials) if len(trials) else [],
                   trials[trials["status"].isin(FINISHED)] if len(trials) else trials)

    @property
    def scientific(self) -> list[str]:
        return [p for p in (self.study.user_attrs.get("scientific") or []) if p in self.changed]
