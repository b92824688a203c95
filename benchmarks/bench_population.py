"""How many more trials per minute does the population engine train than the sequential one, and does
the study reach a good model sooner?

    python -m benchmarks.bench_population [--device cuda] [--trials 64] [--sizes 1 4 16 64] [--vmap] [--checkpoints]
                                          [--dropout P] [--batchnorm] [--cnn DEPTH WIDTH]
    python -m benchmarks.bench_population --to-target 0.1 [--sizes 4 16] [--seeds 3]
    python -m benchmarks.bench_population --compile [--sizes 16 64]
    python -m benchmarks.bench_population --ops [--sizes 1 4 16 64]

A `quick`-like study: the same MLP (2 x 64, ReLU) on 8x8 digits at batch 64 for 8 epochs; each trial
draws its optimizer (sgd, sgd_momentum, adam), lr, init and seed. The same trials are trained by
`run_sequential` one after another and by `run_population` in groups of K, in one run on one machine;
printed: trials/min, microseconds per model-step (a step of one trial), and the ratio to sequential.
Validation, divergence checks and history are included; storage is not, and checkpoints only with
--checkpoints (each trial saves one per epoch, as `study run` does). --vmap: each K also with the forward
that any model gets (vmap over functional_call) instead of study.fused's layers. --dropout P: the MLP
with dropout after each hidden layer, whose fused forward draws each member's masks from its own stream;
--batchnorm: with BatchNorm1d before each hidden activation. --cnn DEPTH WIDTH: lecture's 1-D CNN (kernel 5)
on MNIST-1D at batch 64 for 8 epochs instead of the MLP.

--to-target: the wall time until a study's best validation loss first reaches the target, the way a user
runs it (run_study: a fresh SQLite file, the shipped sampler and pruner, checkpoints, no confirmation
runs): the `quick` space with 48 trials, sequential and with populations of each K, over several sampler
seeds. A population's trials are all asked before any is told, so the sampler learns less per trial;
the trials needed to reach the target show that cost beside the time.

--compile: one population of K trials for 8 epochs with its fused forward eager and under torch.compile,
in one run: the first epoch (compilation included) and the other seven.

--ops: the tensor ops that run a kernel (views do not), counted over whole runs, validation included,
per step of the sequential engine and per fused step of a population of K. Machine-independent, and on a
GPU, where these models' kernels are tiny, each is a launch that the step waits for. A `_foreach_` op
counts once; on CUDA, with per-member columns, it launches a kernel per tensor. Then the ops of one stack
rebuild at an epoch's end, where one of K members leaves and a new one joins.
"""
from __future__ import annotations

import argparse
import contextlib
import itertools
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

import study.fused
import study.population
from study.checkpoints import Checkpoints
from study.config import TrialConfig
from study.datacache import DataCache
from study.engine import run_sequential
from study.population import run_population
from study.trial import prepare


def variant_mlp(input_shape, n_classes, *, depth: int, width: int, activation: str, dropout: float | None,
                batchnorm: bool) -> torch.nn.Module:
    """The shipped MLP with BatchNorm before each hidden activation (--batchnorm) and dropout after it
    (--dropout)."""
    from study.models import mlp

    layers = list(mlp(input_shape, n_classes, depth=depth, width=width, activation=activation))
    for at in reversed(range(1, 2 * depth, 2)):  # Flatten, then Linear, activation per hidden layer
        if dropout is not None:
            layers.insert(at + 2, torch.nn.Dropout(dropout))
        if batchnorm:
            layers.insert(at + 1, torch.nn.BatchNorm1d(width))
    return torch.nn.Sequential(*layers)


# --cnn: lecture's 1-D CNN on MNIST-1D for 8 epochs (depth and width: --cnn's values)
CNN = dict(dataset="mnist1d", data_options={"num_samples": 5000}, model="cnn", kernel_size=5, batch_size=64, budget=8)


def configs(n: int, dropout: float | None = None, batchnorm: bool = False,
            cnn: tuple[int, int] | None = None) -> list[TrialConfig]:
    rng = random.Random(0)
    if cnn:
        shape = dict(CNN, depth=cnn[0], width=cnn[1])
    else:
        model = {} if dropout is None and not batchnorm else {
            "model": "benchmarks.bench_population:variant_mlp",
            "model_options": {"dropout": dropout, "batchnorm": batchnorm}}
        shape = dict(dataset="digits", **{"model": "mlp", **model}, depth=2, width=64, batch_size=64, budget=8)
    return [TrialConfig(**shape, schedule="cosine", optimizer=rng.choice(["sgd", "sgd_momentum", "adam"]),
                        lr=10 ** rng.uniform(-3, -1), momentum=0.9, init=rng.choice(["he", "xavier"]), seed=i)
            for i in range(n)]


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def to_target(engine: str, k: int, seed: int, target: float, device: torch.device,
              n_trials: int = 48) -> tuple[tuple[float, int] | None, float]:
    """((seconds, trials) until the best search value first reached `target`, or None if it never did;
    the seconds the whole search took)."""
    from study.config import load_config
    from study.records import trials
    from study.runner import run_study

    overrides = [("study.n_trials", n_trials), ("study.confirm.seeds", 0), ("study.sampler.seed", seed),
                 ("study.engine", engine), ("study.name", f"target-{engine}-{k}-{seed}")]
    cfg = load_config("quick", overrides + ([("study.population", k)] if engine == "population" else []))
    with tempfile.TemporaryDirectory() as tmp:
        start = time.time()
        summary = run_study(cfg, f"sqlite:///{tmp}/s.db", device, checkpoint_root=Path(tmp), quiet=True)
        took = time.time() - start
        done = sorted((t for t in trials(summary.study) if t.datetime_complete), key=lambda t: t.datetime_complete)
    best = float("inf")
    for n, t in enumerate(done, 1):
        if t.value is not None and t.state.name == "COMPLETE":
            best = min(best, t.value)
        if best <= target:
            return (t.datetime_complete.timestamp() - start, n), took
    return None, took


def target_table(args, device: torch.device) -> None:
    print(f"{device}, {torch.get_num_threads()} threads: quick, 48 trials; time until the best val_loss <= "
          f"{args.to_target} (median over sampler seeds {list(range(args.seeds))})")
    to_target("population", 2, 0, args.to_target, device, n_trials=2)  # warm: imports and the data
    for engine, k in [("sequential", 1)] + [("population", k) for k in args.sizes if k > 1]:
        measured = [to_target(engine, k, seed, args.to_target, device) for seed in range(args.seeds)]
        runs, took = [r for r, _ in measured], [t for _, t in measured]
        reached = [r for r in runs if r is not None]
        times = ", ".join("never" if r is None else f"{r[0]:.1f} s ({r[1]} trials)" for r in runs)
        median = f"{statistics.median(r[0] for r in reached):6.1f} s" if len(reached) * 2 > len(runs) else "     -  "
        label = "sequential" if engine == "sequential" else f"population K={k}"
        print(f"{label:<17} median {median} | whole search {statistics.median(took):5.1f} s | {times}", flush=True)


@contextlib.contextmanager
def forward_by(wrap):
    """Populations built meanwhile run wrap(template) as their forward."""
    eager = study.population.fused_forward
    study.population.fused_forward = lambda template, streams=None: wrap(template, lambda t: eager(t, streams))
    try:
        yield
    finally:
        study.population.fused_forward = eager


def by_vmap(template, eager):
    layered, study.fused.forward_of = study.fused.forward_of, lambda template, streams=None: None
    try:
        return eager(template)
    finally:
        study.fused.forward_of = layered


def compile_table(args, device: torch.device) -> None:
    cache = DataCache()
    print(f"{device}, {torch.get_num_threads()} threads: one population, 8 epochs; eager against torch.compile")
    for k in args.sizes:
        row = []
        for compiled in (False, True):
            torch._dynamo.reset()
            first: list[float] = []
            start = time.perf_counter()

            def epoch_end(history, first=first, start=start):
                if not first:
                    first.append(time.perf_counter() - start)

            members = [prepare(c, device, cache=cache) for c in configs(k)]
            steps = sum(m.budget.total_iters for m in members)
            wrap = (lambda t, eager: torch.compile(eager(t))) if compiled else (lambda t, eager: eager(t))
            with forward_by(wrap):
                run_population(members, on_epoch=[epoch_end] + [None] * (k - 1))
            total = time.perf_counter() - start
            row.append((first[0], (total - first[0]) / (steps * 7 / 8) * 1e6))
        (e_first, e_step), (c_first, c_step) = row
        print(f"K={k:<3} first epoch: eager {e_first:6.2f} s, compiled {c_first:6.2f} s | after: eager "
              f"{e_step:6.1f} us/model-step, compiled {c_step:6.1f} (x{e_step / c_step:.2f})", flush=True)


class Ops(TorchDispatchMode):
    """Counts the tensor ops dispatched meanwhile that run a kernel (views only alias their input), a
    torch._foreach_* op as one per tensor of its list: so its CPU loop runs them, and so does CUDA's where
    the operands broadcast (one launch for many tensors needs them alike)."""

    def __init__(self):
        super().__init__()
        self.n = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.__name__.startswith("_foreach_"):
            self.n += len(args[0])
        else:
            self.n += not func.is_view
        return func(*args, **(kwargs or {}))


def ops_table(args, device: torch.device) -> None:
    cache = DataCache()
    cfgs = configs(max(args.sizes))
    steps = prepare(cfgs[0], device, cache=cache).budget.total_iters  # the same for every trial here
    with Ops() as ops:
        run_sequential(prepare(cfgs[0], device, cache=cache))
    print(f"{device}: tensor ops that run a kernel, per step (validation included), {steps} steps a trial")
    print(f"sequential:        {ops.n / steps:7.1f} per step")
    for k in args.sizes:
        with Ops() as ops:
            run_population([prepare(c, device, cache=cache) for c in cfgs[:k]])
        print(f"population K={k:<3}  {ops.n / steps:7.1f} per fused step, {ops.n / steps / k:6.1f} per model-step",
              flush=True)
    print("a stack rebuild at an epoch's end, where one member leaves and a new one joins:")
    for k in args.sizes:
        release, build = rebuild_ops(cfgs[:k] + configs(k + 1)[k:], device, cache)
        print(f"population K={k:<3}  {release + build:5d} ops (release {release}, build {build})", flush=True)


def rebuild_ops(cfgs: list[TrialConfig], device: torch.device, cache: DataCache) -> tuple[int, int]:
    """The ops of releasing a stack of len(cfgs) - 1 trained members, of which the first leaves, and of
    building the next one with a fresh member."""
    from study.population import _member, _Stack, _train

    members = [_member(prepare(c, device, cache=cache), None, None) for c in cfgs]
    stack = _Stack(members[:-1])
    _train(stack, 2)
    stack.sync()  # as at an epoch's end
    with Ops() as release:
        stack.release(staying=members[1:-1])
    with Ops() as build:
        stack = _Stack(members[1:])
    stack.release()
    return release.n, build.n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--trials", type=int, default=64)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--to-target", type=float, metavar="VAL_LOSS",
                        help="time studies until their best val_loss reaches this instead")
    parser.add_argument("--seeds", type=int, default=3, help="sampler seeds per engine, with --to-target")
    parser.add_argument("--compile", action="store_true", help="eager against torch.compile of the fused forward")
    parser.add_argument("--vmap", action="store_true", help="each K with the vmap forward too")
    parser.add_argument("--ops", action="store_true", help="count the tensor ops per step instead of timing")
    parser.add_argument("--dropout", type=float, metavar="P", help="the MLP with dropout P after each hidden layer")
    parser.add_argument("--batchnorm", action="store_true", help="the MLP with BatchNorm in each hidden layer")
    parser.add_argument("--cnn", type=int, nargs=2, metavar=("DEPTH", "WIDTH"),
                        help="lecture's 1-D CNN on MNIST-1D instead of the MLP")
    parser.add_argument("--checkpoints", action="store_true",
                        help="every trial saves a checkpoint each epoch, as `study run` does (in a temporary folder)")
    args = parser.parse_args()
    if args.cnn and (args.dropout is not None or args.batchnorm):
        parser.error("--dropout and --batchnorm vary the MLP, not --cnn's CNN")
    device = torch.device(args.device)
    if args.to_target is not None:
        return target_table(args, device)
    if args.compile:
        return compile_table(args, device)
    if args.ops:
        return ops_table(args, device)
    cache = DataCache()
    cfgs = configs(args.trials, args.dropout, args.batchnorm, args.cnn)
    steps = sum(prepare(c, device, cache=cache).budget.total_iters for c in cfgs)

    folder, runs = Path(tempfile.mkdtemp(prefix="bench-population-")), itertools.count()

    def saving() -> Checkpoints | None:  # a new folder each trial and run: nothing resumes
        return Checkpoints(folder / str(next(runs))) if args.checkpoints else None

    def sequential() -> None:
        for c in cfgs:
            run_sequential(prepare(c, device, cache=cache), checkpoints=saving())

    def population(k: int) -> None:
        for i in range(0, len(cfgs), k):
            group = cfgs[i:i + k]
            run_population([prepare(c, device, cache=cache) for c in group], checkpoints=[saving() for _ in group])

    timed(lambda: run_population([prepare(c, device, cache=cache) for c in cfgs[:4]]))  # warm
    base = timed(sequential)
    print(f"{device}, {torch.get_num_threads()} threads, {args.trials} trials, {steps // args.trials} steps each"
          + (", a checkpoint per trial and epoch" if args.checkpoints else "")
          + (f", dropout {args.dropout}" if args.dropout is not None else "")
          + (", BatchNorm" if args.batchnorm else "")
          + (f", lecture's CNN {args.cnn[0]} deep and {args.cnn[1]} wide" if args.cnn else ""))
    print(f"sequential:      {args.trials / base * 60:8.1f} trials/min {base / steps * 1e6:8.1f} us/model-step")
    for k in args.sizes:
        t = timed(lambda k=k: population(k))
        print(f"population K={k:<3} {args.trials / t * 60:8.1f} trials/min {t / steps * 1e6:8.1f} us/model-step"
              f"  x{base / t:.2f}", flush=True)
        if args.vmap:
            with forward_by(by_vmap):
                v = timed(lambda k=k: population(k))
            print(f"  by vmap        {args.trials / v * 60:8.1f} trials/min {v / steps * 1e6:8.1f} us/model-step"
                  f"  x{base / v:.2f} (study.fused x{v / t:.2f} of vmap)", flush=True)
    shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
