"""Where a study's time goes: imports, training steps, validation metrics and bookkeeping, for a fixed study.

    python -m benchmarks.bench_overhead                      # this checkout
    python -m benchmarks.bench_overhead --baseline 5c0158c   # and a git ref, measured in the same run
    python -m benchmarks.bench_overhead --storage journal    # Optuna's journal file instead of SQLite
    python -m benchmarks.bench_overhead --engine population --trials 64   # K trials at a time (K = 16 here)
    python -m benchmarks.bench_overhead --device cuda --engine population --trials 64   # on a GPU (K = 16)

The study is `quick` (an MLP on digits, the shipped pruner) with 30 trials of 20 epochs, one process, a
fresh SQLite file (the embedded default) or journal file, no confirmation runs, as issue 8 profiled it.
Each checkout runs in a fresh Python:
  imports      importing study.runner and what the run imports lazily (scikit-learn's data and metrics,
               torch._dynamo, which torch.optim imports on first use, and the RDB storage's SQLAlchemy
               and alembic), timed before the study starts;
  training     the step loop of every trial (forward, backward, optimizer and scheduler steps); with
               `--engine population`, the fused steps and each population's stacking and unstacking;
  metrics      validation at each epoch end (loss, accuracy, precision, recall, F1);
  checkpoints  each epoch's checkpoint file;
  reporting    each epoch's intermediate value and pruning decision (the storage);
  other        the rest of run_study: trials asked and told, configs, models, the final records and best.pt.
Bookkeeping is metrics + checkpoints + reporting + other; the figure to quote is bookkeeping / training.

  optuna alone the same trials replayed through bare Optuna, with no training and nothing of `study`: on a
               fresh storage of the same kind, each trial asked with its distributions (the space's sampler
               suggests them), each of its epochs reported with a pruning decision of the space's pruner,
               and told as it ended. It is what a hand-written Optuna script pays on that storage, and a
               floor for `study`'s reporting + other, which also store configs, histories and provenance.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LAZY = ["sklearn.model_selection", "sklearn.datasets", "sklearn.metrics", "torch._dynamo",
        # what Optuna imports when it opens an RDB storage (about 0.35 s here): imports, not bookkeeping
        "sqlalchemy.orm", "alembic.command", "alembic.config", "alembic.migration", "alembic.script"]


def _timed(owner, name: str, totals: dict, key: str) -> None:
    """Wrap owner.name so that the seconds spent inside it add to totals[key]."""
    inner = getattr(owner, name)

    @functools.wraps(inner)
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            totals[key] += time.perf_counter() - start

    setattr(owner, name, wrapper)


STORAGES = {"sqlite": "sqlite:///{}.db", "journal": "{}.log"}  # --storage: a URL from a path stem


# the function that trains, as each engine's caller looks it up: what it calls at epoch ends is timed apart
LOOPS = {"sequential": ("study.trial", "run_sequential"), "population": ("study.population", "_train_until_one_leaves")}


def measure(trials: int, epochs: int, storage: str = "sqlite", engine: str = "sequential",
            device: str = "cpu") -> dict[str, float]:
    """In this process: imports, then the study, with its parts timed."""
    import importlib

    start = time.perf_counter()
    import study.runner

    for module in LAZY:
        importlib.import_module(module)
    imports = time.perf_counter() - start

    import torch

    from study import checkpoints, population, trial
    from study.config import load_config
    from study.runner import run_study

    totals = dict.fromkeys(["loop", "metrics", "checkpoints", "reporting"], 0.0)
    _timed(importlib.import_module(LOOPS[engine][0]), LOOPS[engine][1], totals, "loop")
    _timed(importlib.import_module("study.engine"), "evaluate", totals, "metrics")  # a population's members alone
    _timed(population, "_validate", totals, "metrics")  # a population's members together
    _timed(checkpoints.Checkpoints, "save", totals, "checkpoints")
    _timed(trial.Attempt, "on_epoch", totals, "reporting")
    cfg = load_config("quick", [f"study.n_trials={trials}", "study.confirm.seeds=0", f"training.budget={epochs}",
                                f"study.engine={engine}"])
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        summary = run_study(cfg, STORAGES[storage].format(Path(tmp) / "b"), torch.device(device),
                            checkpoint_root=Path(tmp), quiet=True)
        total = time.perf_counter() - start
        if summary.stopped:  # no figures from a run whose trials failed (a device that is not there)
            raise SystemExit(f"the study stopped: {summary.stopped}")
        floor = optuna_alone(summary.study.get_trials(), cfg, STORAGES[storage].format(Path(tmp) / "floor"))
    # the loop's time includes what it calls at each epoch end
    training = totals["loop"] - totals["metrics"] - totals["checkpoints"] - totals["reporting"]
    other = total - totals["loop"]
    return {"package": str(Path(study.runner.__file__).parents[1]),  # which checkout was measured
            "imports": imports, "training": training, "metrics": totals["metrics"],
            "checkpoints": totals["checkpoints"], "reporting": totals["reporting"], "other": other, "total": total,
            "optuna": floor}


def optuna_alone(trials: list, cfg, url: str) -> float:
    """Seconds bare Optuna takes to ask, suggest, report, prune and tell these trials again (see above)."""
    import optuna

    from study.pruners import make_pruner
    from study.samplers import make_sampler
    from study.storage import open_storage

    s = cfg.study
    storage = open_storage(url)
    start = time.perf_counter()
    study = optuna.create_study(storage=storage, direction=s.direction, pruner=make_pruner(s.pruner, s.pruner_options),
                                sampler=make_sampler(s.sampler, s.sampler_seed, s.sampler_options, {}))
    for done in trials:
        trial = study.ask(fixed_distributions=done.distributions)
        for step, value in done.intermediate_values.items():
            trial.report(value, step)
            trial.should_prune()  # decided and paid for; the trial ends as it did in the study
        study.tell(trial, done.value if done.state == optuna.trial.TrialState.COMPLETE else None, state=done.state)
    return time.perf_counter() - start


def in_fresh_python(checkout: Path, options: dict) -> dict[str, float]:
    """measure() in a new Python that imports `study` from `checkout` (this file is run by its path, so
    that nothing puts this checkout's package ahead of it)."""
    args = [sys.executable, __file__, "--measure", json.dumps(options)]
    path = os.pathsep.join(filter(None, [str(checkout), os.environ.get("PYTHONPATH")]))  # and what it had (wheels)
    out = subprocess.run(args, cwd=checkout, env={**os.environ, "PYTHONPATH": path}, capture_output=True, text=True)
    if out.returncode:  # the measuring Python's own last words, not a CalledProcessError
        raise SystemExit(f"{checkout}: " + (out.stderr.strip().splitlines() or ["failed"])[-1])
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert Path(result.pop("package")).is_relative_to(checkout), result
    return result


def line(label: str, t: dict[str, float]) -> str:
    book = t["metrics"] + t["checkpoints"] + t["reporting"] + t["other"]
    return (f"{label:>10}: imports {t['imports']:5.2f} s | training {t['training']:5.2f} s | metrics "
            f"{t['metrics']:4.2f} | checkpoints {t['checkpoints']:4.2f} | reporting {t['reporting']:4.2f} | "
            f"other {t['other']:4.2f} | bookkeeping / training {book / t['training']:.0%} | "
            f"optuna alone {t['optuna']:4.2f} s ({t['optuna'] / t['training']:.0%} of training)")


def main() -> None:
    if sys.argv[1:2] == ["--measure"]:
        print(json.dumps(measure(**json.loads(sys.argv[2]))))
        return
    sys.path.append(str(Path(__file__).resolve().parents[1]))
    from benchmarks.baseline import ROOT, checkout

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--baseline", help="a git ref to measure in the same run, from a temporary worktree")
    parser.add_argument("--storage", choices=list(STORAGES), default="sqlite")
    parser.add_argument("--engine", choices=list(LOOPS), default="sequential")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    options = {k: getattr(args, k) for k in ("trials", "epochs", "storage", "engine", "device")}
    results = []
    if args.baseline:
        with checkout(args.baseline) as path:
            results.append((args.baseline, in_fresh_python(path, options)))
    results.append(("this", in_fresh_python(ROOT, options)))
    print(f"quick, {args.trials} trials x {args.epochs} epochs, one process, {args.storage}, {args.engine} engine, "
          f"{args.device}, {os.cpu_count()} cores:")
    for label, t in results:
        print(line(label, t))


if __name__ == "__main__":
    main()
