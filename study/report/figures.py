"""The report's figures: each draws one frame from `tables.py` with seaborn/matplotlib and returns
the Figure. Every figure has a title and labelled axes with units; learning rates are on log axes.

    >>> import optuna
    >>> from study.report.tables import history_data, trials_frame
    >>> study = optuna.create_study()
    >>> for value in (0.5, 0.3):
    ...     study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.COMPLETE, value=value))
    >>> fig = history_figure(history_data(trials_frame(study), "minimize"), "val_loss")
    >>> fig.axes[0].get_title(), to_png(fig)[:4]    # the PNG's bytes, rendered in memory
    ('Optimization history', b'\x89PNG')
"""
from __future__ import annotations

import contextlib
import functools
import io
import itertools
from typing import Callable

import matplotlib
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.text import Text
from matplotlib.transforms import Bbox

from study.config import RANGES
from study.report.tables import in_order

STATUS_STYLE = {  # colour, marker, alpha
    "complete": ("#1f77b4", "o", 0.9),
    "pruned": ("#999999", "v", 0.5),
    "diverged": ("#d62728", "X", 0.9),
}
LOG_SPREAD = 10  # a loss shown this many times over its smallest value puts the verdict figure on a log axis
METRIC_LABEL = {"val_loss": "validation loss (NLL, nats)", "val_accuracy": "validation accuracy (fraction)",
                "val_f1": "validation macro F1", "val_precision": "validation macro precision",
                "val_recall": "validation macro recall"}


def _styled(draw: Callable[..., Figure]) -> Callable[..., Figure]:
    """Draw in seaborn's whitegrid style inside a context, so that importing this module changes no global
    plotting state (no backend, no theme) for the program that imports it."""
    @functools.wraps(draw)
    def styled(*args, **kwargs) -> Figure:
        with sns.axes_style("whitegrid"), sns.plotting_context("notebook"):
            return draw(*args, **kwargs)
    return styled


@contextlib.contextmanager
def _fixed_jitter():
    """seaborn's strip plots jitter with numpy's global random stream: seed it for the drawing and give it
    back, so that the same study draws the same PNG (an unchanged figure is not uploaded again)."""
    state = np.random.get_state()
    np.random.seed(0)
    try:
        yield
    finally:
        np.random.set_state(state)


def _fig(width: float = 7.5, height: float = 4.2) -> tuple[Figure, Axes]:
    # A bare Figure: no pyplot, so no backend and no window, and nothing to close.
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    return fig, fig.add_subplot()


def to_png(fig: Figure) -> bytes:
    """The figure as PNG bytes: drawn once, and once more only where _declutter moved a label (a layout to
    find the labels before the drawing cost every figure a second one)."""
    canvas = FigureCanvasAgg(fig)
    png = _png(fig)
    if _declutter(fig, _extents(fig, canvas.get_renderer())):  # the labels where that drawing put them
        png = _png(fig)
    return png


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _labels(fig: Figure) -> list[tuple[Text, Bbox]]:
    """Every visible label of the figure with its box in pixels, as a fresh layout places it."""
    canvas = FigureCanvasAgg(fig)
    fig.draw_without_rendering()  # the layout places every label; no pixels are drawn
    return _extents(fig, canvas.get_renderer())


def _extents(fig: Figure, renderer) -> list[tuple[Text, Bbox]]:
    """Every visible label of the figure (ticks, axis labels, titles, legends, annotations) with its box in
    pixels, where the figure's last layout placed it."""
    texts = list(fig.texts)
    for ax in fig.axes:
        texts += [*_drawn(ax.xaxis), *_drawn(ax.yaxis), ax.title, ax.xaxis.label, ax.yaxis.label, *ax.texts]
        if ax.get_legend() is not None:
            texts += [*ax.get_legend().get_texts(), ax.get_legend().get_title()]
    # shrunk a little: glyph boxes include empty space above and below the letters
    return [(t, t.get_window_extent(renderer).shrunk(0.98, 0.9)) for t in texts
            if t.get_visible() and t.get_text().strip()]


def _drawn(axis) -> list[Text]:
    """The tick labels inside the axis's view: matplotlib keeps labels for ticks beyond it, undrawn."""
    lo, hi = sorted(axis.get_view_interval())
    slack = (hi - lo) * 1e-9
    return [label for loc, label in zip(axis.get_ticklocs(), axis.get_ticklabels(), strict=True)
            if lo - slack <= loc <= hi + slack]


def overlapping_labels(fig: Figure) -> list[tuple[str, str]]:
    """The pairs of labels that overlap, by their text, and ("figure edge", text) for a label cut off by it."""
    labels = _labels(fig)
    inside = fig.bbox.padded(1)
    return [(a.get_text(), b.get_text()) for (a, box_a), (b, box_b) in itertools.combinations(labels, 2)
            if box_a.overlaps(box_b)] + [("figure edge", t.get_text()) for t, box in labels
                                         if not inside.contains(box.x0, box.y0) or not inside.contains(box.x1, box.y1)]


def _boxes(labels: list[tuple[Text, Bbox]], axis) -> list[Bbox]:
    """The boxes of the axis's drawn tick labels. Listed once, not once per label: that cost about a fifth
    of the quick study's report."""
    drawn = set(_drawn(axis))
    return [box for t, box in labels if t in drawn]


def _declutter(fig: Figure, labels: list[tuple[Text, Bbox]]) -> bool:
    """Turn an axis's x tick labels upright where they overlap one another (long choice names), and move the
    y tick labels clear of an x tick label in the corner; `labels` are where they were drawn. Lays the
    figure out again only after turning labels; says whether it changed anything."""
    changed = False
    for ax in fig.axes:
        labels = labels or _labels(fig)
        xs = _boxes(labels, ax.xaxis)
        if any(a.overlaps(b) for a, b in itertools.combinations(xs, 2)):
            ax.tick_params(axis="x", labelrotation=90)
            tallest = max(box.width for box in xs)  # what the labels take upright, in pixels
            fig.set_figheight(fig.get_figheight() + tallest / fig.dpi)  # the plot keeps its height
            labels, changed = None, True
    for ax in fig.axes:
        labels = labels or _labels(fig)
        xs, ys = _boxes(labels, ax.xaxis), _boxes(labels, ax.yaxis)
        shift = max((y.x1 - x.x0 for x in xs for y in ys if x.overlaps(y)), default=0)  # pixels
        if shift:
            pad = ax.yaxis.get_major_ticks()[0].get_pad()
            ax.tick_params(axis="y", pad=pad + (shift + 1) * 72 / fig.dpi)
            changed = True
    return changed


@_styled
def history_figure(df: pd.DataFrame, metric: str) -> Figure:
    fig, ax = _fig()
    for status, (colour, marker, alpha) in STATUS_STYLE.items():
        part = df[df["status"] == status]
        if len(part):
            ax.scatter(part["number"], part["plotted"], c=colour, marker=marker, alpha=alpha, s=28,
                       label=f"{status} ({len(part)})")
    ax.step(df["number"], df["best_so_far"], where="post", color="#2ca02c", lw=2, label="best so far")
    ax.set(title="Optimization history", xlabel="trial number", ylabel=METRIC_LABEL.get(metric, metric))
    ax.legend(fontsize="small")
    return fig


@_styled
def lr_figure(df: pd.DataFrame, metric: str) -> Figure:
    fig, ax = _fig()
    hue = "optimizer" if df["optimizer"].nunique() > 1 else None  # a legend of one optimizer says nothing
    sns.scatterplot(data=df[df["status"] != "diverged"], x="effective_lr", y="plotted", hue=hue,
                    style="status", ax=ax, s=40, alpha=0.85)
    diverged = df[df["status"] == "diverged"]
    if len(diverged):
        ax.scatter(diverged["effective_lr"], diverged["plotted"], marker="X", c=STATUS_STYLE["diverged"][0], s=60,
                   label="diverged (overshoot)")
        ax.legend(fontsize="small")
    ax.set_xscale("log")
    ax.set(title="Learning rate against final validation value",
           xlabel="learning rate as applied, after batch scaling (log scale)",
           ylabel=METRIC_LABEL.get(metric, metric))
    return fig


@_styled
def distribution_figure(trials: pd.DataFrame, param: str, metric: str) -> Figure:
    df = trials[trials["status"] == "complete"].copy()
    order = in_order(df[param])
    df[param] = df[param].astype(str)
    fig, ax = _fig()
    sns.boxplot(data=df, x=param, y="value", order=order, ax=ax, color="#cfe2f3", showfliers=False)
    with _fixed_jitter():
        sns.stripplot(data=df, x=param, y="value", order=order, ax=ax, color="#1f77b4", size=4, alpha=0.7)
    ax.set(title=f"Validation value of complete trials, by {param}", xlabel=param,
           ylabel=METRIC_LABEL.get(metric, metric))
    return fig


@_styled
def isolation_figure(df: pd.DataFrame, param: str, metric: str) -> Figure:
    fig, ax = _fig()
    data = df[np.isfinite(df["best"])]
    sns.barplot(data=data, x=param, y="best", ax=ax, color="#2ca02c", order=list(data[param]))
    for i, (_, row) in enumerate(data.iterrows()):
        ax.annotate(f"{row['best']:.3g}\n(trial {row['best_trial']})", (i, row["best"]), ha="center", va="bottom",
                    fontsize="x-small")
    ax.margins(y=0.2)  # room for the labels above the bars
    ax.set(title=f"Best trial per {param}, other params searched", xlabel=param,
           ylabel=f"best {METRIC_LABEL.get(metric, metric)}")
    return fig


def _progress(history: pd.DataFrame) -> tuple[str, str]:
    """Curves are drawn against training samples seen, the one axis on which trials of different batch
    sizes compare; histories stored before epochs recorded it fall back to the epoch."""
    if "samples" in history and len(history) and history["samples"].notna().all():
        return "samples", "training samples seen"
    return "epoch", "epoch (validation point)"


def _clip_y(ax: Axes, values: pd.Series) -> None:
    """A y range from the finite values up to their 99th percentile: one diverging curve must not flatten
    the others."""
    finite = values[np.isfinite(values)]
    if len(finite):
        ax.set_ylim(finite.min() - 0.05 * abs(finite.min()), np.percentile(finite, 99) * 1.05 + 1e-9)


@_styled
def curves_figure(history: pd.DataFrame, best: int | None, metric: str) -> Figure:
    """Every trial's validation curve: pruned faded, diverged red, the best highlighted."""
    fig, ax = _fig()
    x, xlabel = _progress(history)
    for status, (colour, _, alpha) in STATUS_STYLE.items():
        part = history[history["status"] == status].sort_values(["number", "epoch"], kind="stable")
        starts = np.unique(part["number"].to_numpy(), return_index=True)[1]  # where each trial's rows begin
        segments = np.split(part[[x, metric]].to_numpy(dtype=float), starts[1:]) if len(part) else []
        if segments:
            # One LineCollection per status: fast enough for thousands of trials.
            ax.add_collection(LineCollection(segments, colors=colour, alpha=alpha * 0.5, linewidths=1,
                                             label=f"{status} ({len(segments)})"))
    if best is not None:
        b = history[history["number"] == best]
        ax.plot(b[x], b[metric], color="#ff7f0e", lw=3, label=f"best (trial {best})")
    ax.autoscale()
    _clip_y(ax, history[metric])
    ax.set(title="Learning curves of every trial", xlabel=xlabel,
           ylabel=METRIC_LABEL.get(metric, metric))
    ax.legend(fontsize="small")
    return fig


@_styled
def train_val_figure(history: pd.DataFrame, numbers: list[int]) -> Figure:
    fig, ax = _fig()
    palette = sns.color_palette("deep", len(numbers))
    x, xlabel = _progress(history[history["number"].isin(numbers)])
    for colour, n in zip(palette, numbers, strict=True):
        h = history[history["number"] == n]
        ax.plot(h[x], h["train_loss"], "--", color=colour, label=f"trial {n} train")
        ax.plot(h[x], h["val_loss"], "-", color=colour, label=f"trial {n} validation")
    ax.set(title="Train against validation loss, best trials", xlabel=xlabel,
           ylabel="loss (NLL, nats)")
    ax.legend(fontsize="small", ncol=2)
    return fig


@_styled
def batch_figure(df: pd.DataFrame, metric: str) -> Figure:
    fig, ax = _fig()
    sns.lineplot(data=df, x="batch_size", y="best", hue=df["samples_seen"].astype(str), marker="o", ax=ax)
    for _, row in df.iterrows():
        ax.annotate(f"{row['total_iters']} it", (row["batch_size"], row["best"]), textcoords="offset points",
                    xytext=(0, 6), ha="center", fontsize="x-small")
    ax.set_xscale("log", base=2)
    ax.set(title="Batch size against iterations at a fixed sample budget", xlabel="batch size (samples, log2 scale)",
           ylabel=f"best {METRIC_LABEL.get(metric, metric)}")
    ax.legend(title="samples seen", fontsize="small")
    return fig


@_styled
def schedule_figure(df: pd.DataFrame) -> Figure:
    fig, ax = _fig()
    sns.lineplot(data=df, x="iteration", y="lr", hue="schedule", ax=ax, estimator=None)
    ax.set_yscale("log")
    ax.set(title="Learning-rate schedules of the best trial of each type", xlabel="iteration (optimizer step)",
           ylabel="learning rate (log scale)")
    return fig


@_styled
def importance_figure(df: pd.DataFrame) -> Figure:
    fig, ax = _fig(height=max(2.5, 0.45 * len(df) + 1))
    sns.barplot(data=df, x="importance", y="param", ax=ax, color="#9467bd")
    ax.bar_label(ax.containers[0], fmt="%.2f", padding=3, fontsize="small")
    ax.margins(x=0.15)  # room for the labels
    ax.set(title="Hyperparameter importance (PED-ANOVA, as optuna-dashboard shows it)",
           xlabel="importance for reaching the best 10% of values (fraction)", ylabel="param")
    return fig


@_styled
def confusion_figure(confusion: pd.DataFrame) -> Figure:
    n = len(confusion)
    fig, ax = _fig(width=min(9, max(4.5, 2 + 0.6 * n)), height=min(8, max(3.5, 1.5 + 0.55 * n)))  # room for the title
    sns.heatmap(confusion, annot=n <= 20, fmt="d", cmap="Blues", cbar_kws={"label": "test samples (count)"}, ax=ax)
    ax.set(title="Best trial on the test split: confusion matrix", xlabel="predicted class", ylabel="true class")
    return fig


@_styled
def interaction_figure(table: pd.DataFrame, metric: str) -> Figure:
    rows, cols = table.shape
    fig, ax = _fig(width=min(10, 3 + 1.2 * cols), height=min(8, 2 + 0.6 * rows))
    values = table.to_numpy(dtype=float)
    finite = values[np.isfinite(values)]
    vmin = vmax = None
    if len(finite) >= 4:  # one diverged-looking outlier must not wash the other cells into one colour
        q1, q3 = np.percentile(finite, [25, 75])
        vmin, vmax = max(finite.min(), q1 - 3 * (q3 - q1)), min(finite.max(), q3 + 3 * (q3 - q1))
        vmin, vmax = (None, None) if vmin >= vmax else (vmin, vmax)
    sns.heatmap(table, annot=True, fmt=".3g", cmap="viridis_r", ax=ax, vmin=vmin, vmax=vmax,
                cbar_kws={"label": f"best {METRIC_LABEL.get(metric, metric)}"})
    ax.set(title=f"Best value for each {table.index.name} x {table.columns.name}", xlabel=table.columns.name,
           ylabel=table.index.name)
    ax.tick_params(axis="y", rotation=0)
    ax.grid(False)  # blank cells are untried combinations, not grid
    return fig


@_styled
def activation_figure(df: pd.DataFrame) -> Figure:
    return _per_layer(df, "std", "Activation std per layer at initialisation", "layer (activation after it)",
                      "std of activations (log scale)")


def _per_layer(df: pd.DataFrame, y: str, title: str, xlabel: str, ylabel: str) -> Figure:
    """One line per (init, activation) across the layers, on a log scale: the diagnostics' figures."""
    fig, ax = _fig()
    sns.lineplot(data=df, x="layer", y=y, hue="init", style="activation", marker="o", ax=ax)
    ax.set_yscale("log")
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.legend(fontsize="small", ncol=2)
    return fig


@_styled
def verdict_figure(seeds: pd.DataFrame, arms: pd.DataFrame, metric: str) -> Figure:
    fig, ax = _fig(7.5, 1.2 + 0.5 * len(arms))
    order = list(arms["arm"])
    with _fixed_jitter():
        sns.stripplot(data=seeds, x="value", y="arm", order=order, color="#999999", size=5, jitter=0.15, ax=ax)
    y = np.arange(len(order))
    err = np.array([arms["mean"] - arms["ci_low"], arms["ci_high"] - arms["mean"]])
    ax.errorbar(arms["mean"], y, xerr=np.nan_to_num(err), fmt="o", color="#1f77b4", capsize=4, label="mean, 95% CI")
    ax.set_ylim(len(order) - 0.5, -0.5)  # the strip plot's rows, first on top: errorbar's autoscale would shrink one
    xlabel = METRIC_LABEL.get(metric, metric)
    shown = pd.concat([seeds["value"], arms["mean"], arms["ci_high"]])
    shown = shown[np.isfinite(shown)]
    if RANGES.get(metric) == (0.0, np.inf) and len(shown) and shown.min() > 0 and \
            shown.max() > LOG_SPREAD * shown.min():
        # a loss on a log axis: an arm at chance or a chaotic seed must not flatten the others' intervals
        # (an interval reaching 0 runs off the left edge)
        ax.set_xscale("log")
        lows = arms["ci_low"][arms["ci_low"] > 0]
        ax.set_xlim(min(shown.min(), lows.min() if len(lows) else np.inf) / 1.3, shown.max() * 1.3)
        ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))  # 0.1 0.2 0.5 1 2 5
        ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        xlabel += " (log scale)"
    ax.set(title="Confirmed arms", xlabel=xlabel, ylabel="arm")
    ax.legend(loc="best", fontsize="small")
    return fig


@_styled
def gradient_figure(df: pd.DataFrame) -> Figure:
    return _per_layer(df, "grad_norm", "Gradient norm per layer over the first iterations", "layer (input to output)",
                      "mean weight-gradient norm (log scale)")


@_styled
def lr_find_figure(found: dict) -> Figure:
    """The LR range test: smoothed loss against lr for each optimizer, its suggested range shaded."""
    fig, ax = _fig()
    for (name, r), colour in zip(found.items(), sns.color_palette("deep", len(found)), strict=True):
        ax.plot(r["lrs"], r["loss"], color=colour, label=f"{name}: {r['low']:.2g} to {r['high']:.2g}")
        ax.axvspan(r["low"], r["high"], color=colour, alpha=0.08)
    ax.set_xscale("log")
    ax.set(title="LR range test", xlabel="learning rate (log scale)", ylabel="smoothed training loss (NLL, nats)")
    ax.legend(fontsize="small")
    return fig


@_styled
def parallel_figure(df: pd.DataFrame, metric: str, direction: str = "minimize") -> Figure:
    """Each complete trial as a line across the searched params (0..1 per axis), coloured by its value,
    the best dark and drawn last."""
    params = [c for c in df.columns if c not in ("number", "value")]
    fig, ax = _fig(width=max(6.0, 1.6 * len(params) + 2))
    low_is_best = direction == "minimize"
    order = df.sort_values("value", ascending=not low_is_best)  # the best drawn last, on top
    edge = order["value"].quantile(0.9 if low_is_best else 0.1)  # an outlier must not take the whole scale
    norm = matplotlib.colors.Normalize(*sorted((order["value"].min() if low_is_best else order["value"].max(), edge)))
    cmap = matplotlib.colormaps["viridis" if low_is_best else "viridis_r"]
    # One collection, not a line per trial: a report of 10,000 trials drew this figure in seconds.
    ys = order[params].to_numpy(dtype=float)
    segments = np.stack([np.broadcast_to(np.arange(len(params), dtype=float), ys.shape), ys], axis=-1)
    ax.add_collection(LineCollection(segments, colors=cmap(norm(order["value"].to_numpy(dtype=float))), alpha=0.7,
                                     linewidths=1.2))
    ax.autoscale()
    ax.set_xticks(range(len(params)), params)
    ax.set(title="Complete trials across the searched params", xlabel="searched param",
           ylabel="position in its range (0 = low, 1 = high)")
    fig.colorbar(matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label=METRIC_LABEL.get(metric, metric))
    return fig


@_styled
def compare_curves_figure(curves: pd.DataFrame, metric: str) -> Figure:
    fig, ax = _fig()
    x, xlabel = _progress(curves)
    for name, group in curves.groupby("study", sort=False):
        ax.plot(group[x], group[metric], marker="o", ms=3, label=str(name))
    ax.set(title="Best trial of each study", xlabel=xlabel, ylabel=METRIC_LABEL.get(metric, metric))
    ax.legend(fontsize="small")
    return fig


@_styled
def curves_by_figure(history: pd.DataFrame, param: str, order: list[str], metric: str) -> Figure:
    """Complete trials' validation curves, one colour per value of `param`."""
    fig, ax = _fig()
    x, xlabel = _progress(history)
    palette = dict(zip(order, sns.color_palette("deep", len(order)), strict=True))
    ordered = history.sort_values(["number", "epoch"], kind="stable")
    starts = np.unique(ordered["number"].to_numpy(), return_index=True)[1]  # where each trial's rows begin
    segments = np.split(ordered[[x, metric]].to_numpy(dtype=float), starts[1:])
    values = ordered[param].astype(str).to_numpy()[starts]
    for value in [v for v in order if v in set(values)] + sorted(set(values) - set(order)):
        mine = [s for s, v in zip(segments, values, strict=True) if v == value]  # one collection per value
        ax.add_collection(LineCollection(mine, colors=[palette.get(value, "#999999")], alpha=0.6, linewidths=1,
                                         label=value))
    ax.autoscale()
    _clip_y(ax, history[metric])
    ax.legend(title=param, fontsize="small")
    ax.set(title=f"Learning curves by {param}", xlabel=xlabel, ylabel=METRIC_LABEL.get(metric, metric))
    return fig
