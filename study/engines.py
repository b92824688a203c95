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
confirmation runs are planned, not sampled, never pruned, and fill the device.
What only the model can tell is found before or by the first population (pool.py): how many of its
members fit (`fitted`: a CPU's cache, a GPU's free memory), and whether it runs under vmap at all (if
not, the worker trains its trials one by one and stores why on each).
"""
from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING

import torch

from study.config import StudyConfig, is_option, option_of
from study.population import FUSED_BY, fitting, member_bytes

if TYPE_CHECKING:
    from study.engine import PreparedTrial

# A CPU's sweet spot depends on the model: a population's step is fastest while its members' working set
# (member_bytes: parameters, gradients, optimizer state, saved activations) stays near the last-level
# cache. Per model-step on 2 EPYC cores (2026-12-02, digits, batch 64; ms per trial at K = 16 / 32 / 64):
# MLP 2 x 64, 0.25 MB a member: 311 / 204 / 169 us per model-step (bench_population);
# MLP 2 x 128, 0.64 MB: 26 / 21 / 19 ms; MLP 2 x 256, 1.9 MB: 56 / 66 / 67 ms;
# CNN 3 x 32 (3x3), 2.3 MB: 139 / 133 / 183 ms. So K is what fits CPU_CACHE, within [CPU_MIN, CPU_SIZE].
CPU_SIZE = 64
CPU_MIN = 16
CPU_CACHE = 32 * 2**20
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
        return f"population engine, {self.size} trials at a time ({self.why})"


def device_size(device: torch.device) -> int:
    return CUDA_SIZE if device.type == "cuda" else CPU_SIZE


def choose(cfg: StudyConfig, device: torch.device, phase: str, jobs: int = 1) -> EnginePlan:
    """The engine and K for one phase ("search" or "confirm", whose n_trials is its number of runs), for
    each of `jobs` workers: they share the trials, and what the sampler is asked at once."""
    s = cfg.study
    if s.engine == "sequential":
        return EnginePlan("sequential", 1, "asked for")
    n = -(-s.n_trials // jobs)  # each worker's share
    each = f" for each of {jobs} workers" if jobs > 1 else ""
    if s.population:
        size, why = s.population, f"{s.population} asked for"
    elif phase == "search":
        size = min(device_size(device), max(1, n // ROUNDS))
        why = (f"auto: {n} trials{each}, asked {size} at a time so that the sampler learns from {ROUNDS} rounds"
               if size < device_size(device) else f"auto: the {device.type} sweet spot")
    else:
        size, why = min(device_size(device), n), f"auto: {n} confirmation runs{each}"
    if s.engine == "population":  # asked for: at least two at once
        return EnginePlan("population", max(size, min(2, n)), why if not s.population else "asked for")
    if device.type not in ("cpu", "cuda"):
        return EnginePlan("sequential", 1, f"auto: populations are tested on cpu and cuda, not {device.type}")
    if cfg.defaults.precision == "fp16" and device.type == "cuda":
        return EnginePlan("sequential", 1, "auto: fp16 needs a loss scaler per trial; bf16 or fp32 fuse")
    if phase == "search" and size < MIN_SEARCH_SIZE and not s.population:
        return EnginePlan("sequential", 1, f"auto: {n} trials{each} would be asked {size} at a time, too few for a "
                                           f"population to pay in a search (it does from {MIN_SEARCH_SIZE})")
    if size < 2:
        return EnginePlan("sequential", 1, "auto: one run")
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


def _count(graphs: float) -> str:
    return "infinitely many" if math.isinf(graphs) else f"up to {int(graphs)}"


def fitted(p: "PreparedTrial", size: int, planned: bool) -> tuple[int, str]:
    """K for populations of trials like p, at most `size`, and why when it is less: on CUDA what the free
    memory holds (population.fitting, also for a K asked for: memory is a hard limit); on a CPU, where K
    was planned rather than asked for, what keeps the members' working set within CPU_CACHE."""
    if p.device.type == "cuda":
        k = fitting(p, size)
        return k, f"the device's free memory fits {k} trials of this model at once"
    if p.device.type != "cpu" or not planned or size <= CPU_MIN:
        return size, ""
    try:
        each = member_bytes(p)
    except Exception:  # a model that does not run under vmap: the population finds out and says so
        return size, ""
    k = max(CPU_MIN, min(size, CPU_CACHE // max(each, 1)))
    return k, f"a member of this model works on {each / 2**20:.1f} MB a step; {k} fit the CPU's cache"
