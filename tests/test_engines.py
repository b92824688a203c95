"""`study.engine: auto`: which engine each phase gets, with how many trials at once, and why."""
import dataclasses
from pathlib import Path

import pytest
import torch
from optuna.trial import TrialState, create_trial

from study import records
from study.config import TrialConfig, load_config
from study.engines import CPU_SIZE, CUDA_SIZE, MIN_SEARCH_SIZE, ROUNDS, choose, graph_count, run_graphs

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def _with(cfg, **study):
    return dataclasses.replace(cfg, study=dataclasses.replace(cfg.study, **study))


def test_the_search_asks_at_most_a_quarter_of_its_trials_at_once_and_confirmation_runs_fill_the_device():
    cfg = load_config("quick")  # one graph
    plan = choose(_with(cfg, n_trials=64), CPU, "search")
    assert (plan.engine, plan.size) == ("population", 64 // ROUNDS)
    assert choose(_with(cfg, n_trials=15), CPU, "confirm").size == 15
    many = _with(cfg, n_trials=1000)
    assert choose(many, CPU, "search").size == CPU_SIZE and choose(many, CUDA, "search").size == CUDA_SIZE
    assert choose(_with(many, n_trials=200), CUDA, "confirm").size == CUDA_SIZE


def test_a_search_too_small_for_populations_to_pay_trains_one_at_a_time_and_says_why():
    plan = choose(load_config("quick"), CPU, "search")  # 16 trials: 4 at a time
    assert plan.engine == "sequential" and f"it does from {MIN_SEARCH_SIZE}" in plan.why
    assert choose(_with(load_config("quick"), n_trials=1), CPU, "confirm").engine == "sequential"


def test_a_space_of_many_graphs_trains_one_at_a_time_and_says_why():
    plan = choose(_with(load_config("lecture"), n_trials=1000), CPU, "search")
    assert plan.engine == "sequential"
    assert "depth, width, activation" in plan.why and "without a partner" in plan.why


def test_a_confirmation_phase_counts_the_graphs_its_runs_train_not_those_the_space_can_draw():
    cfg = _with(load_config("lecture"), n_trials=36)  # 12 candidates, 3 seeds each: each candidate's own graph
    plan = choose(cfg, CPU, "confirm", graphs=12)
    assert (plan.engine, plan.size) == ("population", CPU_SIZE) and "36 confirmation runs of 12 graphs" in plan.why
    alone = choose(cfg, CPU, "confirm", graphs=36)  # vary_split: every run on its own split
    assert alone.engine == "sequential" and "too few share one to fuse" in alone.why
    assert choose(cfg, CPU, "confirm").engine == "sequential"  # the space's count: hundreds of graphs


def _trial(number: int, state=TrialState.COMPLETE, **attrs):
    t = create_trial(state=state, value=0.1 if state == TrialState.COMPLETE else None,
                     user_attrs=records.attrs(**attrs))
    t.number = number
    return t


def test_run_graphs_counts_the_waiting_runs_candidates_graphs_and_their_own_splits():
    widths = {0: 8, 1: 8, 2: 16, 3: 32}
    candidates = [_trial(n, config=TrialConfig(width=w).to_dict()) for n, w in widths.items()]
    runs = [_trial(4 + k, TrialState.WAITING, confirm={"of": of, "seed": k}) for k, of in enumerate([0, 0, 1, 2, 2])]
    done = [_trial(9, confirm={"of": 3, "seed": 0})]  # finished: its graph trains nothing more
    assert run_graphs(candidates + runs + done) == 2  # widths 8 (candidates 0 and 1) and 16
    split = [_trial(10, TrialState.WAITING, confirm={"of": 0, "seed": 7, "split_seed": 7})]
    assert run_graphs(candidates + runs + split) == 3


def test_the_order_and_shuffle_of_the_data_leave_the_graph_alone(tmp_path):
    """An order arranges the same training rows, which population members index each in its own way."""
    space = tmp_path / "orders.yaml"
    space.write_text((Path(__file__).parents[1] / "search_spaces" / "preprocessing.yaml").read_text().replace(
        "  preprocess: {choices: [none, center, standardize]}", "  order: {choices: [random, class_sorted]}").replace(
        "scientific: [preprocess, shuffle]", "scientific: [order, shuffle]"))
    cfg = load_config(str(space))
    assert set(cfg.params) == {"order", "shuffle", "lr"} and graph_count(cfg) == (1, [])
    assert choose(_with(cfg, n_trials=400), CPU, "search").engine == "population"


@pytest.mark.parametrize("space", ["quick", "init", "preprocessing", "batch_vs_iterations", "optimizers",
                                   "schedules"])
def test_the_shipped_spaces_of_a_few_graphs_confirm_in_populations(space):
    cfg = load_config(space)
    assert choose(_with(cfg, n_trials=40), CPU, "confirm").engine == "population"
    assert choose(_with(cfg, n_trials=400), CPU, "search").engine == "population"


def test_what_the_user_asks_for_wins():
    cfg = load_config("quick")
    assert choose(_with(cfg, engine="sequential"), CPU, "search").size == 1
    both = choose(_with(cfg, engine="sequential", population=8), CPU, "search")
    assert both.line() == "sequential engine, one trial at a time (asked for; population 8 unused)"
    forced = choose(_with(load_config("lecture"), engine="population", population=8), CPU, "search")
    assert (forced.engine, forced.size, forced.why) == ("population", 8, "asked for")
    one = choose(_with(cfg, engine="population", population=1), CPU, "search")  # a K the user names is kept
    assert one.line() == "population engine, 1 trial at a time (asked for)"
    assert choose(_with(cfg, population=3), CPU, "search").size == 3
    assert choose(_with(cfg, engine="population", n_trials=3), CPU, "search").size == 2  # never a population of 1
    # and its line says so, not that the trials are asked one at a time
    assert choose(_with(cfg, engine="population", n_trials=6), CPU, "search").line() == \
        "population engine, 2 trials at a time (asked for; at least 2, where auto would ask 6 trials 1 at a time)"


def test_other_devices_train_one_at_a_time_unless_asked():
    cfg = _with(load_config("quick"), n_trials=15)
    assert choose(cfg, torch.device("mps"), "confirm").engine == "sequential"
    assert choose(_with(cfg, engine="population"), torch.device("mps"), "confirm").engine == "population"


def test_fp16_on_cuda_trains_one_at_a_time():
    cfg = load_config("quick", [("training.precision", "fp16")])
    assert choose(cfg, CUDA, "confirm").engine == "sequential"
    assert choose(cfg, CPU, "confirm").engine == "population"  # autocast is off on a CPU


def test_workers_share_the_trials_so_each_asks_for_its_share():
    cfg = _with(load_config("quick"), n_trials=15)
    assert choose(cfg, CPU, "confirm", jobs=2).size == 8  # not 15 for one worker and none for the other
    assert choose(_with(cfg, n_trials=128), CPU, "search", jobs=2).size == 16
    assert choose(_with(cfg, n_trials=64), CPU, "search", jobs=2).engine == "sequential"
