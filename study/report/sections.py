"""The report's sections, in page order: each a small function of one ReportContext that returns its
Section(s), or None where it does not apply. Adding a section is one function added to SECTIONS.

    >>> [make.__name__ for make in SECTIONS]   # the page's order
    ['summary', 'answer', 'history', 'learning_rate', 'comparisons', 'pairs', 'activations', 'curves', 'batch',
     'schedules', 'parallel', 'importance', 'test_split', 'all_trials']
    >>> import optuna
    >>> study = optuna.create_study()
    >>> sections, verdict = build_sections(ReportContext.of(study, T.trials_frame(study)))
    >>> [s.id for s in sections], verdict      # before the first finished trial, only the summary
    (['summary'], '')
"""
from __future__ import annotations

import json
import math
from collections import Counter
from typing import Any, Callable

import pandas as pd

from study import interrupts
from study.config import METRICS
from study.report import diagnostics as D
from study.report import tables as T
from study.report.context import ReportContext, Section
from study.verdict import boundary_warnings, confirmed


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.4g}"
    return str(v)


def _best_params(ctx: ReportContext) -> str:
    params = next(t.params for t in ctx.raw if t.number == ctx.best)
    return ", ".join(f"{k}={_fmt(v)}" for k, v in params.items()) or "(no searched params)"


def verdict(ctx: ReportContext) -> str:
    if ctx.verdict is not None:
        return f"Verdict, from seeded confirmation runs (mean [95% interval]): {ctx.verdict['sentence']}"
    if ctx.best is None:
        return ""
    value = ctx.trials.set_index("number").loc[ctx.best, "value"]
    return (f"Best: trial {ctx.best} with {ctx.metric} {value:.4g} ({_best_params(ctx)}): one seed, not confirmed, "
            "so seed noise is not measured.")


def answer(ctx: ReportContext) -> Section | None:
    """The verdict: each arm's confirmed mean, interval and n; the tests that separate them; the warnings."""
    from study.report import figures as F

    if ctx.verdict is None:
        if not ctx.scientific:
            return None
        s = Section("verdict", "Verdict")
        s.say("No confirmation runs yet: the comparisons below are of one seed per config, so a gap smaller "
              "than seed noise can look like a win. `study confirm` retrains each arm's best configs with fresh "
              "seeds and gives the verdict with its uncertainty.", note=True)
        firsts = ctx.trials[ctx.trials["status"] == "complete"].sort_values("value", ascending=ctx.direction.ascending)
        numbers = set(firsts.drop_duplicates(ctx.scientific)["number"])
        for warning in boundary_warnings([t for t in ctx.raw if t.number in numbers], ctx.scientific):
            s.say(warning, note=True)
        return s
    v = ctx.verdict
    s = Section("verdict", "Verdict")
    s.say(v["sentence"])
    if not ctx.record.scientific:  # one arm: nothing to compare, an honest value to give
        s.say(f"The space has no scientific param (study.scientific), so it has one arm: its best config, retrained "
              f"with fresh seeds and never pruned: mean and {v['confidence']:.0%} t-interval over its n seeds. The "
              "search's single-seed value is shown beside it: it was chosen for being best, so it is optimistic.")
    else:
        s.say(f"Each arm is its best config, retrained with fresh seeds and never pruned: mean and "
              f"{v['confidence']:.0%} t-interval over its n seeds. Pairs are compared by {v['test']} at alpha = "
              f"{v['alpha']}. Group 1 is the arm with the best mean and every arm the tests do not separate from it, "
              "group 2 the arms it is ahead of, group 3 the arms that fail. The search's single-seed best is shown "
              "beside each mean: it was chosen for being best, so it is optimistic.")
    if any(arm.get("chosen_from", 1) > 1 for arm in v["arms"]):  # top > 1
        s.say("Where an arm had several confirmed candidates, the one whose seeds gave the best mean was retrained "
              "with as many fresh seeds, and the arm is judged by those alone: seeds that chose it would flatter "
              "it.", note=True)
    arms, pairs = T.verdict_data(v)
    s.figure(F.verdict_figure(T.seed_values(v), arms, ctx.metric),
             "Each dot is one confirmation seed; the bar is the arm's mean with its 95% interval."
             + (" Overlapping intervals and a Holm-corrected p above 0.05 mean the data do not separate the arms."
                if len(v["arms"]) > 1 else ""))
    s.table(arms, "Arms, best group first")
    if len(pairs):
        s.table(pairs, "Every pair: Welch's t-test, p corrected by Holm's method")
    for warning in v.get("warnings", []):
        s.say(warning, note=True)
    return s


def _engines(ctx: ReportContext) -> str:
    """How the finished trials were trained, per phase: the one line in which a population run's report
    differs from a sequential run's."""
    def each(used: Counter) -> str:
        return ", ".join(f"the {name} engine ({_on(n, device, threads)})"
                         for (name, device, threads), n in sorted(used.items(), key=str))

    phases = [(title, ctx.engines[phase]) for phase, title in (("search", "search"), ("confirm", "confirmation runs"))
              if phase in ctx.engines]
    if [title for title, _ in phases] == ["search"]:
        return each(phases[0][1])
    return "; ".join(f"{title}: {each(used)}" for title, used in phases) or "no finished trial"


def _on(n: int, device: str | None, threads: int | None) -> str:
    """"n trials", and where they trained: a CPU's thread count can move a chaotic config's result."""
    where = [f"{n} trial{'s' * (n != 1)}"]
    if device:
        where.append(device)
    if threads is not None:
        where.append(f"{threads} thread{'s' * (threads != 1)}")
    return ", ".join(where)


def _trial_time(durations: pd.Series, busy: float) -> str:
    """The trials' summed and mean training time; where they trained at once, their sum is not the time they took."""
    if not len(durations):
        return "no finished trial"
    total, mean = durations.sum(), durations.mean()
    if total <= 1.05 * busy:  # one at a time
        return f"{total:.1f} s in total, {mean:.2f} s mean"
    return f"{total:.1f} s summed over trials that trained at once ({busy:.1f} s while any ran), {mean:.2f} s mean"


def summary(ctx: ReportContext) -> Section:
    s = Section("summary", "Summary")
    study, trials, counts = ctx.study, ctx.trials, ctx.counts
    durations = trials["duration_s"].dropna() if len(trials) else pd.Series(dtype=float)
    s.summary = [("study", study.study_name), ("dataset", str(ctx.record.dataset)),
                 ("model", str(ctx.record.model)), ("objective", f"{ctx.direction} {ctx.metric}"),
                 ("trials", ", ".join(f"{counts.get(k, 0)} {k}" for k in ("complete", "pruned", "diverged", "failed"))
                  + "".join(f", {counts[k]} {k}" for k in ("interrupted", "running", "waiting") if counts.get(k))),
                 ("trial time", _trial_time(durations, T.busy_seconds(ctx.raw))),
                 ("varied", ", ".join(ctx.changed) or "nothing"), ("trained by", _engines(ctx))]
    if ctx.best is None:
        s.say("No trial has completed yet, so there is no winner and no comparison to show.", note=True)
        return s
    row = trials.set_index("number").loc[ctx.best]
    s.summary += [("best trial", f"{ctx.best}: {_best_params(ctx)}"),
                  ("validation", ", ".join(f"{k.removeprefix('val_')} {_fmt(row[k])}" for k in
                                           METRICS))]
    if seeds := confirmed(ctx.verdict, ctx.best):
        s.summary.append(("confirmed", seeds))
    s.summary.append(("reproduce", "python -m study run best.yaml  (best.yaml is beside this page: trial "
                                   f"{ctx.best} with every setting fixed)"))
    from study.reproduce import SNIPPET, other_leader

    if arm := other_leader(ctx.verdict, ctx.best):
        s.summary.append(("reproduce the leader", "python -m study run leader.yaml  (beside this page: trial "
                                                  f"{arm['candidate']}, the candidate of {arm['label']}, which "
                                                  "leads the verdict)"))
    if ctx.record.checkpoint_dir:
        s.code = SNIPPET.format(path=json.dumps(f"{ctx.record.checkpoint_dir}/best.pt"))  # a Python string literal
    test = ctx.record.test
    if test and test.get("trial") == ctx.best:
        s.summary.append(("test (best trial only)", ", ".join(f"{k.removeprefix('test_')} {_fmt(v)}"
                                                              for k, v in test["metrics"].items())))
    else:
        s.say("Test-split metrics are absent: the best trial's weights were not evaluated on the test split "
              "(run `study run` to the end to record them).", note=True)
    return s


def history(ctx: ReportContext) -> Section:
    from study.report import figures as F

    s = Section("history", "Optimization history")
    s.figure(F.history_figure(T.history_data(ctx.trials, ctx.direction), ctx.metric),
             f"Each point is a trial's final {ctx.metric} (pruned: the last reported value); the green line is the "
             "best complete trial so far, so a flat line means later trials stopped finding better settings.")
    return s


def learning_rate(ctx: ReportContext) -> Section | None:
    from study.report import figures as F

    if "lr" not in ctx.changed:
        return None
    s = Section("learning-rate", "Learning rate")
    data = T.lr_data(ctx.trials, ctx.direction)
    by = "each optimizer works (one colour each)" if data["optimizer"].nunique() > 1 else "this optimizer works"
    s.figure(F.lr_figure(data, ctx.metric),
             "Too small a learning rate undershoots (high loss on the left), too large overshoots or diverges "
             f"(red crosses on the right); the valley between is where {by}.")
    return s


def comparisons(ctx: ReportContext) -> list[Section]:
    """Each scientific choice, compared fairly: each value's best after the other params were searched."""
    from study.report import figures as F

    out = []
    for param in ctx.scientific:
        comparison = T.comparison_data(ctx.trials, param, ctx.direction)
        s = Section(f"compare-{param}", f"Which {param}?")
        if comparison["complete"].sum() == 0:
            s.say(f"No complete trial for any {param} value yet.", note=True)
        else:
            winner = comparison.iloc[0]
            s.say(f"In the search, the best {param} was {winner[param]} ({ctx.metric} {winner['best']:.4g}, trial "
                  f"{winner['best_trial']}), each value's best taken after the other params were searched. That is "
                  "one seed per config, and optimistic: " + ("the verdict above is the comparison that holds."
                                                             if ctx.verdict else "no seed confirmed it."))
            low, high = int(comparison["trials"].min()), int(comparison["trials"].max())
            if high >= 2 * max(1, low):
                s.say(f"The values were searched unevenly ({low} to {high} trials each): the sampler spent more "
                      "trials where results were good, so a value with fewer trials had fewer chances to find its "
                      "best settings.", note=True)
            s.figure(F.distribution_figure(ctx.trials, param, ctx.metric),
                     f"The spread of {ctx.metric} over complete trials for each {param}: a low median means the "
                     "choice is forgiving of the other settings, a low minimum that it can win when they are right.")
            s.figure(F.isolation_figure(comparison, param, ctx.metric),
                     f"The fair comparison: each bar is the best trial for one {param} value after the nuisance "
                     "params (such as the learning rate) were tuned for it.")
        s.table(comparison)
        out.append(s)
    return out


def pairs(ctx: ReportContext) -> list[Section]:
    """Pairs of scientific choices: does one choice's winner depend on the other?"""
    from study.report import figures as F

    out = []
    for i, a in enumerate(ctx.scientific):
        for b in ctx.scientific[i + 1:]:
            table = T.interaction_data(ctx.trials, a, b, ctx.direction)
            if table.size > 1:
                s = Section(f"pair-{a}-{b}", f"{a} x {b}")
                s.figure(F.interaction_figure(table, ctx.metric),
                         f"The best trial of every {a} and {b} combination (blank: no complete trial): if the "
                         f"best {a} differs between columns, the answer to 'which {a}?' depends on {b}. An outlier (a "
                         f"diverged-looking value) takes the end colour of the scale.")
                out.append(s)
    return out


def activations(ctx: ReportContext) -> Section | None:
    """What the inits do to the signal, before any training."""
    from study.report import figures as F

    if "init" not in ctx.changed:
        return None
    data = D.activation_data(ctx.trials)
    if not len(data):
        return None
    s = Section("activations", "Activations and gradients at initialisation")
    s.figure(F.activation_figure(data),
             "How far the activations spread at each layer of the untrained network, on training samples: "
             "a line falling towards zero is the signal collapsing under that init, which leaves the "
             "deeper layers almost nothing to learn from.")
    stored = ctx.record.diagnostics.get("gradients")
    gradients = pd.DataFrame(stored) if stored else D.gradient_data(ctx.trials)
    if len(gradients):
        s.figure(F.gradient_figure(gradients),
                 "The gradient each layer's weights receive over the first iterations, with each pair's best "
                 "config: where it falls by orders of magnitude, those layers barely learn.")
    return s


def curves(ctx: ReportContext) -> Section | None:
    from study.report import figures as F

    if not len(ctx.history):
        return None
    s = Section("curves", "Learning curves")
    s.figure(F.curves_figure(ctx.history, ctx.best, ctx.metric),
             "Validation curves of every trial (pruned grey, diverged red, the best orange): pruning stops "
             "curves that lag the median early, which is where the time went to the good ones.")
    top = ctx.trials[ctx.trials["status"] == "complete"].sort_values("value", ascending=ctx.direction.ascending)
    numbers = [int(n) for n in top["number"].head(3)]
    if numbers:
        s.figure(F.train_val_figure(ctx.history, numbers),
                 "A validation loss that rises while the train loss falls is overfitting; "
                 "both high is underfitting.")
    for param in ctx.scientific[:1]:
        values = ctx.trials.set_index("number")[param]
        by = ctx.history[ctx.history["status"] == "complete"]
        by = by.assign(**{param: by["number"].map(values)})
        if len(by):
            s.figure(F.curves_by_figure(by, param, T.in_order(by[param]), ctx.metric),
                     f"Complete trials' curves coloured by {param}, against training samples seen: the choices "
                     "compared on the one axis they share, whatever their batch size.")
    return s


def batch(ctx: ReportContext) -> Section | None:
    """Batch against iterations, at equal samples seen."""
    from study.report import figures as F

    if "batch_size" not in ctx.changed:
        return None
    batches = T.batch_data(ctx.trials, ctx.direction)
    if not len(batches):
        return None
    s = Section("batch", "Bigger batches or more iterations?")
    s.figure(F.batch_figure(batches, ctx.metric),
             "At one budget of samples seen, doubling the batch halves the iterations (labels): the lowest "
             "point is how that budget was best spent.")
    answer = T.batch_vs_iterations(batches, ctx.direction)
    if len(answer):
        wins = answer["better"].value_counts()
        s.say(f"2x batch or 2x iterations? In the search, of {len(answer)} pairs at the same sample budget, 2x "
              f"batch won {wins.get('2x batch', 0)} and 2x iterations won {wins.get('2x iterations', 0)}: one "
              "seed per config, so a gap below seed noise decides a pair here" + (
                  "; the verdict above says which batch sizes the seeds separate." if ctx.verdict else "."))
        s.table(answer, "2x batch (half the iterations) against 2x iterations (half the batch)")
    s.table(batches, "Best value per batch size and budget")
    return s


def schedules(ctx: ReportContext) -> Section | None:
    from study.report import figures as F

    if "schedule" not in ctx.changed and "warmup" not in ctx.changed:
        return None
    data = T.schedule_data(ctx.trials, ctx.direction)
    if not len(data):
        return None
    s = Section("schedules", "Learning-rate schedules")
    s.figure(F.schedule_figure(data),
             "The learning rate at every step of the best trial of each schedule type, as its scheduler set it.")
    return s


def parallel(ctx: ReportContext) -> Section | None:
    from study.report import figures as F

    data = T.parallel_data(ctx.raw)
    if len(data) < 2 or data.shape[1] < 4:  # a picture of lines needs two trials and two params
        return None
    s = Section("parallel", "Parallel coordinates")
    s.figure(F.parallel_figure(data, ctx.metric, ctx.direction),
             "Each line is one complete trial, through its value of every searched param (log ranges in log "
             "space, choices in their listed order); the best are dark and drawn on top, so where they bunch on "
             "an axis is that param's good region.")
    return s


def importance(ctx: ReportContext) -> Section:
    from study.report import figures as F

    s = Section("importance", "Hyperparameter importance")
    importances, note = T.importance_data(ctx.raw, ctx.direction)
    if importances is not None:
        s.figure(F.importance_figure(importances),
                 "How much each param decides whether a trial reaches the best 10% of values (Optuna's PED-ANOVA "
                 "evaluator, the one optuna-dashboard uses, on the search's complete trials; the dashboard also "
                 "counts confirmation runs): tune the long bars first.")
    if note:
        s.say(note, note=True)
    return s


def test_split(ctx: ReportContext) -> Section | None:
    from study.report import figures as F

    test = ctx.record.test or {}
    confusion, per_class = T.confusion_tables(test if test.get("trial") == ctx.best else None)
    if confusion is None:
        return None
    s = Section("test", "Best trial on the test split")
    s.figure(F.confusion_figure(confusion),
             "Counts of test samples by true and predicted class: off-diagonal cells are the confusions.")
    s.table(per_class, "Per-class precision, recall and F1", index=True)
    return s


MAX_TABLE_ROWS = 2000  # a page with a row per trial of a 100,000-trial study would not open


def all_trials(ctx: ReportContext) -> Section:
    ran = ctx.every[ctx.every["status"] != "waiting"]
    where = [k for k in ("device", "threads") if T.several(ran[k])]  # either can move a result
    measured = [m for m in ("val_accuracy", "val_f1") if ran[m].notna().any()]  # none in a plain Optuna study
    shown = ["number", "status", "value", "duration_s", "epochs", *ctx.changed, *where, *measured, "error", "diverged"]
    shown.insert(2, "phase") if ctx.verdict else None
    rows = ctx.every
    if len(rows) <= MAX_TABLE_ROWS:
        s = Section("trials", "All trials")
        s.say("The same table is in trials.csv beside this page.")
    else:
        s = Section("trials", f"The best {MAX_TABLE_ROWS:,} trials")
        s.say(f"{MAX_TABLE_ROWS:,} of the {len(rows):,} trials, best first; trials.csv beside this page has all.")
        rows = rows.sort_values("value", ascending=ctx.direction.ascending, na_position="last",
                                kind="stable").head(MAX_TABLE_ROWS)
    table = T.as_read(rows)[list(dict.fromkeys(shown))]  # a setting a trial did not read, blank
    s.table(table)
    return s


SectionMaker = Callable[[ReportContext], "Section | list[Section] | None"]
# The page, in order. Every section after the summary needs at least one finished trial.
SECTIONS: list[SectionMaker] = [summary, answer, history, learning_rate, comparisons, pairs, activations, curves, batch,
                                schedules, parallel, importance, test_split, all_trials]


def build_sections(ctx: ReportContext) -> tuple[list[Section], str]:
    """Compute every section's data and render its figures; returns the sections and the verdict line."""
    out: list[Section] = []
    for make in SECTIONS if not ctx.finished.empty else SECTIONS[:1]:
        interrupts.check()  # Ctrl-C or SIGTERM: stop between two sections, before anything is written
        made = make(ctx)
        out += made if isinstance(made, list) else [made] if made is not None else []
    return out, verdict(ctx)
