"""The report's data: pure functions from a study (or its trials table) to DataFrames.

Nothing here draws. Each figure of the report is one of these frames rendered by `figures.py`, so
tests compare the data by equality and the rendering separately.

    >>> from optuna.trial import create_trial
    >>> study = optuna.create_study()
    >>> for value, optimizer in [(0.3, "adam"), (0.5, "sgd"), (0.4, "adam")]:
    ...     study.add_trial(create_trial(state=TrialState.COMPLETE, value=value,
    ...                                  user_attrs=records.attrs(config={"optimizer": optimizer})))
    >>> trials = trials_frame(study)          # one row per trial; history_frame: one per (trial, epoch)
    >>> trials[["number", "status", "value", "optimizer"]].values.tolist()
    [[0, 'complete', 0.3, 'adam'], [1, 'complete', 0.5, 'sgd'], [2, 'complete', 0.4, 'adam']]
    >>> comparison_data(trials, "optimizer", "minimize")[["optimizer", "trials", "best", "best_trial"]].values.tolist()
    [['adam', 2, 0.3, 0], ['sgd', 1, 0.5, 1]]
"""
from __future__ import annotations

import math
import random
from typing import Any, Sequence, Union

import numpy as np
import optuna
import pandas as pd
from optuna.trial import TrialState

from study.config import KNOBS, METRICS, Direction, is_option
from study.consumed import CONSUMED, unused
from study.schedules import lr_curve
from study.budget import scaled_lr
from study import records
from study.records import FINISHED, TrialRecord, error_of, status_of

_KNOB_COLUMNS = [k for k in KNOBS if k not in ("data_options", "model_options")]  # scalar settings
CONFIG_COLUMNS = list(KNOBS)  # everything a trial's config holds, so that it can be rebuilt
Trials = Union[optuna.Study, Sequence[optuna.trial.FrozenTrial]]  # a study, or its trials as read once


def _counted(trials: Trials) -> list[optuna.trial.FrozenTrial]:
    """Every trial but the surplus ones, which never trained."""
    if isinstance(trials, optuna.Study):
        trials = records.trials(trials)
    return [t for t in trials if status_of(t) != "surplus"]


def _final_value(t: optuna.trial.FrozenTrial) -> float:
    """A complete trial's value; for a pruned one, its last reported value; NaN otherwise."""
    if t.value is not None:
        return float(t.value)
    if t.state == TrialState.PRUNED and t.intermediate_values:
        return float(t.intermediate_values[max(t.intermediate_values)])
    return math.nan


def trained_seconds(t: optuna.trial.FrozenTrial, record: TrialRecord) -> float:
    """How long the trial trained: its training clock at its last epoch (a retry's clock goes on from its
    checkpoint; none runs while an asked trial waits for a population of its graph), else its start-to-end
    span (a trial that failed before its first epoch), else NaN: so for a dead worker's trial, whose span
    ends when another worker found it dead."""
    if "wall_time" in record.final:
        return float(record.final["wall_time"])
    if t.datetime_complete and t.datetime_start and not record.stale:
        return (t.datetime_complete - t.datetime_start).total_seconds()
    return math.nan


def trials_frame(trials: Trials) -> pd.DataFrame:
    """One row per trial (surplus ones left out): number, status, value, time, budget, every config
    setting, error."""
    rows, options = [], set()
    for t in _counted(trials):
        record = TrialRecord.of(t)
        cfg, budget, history = record.config, record.budget, record.history
        duration = trained_seconds(t, record)
        row: dict[str, Any] = {
            "number": t.number, "status": status_of(t), "phase": record.phase,
            "confirms": (record.confirm or {}).get("of"), "value": _final_value(t), "duration_s": duration,
            # a dead worker's try wrote no history; the epochs it reported to Optuna are what it trained
            "epochs": len(history) or len(t.intermediate_values), "total_iters": budget.get("total_iters"),
            "samples_seen": budget.get("samples_seen"), "device": record.provenance.get("device"),
            "threads": record.threads,
        }
        row.update({k: cfg.get(k, t.params.get(k)) for k in CONFIG_COLUMNS})
        row.update({k: v for k, v in t.params.items() if is_option(k)})  # model.options.NAME, data.options.NAME
        options.update(k for k in t.params if is_option(k))
        row.update({k: record.final.get(k, math.nan) for k in ("train_loss", *METRICS)})
        row["error"] = error_of(t) if t.state == TrialState.FAIL else ""
        row["diverged"] = (record.diverged or {}).get("reason", "")
        rows.append(row)
    columns = ["number", "status", "phase", "confirms", "value", "duration_s", "epochs", "total_iters", "samples_seen",
               "device", "threads", *CONFIG_COLUMNS, "train_loss", *METRICS, "error", "diverged"]
    columns += sorted(options)
    frame = pd.DataFrame(rows, columns=columns)
    return frame.astype({"number": int, "confirms": "Int64", "threads": "Int64"}) if len(frame) else frame


def as_read(trials: pd.DataFrame) -> pd.DataFrame:
    """`trials` with each setting that a trial's training did not read left blank (consumed.unused): a
    row that showed `momentum 0.9` beside Adam read as if Adam had used it."""
    owners = sorted({owner for owner, _ in CONSUMED.values()})
    out = trials.astype({k: "Int64" for k in CONSUMED if pd.api.types.is_integer_dtype(trials[k])})
    for values, rows in trials.groupby(owners, dropna=False).groups.items():  # a few combinations, many trials
        unread = sorted(unused({k: v for k, v in zip(owners, values, strict=True) if pd.notna(v)}))
        out.loc[rows, unread] = None
    return out


def busy_seconds(trials: Trials) -> float:
    """The seconds during which at least one of the trials ran (the union of their start-to-end spans):
    the wall time their training took, where trials that ran at once (a population, --jobs) sum to more,
    and a study resumed a day later does not count the day. A dead worker's trial counts nothing: when it
    stopped is not known, only when another worker found it dead (up to a day later, with --retry-stale)."""
    spans = sorted((t.datetime_start.timestamp(), t.datetime_complete.timestamp()) for t in _counted(trials)
                   if t.datetime_start and t.datetime_complete and not TrialRecord.of(t).stale)
    busy, start, end = 0.0, *(spans[0] if spans else (0.0, 0.0))
    for a, b in spans[1:]:
        if a > end:
            busy, start = busy + end - start, a
        end = max(end, b)
    return busy + end - start


def varied(trials: pd.DataFrame) -> list[str]:
    """The settings that take more than one value across trials that ran."""
    ran = trials[trials["status"] != "waiting"]
    options = [k for k in trials.columns if is_option(k)]
    return [k for k in [*_KNOB_COLUMNS, *options] if several(ran[k])]


def several(column: pd.Series) -> bool:
    """Whether a column holds more than one value, blanks not counted: pandas 2 turns them into 'None' and
    'nan', which would count as values."""
    return column.dropna().astype(str).nunique() > 1


def history_frame(trials: Trials) -> pd.DataFrame:
    """One row per (trial, epoch) with the per-epoch record and the trial's status."""
    rows = []
    for t in _counted(trials):
        status = status_of(t)
        for epoch in TrialRecord.of(t).history:
            rows.append({"number": t.number, "status": status, **epoch})
    columns = ["number", "status", "epoch", "iteration", "samples", "train_loss", *METRICS, "lr", "wall_time",
               "threads"]
    return pd.DataFrame(rows, columns=columns)


def best_number(trials: pd.DataFrame, direction: str) -> int | None:
    if trials.empty:
        return None
    complete = trials[(trials["status"] == "complete") & np.isfinite(trials["value"])]
    if complete.empty:
        return None
    return int(complete.loc[Direction(direction).best(complete["value"]), "number"])


def _plotted(values: pd.Series, direction: str) -> pd.Series:
    """Values to draw: a non-finite one (a diverged trial's NaN or inf) goes to the worst end of the
    finite range, so that it is shown rather than dropped."""
    finite = values[np.isfinite(values)]
    if finite.empty:
        worst = 1.0
    else:
        low, high = float(finite.min()), float(finite.max())
        margin = 0.1 * (high - low) or 0.1 * abs(high) or 1.0
        worst = Direction(direction).worst(low, high, margin)
    return values.where(np.isfinite(values), worst)


def history_data(trials: pd.DataFrame, direction: str) -> pd.DataFrame:
    """Optimization history: each trial's value (and `plotted`), and the best complete value so far."""
    df = trials[trials["status"].isin(FINISHED)][["number", "status", "value"]].copy()
    df = df.sort_values("number").reset_index(drop=True)
    complete = df["value"].where(df["status"] == "complete")
    best = Direction(direction).running_best(complete)
    df["best_so_far"] = best.ffill()  # the best stands through the pruned trials after it
    df["plotted"] = _plotted(df["value"], direction)
    return df


def lr_data(trials: pd.DataFrame, direction: str) -> pd.DataFrame:
    """Learning rate (base and effective) against final value for every finished trial, diverged ones
    included (`plotted` puts a non-finite value at the worst end), so the overshoot region shows."""
    scaling = ["batch_size", "lr_scaling", "reference_batch"]
    df = trials[trials["status"].isin(FINISHED)].reindex(
        columns=["number", "lr", "optimizer", "status", "value", *scaling]).reset_index(drop=True)
    df["plotted"] = _plotted(df["value"], direction)
    # The lr the optimizer was given: with linear scaling, base lr x batch / reference batch.
    df["effective_lr"] = [lr if pd.isna(b) or pd.isna(r) else scaled_lr(lr, b, s, r) for lr, b, s, r in
                          zip(df["lr"], df["batch_size"], df["lr_scaling"], df["reference_batch"], strict=True)]
    return df


def comparison_data(trials: pd.DataFrame, param: str, direction: str) -> pd.DataFrame:
    """Per value of `param`: trials run, complete, pruned/diverged, the best and median complete value,
    and the best trial. The best is after every other param was searched: the fair (isolated) comparison."""
    rows = []
    finished = trials[trials["status"].isin(FINISHED)]
    for value, group in finished.groupby(finished[param].astype(str), sort=True):
        complete = group[(group["status"] == "complete") & np.isfinite(group["value"])]
        best = None
        if len(complete):
            best = complete.loc[Direction(direction).best(complete["value"])]
        rows.append({param: value, "trials": len(group), "complete": len(complete),
                     "pruned": int((group["status"] == "pruned").sum()),
                     "diverged": int((group["status"] == "diverged").sum()),
                     "best": float(best["value"]) if best is not None else math.nan,
                     "median": float(complete["value"].median()) if len(complete) else math.nan,
                     "best_trial": int(best["number"]) if best is not None else None})
    df = pd.DataFrame(rows)
    if len(df):
        df["best_trial"] = df["best_trial"].astype("Int64")
    if len(df):
        df = df.sort_values("best", ascending=Direction(direction).ascending, na_position="last").reset_index(drop=True)
    return df


def batch_data(trials: pd.DataFrame, direction: str) -> pd.DataFrame:
    """Per (samples seen, batch size): iterations and the best complete value."""
    done = trials[(trials["status"] == "complete") & trials["total_iters"].notna()]
    if done.empty:
        return pd.DataFrame(columns=["samples_seen", "batch_size", "total_iters", "trials", "best"])
    df = (done.groupby(["samples_seen", "batch_size", "total_iters"])
          .agg(trials=("value", "size"), best=("value", Direction(direction).agg)).reset_index())
    return df.astype({"samples_seen": int, "batch_size": int, "total_iters": int})


def batch_vs_iterations(batches: pd.DataFrame, direction: str) -> pd.DataFrame:
    """'2x batch or 2x iterations?' from the trials that exist: at one sample budget, batch b for N
    iterations against batch 2b for N/2. Each row says which spent the same samples better."""
    rows = []
    for samples, group in batches.groupby("samples_seen"):
        by_batch = group.set_index("batch_size")
        for b in sorted(by_batch.index):
            if 2 * b in by_batch.index:
                small, big = by_batch.loc[b], by_batch.loc[2 * b]
                better_big = Direction(direction).better(big["best"], small["best"])
                rows.append({"samples_seen": int(samples), "batch": int(b), "iterations": int(small["total_iters"]),
                             "value": float(small["best"]), "2x_batch": int(2 * b),
                             "2x_batch_iterations": int(big["total_iters"]), "2x_batch_value": float(big["best"]),
                             "better": "2x batch" if better_big else "2x iterations"})
    return pd.DataFrame(rows, columns=["samples_seen", "batch", "iterations", "value", "2x_batch",
                                       "2x_batch_iterations", "2x_batch_value", "better"])


def schedule_data(trials: pd.DataFrame, direction: str, max_points: int = 400) -> pd.DataFrame:
    """The lr at each iteration for the best complete trial of each schedule (recomputed, not trained)."""
    rows = []
    done = trials[(trials["status"] == "complete") & trials["total_iters"].notna()]
    for schedule, group in done.groupby("schedule"):
        best = group.loc[Direction(direction).best(group["value"])]
        total = int(best["total_iters"])
        lr = scaled_lr(best["lr"], int(best["batch_size"]), best["lr_scaling"], int(best["reference_batch"]))
        curve = lr_curve(schedule, lr, total, int(best["warmup_iters"]) if best["warmup"] else 0,
                         best["gamma"], best["step_fraction"])
        stride = max(1, total // max_points)
        for it in range(0, total, stride):
            rows.append({"schedule": schedule, "trial": int(best["number"]), "iteration": it, "lr": curve[it]})
    return pd.DataFrame(rows, columns=["schedule", "trial", "iteration", "lr"])


MIN_TRIALS_FOR_IMPORTANCE = 8
# fANOVA's forest grows with the trials it is fitted on; past this many, a seeded sample keeps it bounded.
IMPORTANCE_SAMPLE = 1000


def importance_data(trials: Sequence[optuna.trial.FrozenTrial], direction: str) -> tuple[pd.DataFrame | None, str]:
    """Importances of the searched params as optuna-dashboard computes them (Optuna's PED-ANOVA: which params
    matter for reaching the best 10% of values, not fANOVA's share of variance, which gave other numbers
    than the dashboard for the same study), and a note: why they are absent, or that they come from a
    sample."""
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if len(complete) < MIN_TRIALS_FOR_IMPORTANCE:
        return None, (f"Hyperparameter importance needs at least {MIN_TRIALS_FOR_IMPORTANCE} complete trials; "
                      f"this study has {len(complete)}.")
    seen: dict[str, set[str]] = {}
    for t in complete:  # one pass: the params that took more than one value
        for name, value in t.params.items():
            seen.setdefault(name, set()).add(str(value))
    searched = sorted(name for name, values in seen.items() if len(values) > 1)
    if not searched:
        return None, "Hyperparameter importance needs at least one param that took more than one value."
    note = ""
    if len(complete) > IMPORTANCE_SAMPLE:
        note = (f"Importance was computed on a random sample of {IMPORTANCE_SAMPLE:,} of the {len(complete):,} "
                "complete trials (seed 0), which keeps its cost bounded on large studies.")
        complete = random.Random(0).sample(complete, IMPORTANCE_SAMPLE)
    fitted = optuna.create_study(direction=direction)  # in memory: Optuna's evaluators read a study
    fitted.add_trials(complete)
    try:
        importances = dashboard_importances(fitted, searched)
    except (ValueError, RuntimeError) as exc:
        return None, f"Hyperparameter importance could not be computed: {exc}"
    return pd.DataFrame({"param": list(importances), "importance": list(importances.values())}), note


def dashboard_importances(study: optuna.Study, params: list[str] | None = None) -> dict[str, float]:
    """Optuna's PED-ANOVA importances with the target optuna-dashboard gives it (a maximised value negated)."""
    import warnings

    sign = -1.0 if study.direction == optuna.study.StudyDirection.MAXIMIZE else 1.0
    with warnings.catch_warnings():  # Optuna warns whenever a target is passed to PED-ANOVA, as the dashboard does
        warnings.simplefilter("ignore")
        return optuna.importance.get_param_importances(
            study, target=lambda t: sign * t.value, evaluator=optuna.importance.PedAnovaImportanceEvaluator(),
            params=params)


def confusion_tables(test: dict | None) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
    """The best trial on the test split: confusion matrix (rows true, columns predicted) and per class."""
    if not test:
        return None, None
    confusion = pd.DataFrame(test["confusion"])
    confusion.index.name, confusion.columns.name = "true class", "predicted class"
    per_class = pd.DataFrame(test["per_class"])
    per_class.index.name = "class"
    return confusion, per_class


def in_order(values: Any) -> list[str]:
    """Distinct values as the text a figure shows, numbers in numeric order (16, 32, 128, not 128, 16, 32)
    and anything else in text order.

    >>> in_order(pd.Series([128, 16, 256, 32, 16]))
    ['16', '32', '128', '256']
    """
    distinct = pd.unique(pd.Series(values).dropna())
    numbers = pd.to_numeric(pd.Series(distinct), errors="coerce")
    if len(distinct) and numbers.notna().all() and not pd.api.types.is_bool_dtype(pd.Series(distinct)):
        return [str(v) for _, v in sorted(zip(numbers, distinct, strict=True), key=lambda nv: nv[0])]
    return sorted(str(v) for v in distinct)


def interaction_data(trials: pd.DataFrame, a: str, b: str, direction: str) -> pd.DataFrame:
    """The best complete value for every (a, b) combination: rows are a's values, columns b's.
    Empty cells are combinations no complete trial tried."""
    done = trials[(trials["status"] == "complete") & np.isfinite(trials["value"])]
    if done.empty:
        return pd.DataFrame()
    table = done.assign(**{a: done[a].astype(str), b: done[b].astype(str)}).pivot_table(
        index=a, columns=b, values="value", aggfunc=Direction(direction).agg)
    return table.reindex(index=[v for v in in_order(done[a]) if v in table.index],
                         columns=[v for v in in_order(done[b]) if v in table.columns])


def verdict_data(verdict: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The verdict's arms (one row each, best group first) and its pairwise tests, as tables."""
    arms = pd.DataFrame([{"arm": a["label"], "group": a["group"], "mean": a["mean"], "ci_low": a["low"],
                          "ci_high": a["high"], "n": a["n"], "fails": a["fails"] or "",
                          "search_best (one seed)": a["search_value"], "confirms_trial": a["candidate"],
                          # how many candidates it was chosen among (top > 1): its n seeds are then fresh ones
                          **({"chosen_among": a.get("chosen_from", 1), "verified": "yes" if a.get("verified") else "no"}
                             if any(b.get("chosen_from", 1) > 1 for b in verdict["arms"]) else {}),
                          # its seeds disagree far more than the others' (verdict.lotteries): the warnings say how
                          **({"lottery": "yes" if a.get("lottery") else "no"}
                             if any(b.get("lottery") for b in verdict["arms"]) else {})}
                         for a in verdict["arms"]])
    pairs = pd.DataFrame([{"a": p["a"], "b": p["b"], "difference": p["difference"], "p": p["p"],
                           "p_holm": p["p_holm"], "separated": "yes" if p["separated"] else "no"}
                          for p in verdict["pairs"]], columns=["a", "b", "difference", "p", "p_holm", "separated"])
    return arms, pairs


def seed_values(verdict: dict) -> pd.DataFrame:
    """One row per confirmed seed: the arm and its value (the verdict figure's dots)."""
    return pd.DataFrame([{"arm": a["label"], "value": v} for a in verdict["arms"] for v in a["values"]],
                        columns=["arm", "value"])


def parallel_data(trials: Sequence[optuna.trial.FrozenTrial]) -> pd.DataFrame:
    """One row per complete trial: each searched param on a 0..1 axis (log ranges in log space, choices in
    their order) and the trial's value, for the parallel-coordinates figure."""
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None
                and math.isfinite(t.value)]
    dists: dict[str, Any] = {}
    for t in complete:
        dists.update(t.distributions)
    rows = []
    for t in complete:
        row = {"number": t.number, "value": t.value}
        for name, d in dists.items():
            v = t.params.get(name)
            if v is None:
                row[name] = math.nan  # inactive in this trial (a `when`)
            elif isinstance(d, optuna.distributions.CategoricalDistribution):
                row[name] = d.choices.index(v) / max(1, len(d.choices) - 1)
            else:
                low, high, x = (math.log(d.low), math.log(d.high), math.log(v)) if d.log else (d.low, d.high, v)
                row[name] = (x - low) / (high - low) if high > low else 0.5
        rows.append(row)
    return pd.DataFrame(rows, columns=["number", "value", *dists])
