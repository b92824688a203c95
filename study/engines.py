"""Which engine trains a phase's trials, and how many at once: `study.engine: auto` (the default) resolved.

    >>> from study.config import load_config
    >>> cfg = load_config("quick")
    >>> choose(cfg, torch.device("cpu"), "search").why
    'auto: 16 trials would be asked 4 at a time, too few for a population to pay in a search (it does from 16)'
    >>> choose(dataclasses.replace(cfg, study=dataclasses.replace(cfg.study, n_trials=15)), torch.device("cpu"),
    ...        "confirm").line()
    'population engine, 15 trials at a time (auto: 15 confirmation runs)'

`auto` trains populations (population.py) where they pay, and says in one line why not elsewhere. K, when
not forced with `--population K`, is the device's sweet spot, capped in the search at a quarter of its
trials: a population's trials are asked before any of them is told, so the sampler learns less from
them and they cannot prune one another. A search gets populations only from MIN_SEARCH_SIZE at a time;
confirmation runs are planned, not sampled, never pruned, and fill the device. A search counts the graphs
its space can draw; a confirmation phase counts those its runs train (`run_graphs`), since each
candidate's seeds share one graph even where the space draws many (`lecture`).
What only the model can tell (it does not run under vmap) is found by the first population, which then
trains its trials one by one and stores why on each (pool.py).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import torch
from optuna.trial import FrozenTrial, TrialState

from study.config import StudyConfig, is_option, option_of
from study.population import FUSED_BY
from study.records import TrialRecord

# bench_population, a quick-like MLP on 2 CPU cores (2026-12-01), trials/min over the sequential engine:
# x2.64 at K = 16 and x2.96 at K = 64 on one thread, x2.69 and x4.37 on two. Past 16 the gain per member
# shrinks while memory grows K-fold, and a CPU has no out-of-memory error to back off from. Larger K was
# tried end to end (2026-12-02): a quick-sized MLP's step is fastest at K = 64 (bench_population: x1.8
# over K = 16), yet a study's confirmation phase gained nothing (init, 40 runs: 9.8 s at K = 40, 9.7 s at
# 16) or lost (schedules, 60 runs: 22.7 s at K = 60, 18.3 s at 16): every storage read re-reads each
# running trial (Optuna caches finished ones only), once per ask and per told trial. Those reads are now
# per batch of asks (Worker.beyond_target) and at most once a second for the bar, and a cache-fitted K
# (16-64, 32 MB of member_bytes; commit e837ecb) was measured again against 16 (2026-12-02, 9 alternated
# confirmation phases of schedules, init and batch_vs_iterations, the bar still reading per told trial):
# 0.80-1.21 of the time, median 0.96.
# What remains per trial and epoch (a checkpoint, a storage write) is the same for every K.
CPU_SIZE = 16
# A GPU is far from full at 64 small models. A larger model's K is what the first population's probe step
# finds room for in free memory (population.fitting); an out-of-memory error still halves K.
CUDA_SIZE = 64
ROUNDS = 4  # the search asks at most n_trials / ROUNDS trials at once
# Below this, a search's populations cost more than they save (2 cores, 2026-12-01): at K = 4 the fused
# step gains little (bench_population x1.0-1.3), trials asked together cannot prune one another (quick at
# 64 epochs trained 655 epochs against 469), and a small trial's time is mostly the storage's and the
# sampler's (a quick search of 48 trials: 9.2 s at K = 4, 8.4 s at K = 16, 8.3 s sequential).
MIN_SEARCH_SIZE = 16


@dataclasses.dataclass(frozen=True)
class EnginePlan:
    engine: str  # sequential | population
    size: int  # trials per population (1 for the sequential engine)
    why: str  # the one-line reason

    def line(self) -> str:
        if self.engine == "sequential":
            return f"sequential engine, one trial at a time ({self.why})"
        return f"population engine, {self.size} trial{'s' * (self.size != 1)} at a time ({self.why})"


def device_size(device: torch.device) -> int:
    return CUDA_SIZE if device.type == "cuda" else CPU_SIZE


def choose(cfg: StudyConfig, device: torch.device, phase: str, jobs: int = 1, graphs: int | None = None) -> EnginePlan:
    """The engine and K for one phase ("search" or "confirm", whose n_trials is its number of runs), for
    each of `jobs` workers: they share the trials, and what the sampler is asked at once. `graphs`: how
    many graphs a confirmation phase's runs train (run_graphs); None, the space's count (graph_count)."""
    s = cfg.study
    if s.engine == "sequential":  # a population size asked for too is said to go unused, not dropped silently
        unused = f"; population {s.population} unused" if s.population else ""
        return EnginePlan("sequential", 1, f"asked for{unused}")
    n = -(-s.n_trials // jobs)  # each worker's share
    trials = f"{n} trial{'s' * (n != 1)}"
    each = f" for each of {jobs} workers" if jobs > 1 else ""
    if s.population:
        size, why = s.population, f"{s.population} asked for"
    elif phase == "search":
        size = min(device_size(device), max(1, n // ROUNDS))
        why = (f"auto: {trials}{each}, asked {size} at a time so that the sampler learns from {ROUNDS} rounds"
               if size < device_size(device) else f"auto: the {device.type} sweet spot")
    else:
        size, why = min(device_size(device), n), f"auto: {n} confirmation run{'s' * (n != 1)}{each}"
        if graphs and graphs > 1:
            why += f" of {graphs} graphs, a population holding one graph's runs"
    if s.engine == "population":  # asked for: at least two at once
        if s.population:
            return EnginePlan("population", size, "asked for")
        if size < min(2, n):
            return EnginePlan("population", 2, f"asked for; at least 2, where auto would ask {trials}{each} "
                                               f"{size} at a time")
        return EnginePlan("population", size, why)
    if device.type not in ("cpu", "cuda"):
        return EnginePlan("sequential", 1, f"auto: populations are tested on cpu and cuda, not {device.type}")
    if cfg.defaults.precision == "fp16" and device.type == "cuda":
        return EnginePlan("sequential", 1, "auto: fp16 needs a loss scaler per trial; bf16 or fp32 fuse")
    if phase == "search" and size < MIN_SEARCH_SIZE and not s.population:
        return EnginePlan("sequential", 1, f"auto: {trials}{each} would be asked {size} at a time, too few for a "
                                           f"population to pay in a search (it does from {MIN_SEARCH_SIZE})")
    if size < 2:
        return EnginePlan("sequential", 1, "auto: one run")
    if graphs is not None:  # the confirmation runs' own: each candidate's seeds share its graph
        if graphs * 2 > s.n_trials:
            return EnginePlan("sequential", 1, f"auto: {s.n_trials} confirmation runs of {graphs} graphs (model, "
                                               "data, batch size or split): too few share one to fuse")
        return EnginePlan("population", size, why)
    graphs, shaping = graph_count(cfg)
    if graphs * 2 > size:
        return EnginePlan("sequential", 1, f"auto: the space searches {', '.join(shaping)}, which shape the "
                                           f"network or its data; {_count(graphs)} graphs would leave most "
                                           f"of {size} trials without a partner to fuse with")
    return EnginePlan("population", size, why)


def graph_count(cfg: StudyConfig) -> tuple[float, list[str]]:
    """How many different graphs (model, data, batch size) the search can make, and the params that vary them."""
    shaping = [name for name in cfg.params if (option_of(name)[0] if is_option(name) else name) in FUSED_BY]
    sizes = [cfg.params[name].grid_size() for name in shaping]
    return math.prod(math.inf if k is None else k for k in sizes), shaping


def run_graphs(trials: Sequence[FrozenTrial]) -> int:
    """How many different graphs the confirmation runs waiting to train make: a run trains its candidate's
    model, data and batch size (its stored config), on its own split where it draws one (vary_split)."""
    by_number = {t.number: t for t in trials}
    keys = set()
    for t in trials:
        run = TrialRecord.of(t).confirm
        if run and t.state == TrialState.WAITING and run["of"] in by_number:
            config = TrialRecord.of(by_number[run["of"]]).config
            keys.add(tuple(str(run.get(k, config.get(k))) for k in FUSED_BY))
    return len(keys)


def _count(graphs: float) -> str:
    return "infinitely many" if math.isinf(graphs) else f"up to {int(graphs)}"
