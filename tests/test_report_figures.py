"""Every figure renders to memory with a title, labelled axes (units), and log axes for learning rates."""
import pandas as pd
import pytest

from conftest import make_study
from study.report import figures as F
from study.report import tables as T


@pytest.fixture(scope="module")
def frames():
    study = make_study(40, statuses=("complete", "complete", "pruned", "diverged"), seed=3)
    trials, history = T.trials_frame(study), T.history_frame(study)
    return trials, history


def _figures(trials, history):
    comparison = T.comparison_data(trials, "optimizer", "minimize")
    yield "history", F.history_figure(T.history_data(trials, "minimize"), "val_loss")
    yield "lr", F.lr_figure(T.lr_data(trials, "minimize"), "val_loss")
    yield "distribution", F.distribution_figure(trials, "optimizer", "val_loss")
    yield "isolation", F.isolation_figure(comparison, "optimizer", "val_loss")
    yield "curves", F.curves_figure(history, T.best_number(trials, "minimize"), "val_loss")
    yield "train_val", F.train_val_figure(history, [0, 1])
    yield "batch", F.batch_figure(T.batch_data(trials, "minimize"), "val_loss")
    yield "schedule", F.schedule_figure(T.schedule_data(trials, "minimize"))
    yield "importance", F.importance_figure(pd.DataFrame({"param": ["lr", "optimizer"], "importance": [0.8, 0.2]}))
    yield "confusion", F.confusion_figure(pd.DataFrame([[5, 1], [0, 4]]))
    yield "interaction", F.interaction_figure(T.interaction_data(trials, "optimizer", "batch_size", "minimize"),
                                              "val_loss")
    activations = pd.DataFrame({"init": ["he", "he", "xavier", "xavier"], "activation": ["relu"] * 4,
                                "layer": [1, 2, 1, 2], "std": [1.0, 0.9, 0.5, 0.25]})
    yield "activations", F.activation_figure(activations)
    yield "gradients", F.gradient_figure(activations.rename(columns={"std": "grad_norm"}))
    curve = {"lrs": [1e-5, 1e-3, 1e-1], "loss": [2.3, 1.0, 4.0], "low": 1e-4, "high": 1e-3}
    yield "lr_find", F.lr_find_figure({"sgd": curve, "adam": curve})
    yield "parallel", F.parallel_figure(T.parallel_data(make_study(12, seed=5).trials), "val_loss")
    yield "compare_curves", F.compare_curves_figure(history.assign(study=history["number"] % 2), "val_loss")
    by = history[history["status"] == "complete"].merge(trials[["number", "batch_size"]], on="number")
    fig = F.curves_by_figure(by, "batch_size", T.in_order(by["batch_size"]), "val_loss")
    assert fig.axes[0].get_legend().get_texts()[0].get_text() == "16"  # numeric order: 16 before 32, 64
    assert fig.axes[0].get_xlabel() == "training samples seen"
    yield "curves_by", fig
    from study.verdict import compare

    verdict = compare({"adam": [0.1, 0.12, 0.11], "sgd": [0.2, 0.25, 0.22]}, "minimize")
    for arm, candidate in zip(verdict["arms"], (3, 4), strict=True):
        arm.update(search_value=arm["mean"] - 0.01, candidate=candidate)
    yield "verdict", F.verdict_figure(T.seed_values(verdict), T.verdict_data(verdict)[0], "val_loss")


def test_every_figure_function_is_exercised():
    """A new figure in figures.py must be added to _figures above, or this fails."""
    import inspect

    drawn = set(inspect.getsource(_figures).split("F.")[1:])
    defined = {n for n, f in inspect.getmembers(F, inspect.isfunction) if n.endswith("_figure")
               and f.__module__ == F.__name__}
    assert defined == {d.split("(")[0] for d in drawn if d.split("(")[0].endswith("_figure")}


def test_every_figure_is_titled_labelled_and_renders(frames):
    names = []
    for name, fig in _figures(*frames):
        ax = fig.axes[0]
        assert ax.get_title(), name
        assert ax.get_xlabel() and ax.get_ylabel(), name
        if "learning rate" in ax.get_xlabel():
            assert ax.get_xscale() == "log", name
        if "learning rate" in ax.get_ylabel():
            assert ax.get_yscale() == "log", name
        png = F.to_png(fig)
        assert png.startswith(b"\x89PNG") and len(png) > 5000, name
        assert F.overlapping_labels(fig) == [], name  # none overlaps another or is cut off by the edge
        names.append(name)
    assert len(names) == len(set(names))


def _verdict_axes(values: dict[str, list[float]], metric: str = "val_loss"):
    from study.verdict import compare

    verdict = compare(values, "minimize" if metric == "val_loss" else "maximize")
    for number, arm in enumerate(verdict["arms"]):
        arm.update(search_value=arm["mean"], candidate=number)
    return F.verdict_figure(T.seed_values(verdict), T.verdict_data(verdict)[0], metric)


def test_the_verdict_figure_puts_a_loss_on_a_log_axis_where_one_arm_would_flatten_the_others():
    """lecture's orthogonal/SGD (one seed at 2.88, its interval up to 4.93) pressed eleven arms' intervals,
    0.13 to 0.43, into the left tenth of a linear axis."""
    fig = _verdict_axes({"adam": [0.13, 0.15, 0.14], "sgd": [0.2, 0.24, 0.22], "chaotic": [0.2, 0.25, 2.9]})
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and ax.get_xlabel().endswith("(log scale)")
    means = {t.get_text(): i for i, t in enumerate(ax.get_yticklabels())}
    (adam, _), (sgd, _) = ax.transAxes.inverted().transform(ax.transData.transform([(0.14, means["adam"]),
                                                                                    (0.22, means["sgd"])]))
    assert sgd - adam > 0.1  # a tenth of the axis apart; on the linear axis, under 2%
    assert F.overlapping_labels(fig) == [] and F.to_png(fig).startswith(b"\x89PNG")
    # arms of one scale, and a bounded metric (accuracy at chance is 0.1, not a thousandth), stay linear
    assert _verdict_axes({"adam": [0.1, 0.12, 0.11], "sgd": [0.2, 0.25, 0.22]}).axes[0].get_xscale() == "linear"
    accuracy = _verdict_axes({"adam": [0.97, 0.98, 0.96], "chance": [0.05, 0.1, 0.08]}, "val_accuracy")
    assert accuracy.axes[0].get_xscale() == "linear"


def test_the_verdict_figure_keeps_every_arm_s_seeds_on_its_row():
    """errorbar's autoscale shrank the rows: one arm's dots fell below its label, off its interval."""
    for values in ({"the best config (trial 3)": [0.15, 0.2, 0.25]}, {"a": [0.1, 0.2], "b": [0.3, 0.4], "c": [1, 2]}):
        ax = _verdict_axes(values).axes[0]
        assert ax.get_ylim() == (len(values) - 0.5, -0.5)
        for row, dots in enumerate(c.get_offsets() for c in ax.collections if len(c.get_offsets()) > 1):
            assert all(abs(y - row) < 0.5 for _, y in dots)


def test_every_metric_has_an_axis_label():
    from study.config import METRICS

    assert set(F.METRIC_LABEL) == set(METRICS)


def test_one_outlier_does_not_wash_out_the_heatmap_s_colours():
    table = pd.DataFrame([[0.10, 0.12, 0.11], [0.13, 0.09, 9.0]], index=pd.Index(["a", "b"], name="opt"),
                         columns=pd.Index(["16", "32", "64"], name="batch"))
    mesh = F.interaction_figure(table, "val_loss").axes[0].collections[0]
    assert mesh.norm.vmax < 1.0  # the scale spans the ordinary cells; the outlier takes its end colour


def test_long_choice_names_are_turned_upright_rather_than_overlap(frames):
    trials, _ = frames
    names = ["small_random", "xavier", "he", "orthogonal", "lecun_normal", "sgd_momentum_nesterov"]
    trials = trials.assign(init=[names[i % len(names)] for i in range(len(trials))])
    for fig in (F.distribution_figure(trials, "init", "val_loss"),
                F.isolation_figure(T.comparison_data(trials, "init", "minimize"), "init", "val_loss")):
        assert F.overlapping_labels(fig)  # as drawn, the names run into one another
        F.to_png(fig)
        assert F.overlapping_labels(fig) == []
        assert fig.axes[0].get_xticklabels()[0].get_rotation() == 90


def test_crowded_labels_on_one_axes_of_two_are_turned_upright_and_the_other_is_still_checked():
    """After turning one axes' labels, the figure is laid out again for the next axes (it once failed on a
    second axes, such as a colorbar's)."""
    from matplotlib.figure import Figure

    names = ["small_random", "xavier", "he", "orthogonal", "lecun_normal", "sgd_momentum_nesterov"]
    fig = Figure(figsize=(5, 3), dpi=100, layout="constrained")
    crowded, other = fig.subplots(1, 2, width_ratios=[4, 1])
    crowded.bar(names, range(len(names)))
    other.plot([0, 1], [0, 1])
    assert F.overlapping_labels(fig)
    F.to_png(fig)
    assert F.overlapping_labels(fig) == []
    assert crowded.get_xticklabels()[0].get_rotation() == 90 and other.get_xticklabels()[0].get_rotation() == 0
