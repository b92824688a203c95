"""Laying the report out: tables and figures into one self-contained HTML page, plus trials.csv.

    path = build_report(study, Path("reports"))   # reports/<safe study name>/index.html

Images are embedded as PNG data URIs; the page loads nothing from the network. Every piece of user
text goes through Jinja's autoescaping or pandas' escaping.
"""
from __future__ import annotations

import base64
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import optuna
import pandas as pd
from markupsafe import Markup

from study.files import atomic_write_text
from study.paths import child
from study.report import diagnostics as D
from study.report import tables as T

_ENV = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent), autoescape=True)


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


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.4g}"
    return str(v)


def build_sections(study: optuna.Study, trials: pd.DataFrame) -> tuple[list[Section], str]:
    """Compute every section's data and render its figures; returns the sections and the verdict line."""
    from study.report import figures as F

    history = T.history_frame(study)
    metric = study.user_attrs.get("metric", "val_loss")
    direction = study.direction.name.lower()
    best = T.best_number(trials, direction)
    counts = trials["status"].value_counts().to_dict() if len(trials) else {}
    changed = T.varied(trials) if len(trials) else []
    sections = []

    # 1. Summary
    s = Section("summary", "Summary")
    durations = trials["duration_s"].dropna() if len(trials) else pd.Series(dtype=float)
    s.summary = [("study", study.study_name), ("dataset", str(study.user_attrs.get("dataset", "?"))),
                 ("model", str(study.user_attrs.get("model", "?"))), ("objective", f"{direction} {metric}"),
                 ("trials", ", ".join(f"{counts.get(k, 0)} {k}" for k in ("complete", "pruned", "diverged", "failed"))
                  + "".join(f", {counts[k]} {k}" for k in ("interrupted", "running", "waiting") if counts.get(k))),
                 ("trial time", f"{durations.sum():.1f} s in total, {durations.mean():.2f} s mean"
                  if len(durations) else "no finished trial"),
                 ("varied", ", ".join(changed) or "nothing")]
    verdict = ""
    if best is None:
        s.say("No trial has completed yet, so there is no winner and no comparison to show.", note=True)
    else:
        row = trials.set_index("number").loc[best]
        t = study.trials[best]
        params = ", ".join(f"{k}={_fmt(v)}" for k, v in t.params.items()) or "(no searched params)"
        s.summary += [("best trial", f"{best}: {params}"),
                      ("validation", ", ".join(f"{k.removeprefix('val_')} {_fmt(row[k])}" for k in
                                               ("val_loss", "val_accuracy", "val_precision", "val_recall", "val_f1")))]
        test = study.user_attrs.get("test")
        if test and test.get("trial") == best:
            s.summary.append(("test (best trial only)", ", ".join(f"{k.removeprefix('test_')} {_fmt(v)}"
                                                                  for k, v in test["metrics"].items())))
        else:
            s.say("Test-split metrics are absent: the best trial's weights were not evaluated on the test split "
                  "(run `study run` to the end to record them).", note=True)
        verdict = f"Best: trial {best} with {metric} {row['value']:.4g} ({params})."
    sections.append(s)
    finished = trials[trials["status"].isin(["complete", "pruned", "diverged"])] if len(trials) else trials
    if finished.empty:
        return sections, verdict

    # 2. Optimization history
    s = Section("history", "Optimization history")
    s.figure(F.history_figure(T.history_data(trials, direction), metric),
             f"Each point is a trial's final {metric} (pruned: the last reported value); the green line is the best "
             "complete trial so far, so a flat line means later trials stopped finding better settings.")
    sections.append(s)

    # 3. Learning rate
    if "lr" in changed:
        s = Section("learning-rate", "Learning rate")
        s.figure(F.lr_figure(T.lr_data(trials, direction), metric),
                 "Too small a learning rate undershoots (high loss on the left), too large overshoots or diverges "
                 "(red crosses on the right); the valley between is where each optimizer works.")
        sections.append(s)

    # 4. Scientific choices, compared fairly
    scientific = [p for p in (study.user_attrs.get("scientific") or []) if p in changed]
    for param in scientific:
        comparison = T.comparison_data(trials, param, direction)
        s = Section(f"compare-{param}", f"Which {param}?")
        if comparison["complete"].sum() == 0:
            s.say(f"No complete trial for any {param} value yet.", note=True)
        else:
            winner = comparison.iloc[0]
            s.say(f"Best {param}: {winner[param]} ({metric} {winner['best']:.4g}, trial {winner['best_trial']}), "
                  f"each value's best taken after the other params were searched.")
            low, high = int(comparison["trials"].min()), int(comparison["trials"].max())
            if high >= 2 * max(1, low):
                s.say(f"The values were searched unevenly ({low} to {high} trials each): the sampler spent more "
                      "trials where results were good, so a value with fewer trials had fewer chances to find its "
                      "best settings.", note=True)
            s.figure(F.distribution_figure(trials, param, metric),
                     f"The spread of {metric} over complete trials for each {param}: a low median means the choice is "
                     "forgiving of the other settings, a low minimum that it can win when they are right.")
            s.figure(F.isolation_figure(comparison, param, metric),
                     f"The fair comparison: each bar is the best trial for one {param} value after the nuisance "
                     "params (such as the learning rate) were tuned for it.")
        s.table(comparison)
        sections.append(s)

    # 4b. Pairs of scientific choices: does one choice's winner depend on the other?
    for i, a in enumerate(scientific):
        for b in scientific[i + 1:]:
            table = T.interaction_data(trials, a, b, direction)
            if table.size > 1:
                s = Section(f"pair-{a}-{b}", f"{a} x {b}")
                s.figure(F.interaction_figure(table, metric),
                         f"The best trial of every {a} and {b} combination (blank: no complete trial): if the "
                         f"best {a} differs between columns, the answer to 'which {a}?' depends on {b}.")
                sections.append(s)

    # 4c. What the inits do to the signal, before any training
    if "init" in changed:
        activations = D.activation_data(trials)
        if len(activations):
            s = Section("activations", "Activations at initialisation")
            s.figure(F.activation_figure(activations),
                     "How far the activations spread at each layer of the untrained network, on training samples: "
                     "a line falling towards zero is the signal collapsing under that init, which leaves the "
                     "deeper layers almost nothing to learn from.")
            sections.append(s)

    # 5. Learning curves
    if len(history):
        s = Section("curves", "Learning curves")
        s.figure(F.curves_figure(history, best, metric),
                 "Validation curves of every trial (pruned grey, diverged red, the best orange): pruning stops "
                 "curves that lag the median early, which is where the time went to the good ones.")
        top = trials[trials["status"] == "complete"].sort_values("value", ascending=direction == "minimize")
        numbers = [int(n) for n in top["number"].head(3)]
        if numbers:
            s.figure(F.train_val_figure(history, numbers),
                     "A validation loss that rises while the train loss falls is overfitting; "
                     "both high is underfitting.")
        sections.append(s)

    # 6. Batch against iterations
    if "batch_size" in changed:
        batches = T.batch_data(trials, direction)
        if len(batches):
            s = Section("batch", "Bigger batches or more iterations?")
            s.figure(F.batch_figure(batches, metric),
                     "At one budget of samples seen, doubling the batch halves the iterations (labels): the lowest "
                     "point is how that budget was best spent.")
            answer = T.batch_vs_iterations(batches, direction)
            if len(answer):
                wins = answer["better"].value_counts()
                s.say(f"2x batch or 2x iterations? Of {len(answer)} pairs at the same sample budget, 2x batch won "
                      f"{wins.get('2x batch', 0)} and 2x iterations won {wins.get('2x iterations', 0)}.")
                s.table(answer, "2x batch (half the iterations) against 2x iterations (half the batch)")
            s.table(batches, "Best value per batch size and budget")
            sections.append(s)

    # 7. Schedules
    if "schedule" in changed or "warmup" in changed:
        curves = T.schedule_data(trials, direction)
        if len(curves):
            s = Section("schedules", "Learning-rate schedules")
            s.figure(F.schedule_figure(curves),
                     "The learning rate at every step of the best trial of each schedule type, "
                     "as its scheduler set it.")
            sections.append(s)

    # 8. Importance
    s = Section("importance", "Hyperparameter importance")
    importances, reason = T.importance_data(study)
    if importances is None:
        s.say(reason, note=True)
    else:
        s.figure(F.importance_figure(importances),
                 "How much of the variation in the objective each param explains (fANOVA): tune the long bars first.")
    sections.append(s)

    # 9. Test split
    test = study.user_attrs.get("test") or {}
    confusion, per_class = T.confusion_tables(test if test.get("trial") == best else None)
    if confusion is not None:
        s = Section("test", "Best trial on the test split")
        s.figure(F.confusion_figure(confusion),
                 "Counts of test samples by true and predicted class: off-diagonal cells are the confusions.")
        s.table(per_class, "Per-class precision, recall and F1", index=True)
        sections.append(s)

    # 10. All trials
    s = Section("trials", "All trials")
    s.say("The same table is in trials.csv beside this page.")
    shown = ["number", "status", "value", "duration_s", "epochs", *changed, "val_accuracy", "val_f1", "error",
             "diverged"]
    s.table(trials[list(dict.fromkeys(shown))])
    sections.append(s)
    return sections, verdict


def build_report(study: optuna.Study, out_root: Path, artifact_dir: Path | None = None) -> Path:
    """Write <out_root>/<safe study name>/index.html and trials.csv; return the page's path.

    The study gets an optuna-dashboard note linking the page and, with `artifact_dir`, the figures
    as artifacts."""
    folder = child(Path(out_root), study.study_name)
    folder.mkdir(parents=True, exist_ok=True)
    trials = T.trials_frame(study)  # once: for the page and for trials.csv
    sections, verdict = build_sections(study, trials)
    html = _ENV.get_template("template.html.j2").render(
        name=study.study_name, question=study.user_attrs.get("question", ""), verdict=verdict, sections=sections)
    atomic_write_text(folder / "index.html", html)
    atomic_write_text(folder / "trials.csv", trials.to_csv(index=False))
    attach_to_dashboard(study, folder / "index.html", sections, verdict, artifact_dir)
    return folder / "index.html"


def attach_to_dashboard(study: optuna.Study, page: Path, sections: list[Section], verdict: str,
                        artifact_dir: Path | None) -> None:
    import tempfile

    from optuna_dashboard import save_note

    save_note(study, f"## Report\n\n{verdict or 'No complete trial yet.'}\n\nThe HTML comparison report: "
                     f"[{page.resolve()}](file://{page.resolve()})\n")
    if artifact_dir is None:
        return
    from optuna.artifacts import upload_artifact

    from study.dashboard import artifact_store

    store = artifact_store(artifact_dir, create=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name, png in figures_of(sections):
            path = Path(tmp) / name
            path.write_bytes(png)
            upload_artifact(artifact_store=store, file_path=str(path), study_or_trial=study, mimetype="image/png")


def figures_of(sections: list[Section]) -> list[tuple[str, bytes]]:
    return [(f"{s.id}-{i}.png", base64.b64decode(f.png)) for s in sections for i, f in enumerate(s.figures)]
