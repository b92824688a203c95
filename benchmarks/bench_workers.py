"""Many workers on one study: the exact-target protocol, directly on PostgreSQL and through the gRPC proxy.

    python -m benchmarks.bench_workers [--workers 50 100 200] [--modes direct proxy] [--json FILE]

Each worker is a real process that runs the runner's own bookkeeping path (study.worker.Worker: ask, the
target check, a heartbeat, one report and prune decision per epoch, tell, surplus) against the real
server. Only training is replaced, by a seeded sleep and a loss curve, so no worker imports torch and
this machine can hold hundreds of them. Every storage call a worker makes is timed.

Per run it prints the finished count against the target (exactly the target, every time), trial numbers
run by more than one worker (none), surplus trials, workers that could not connect or failed, trials
per second, and the p50 and p99 of a storage round-trip. Each run uses a database of its own, created
and dropped here; the proxy is `python -m study serve-storage`, started and stopped here.
"""
from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

SERVER = "postgresql://postgres@127.0.0.1"
NAME = "sim"
_TIMED = ("create_new_trial", "set_trial_param", "set_trial_state_values", "set_trial_intermediate_value",
          "set_trial_user_attr", "set_trial_system_attr", "get_trial", "get_all_trials", "get_study_id_from_name",
          "get_study_directions", "get_study_user_attrs", "get_study_system_attrs", "record_heartbeat",
          "_get_stale_trial_ids", "get_trial_id_from_study_id_trial_number")


def _timed(storage: Any, latencies: list[float]) -> None:
    """Time every storage call this process makes: the round-trip to the server (or the proxy)."""
    for name in _TIMED:
        method = getattr(storage, name, None)
        if method is None:
            continue

        def timed(*args, __method=method, **kwargs):
            start = time.perf_counter()
            try:
                return __method(*args, **kwargs)
            finally:
                latencies.append(time.perf_counter() - start)

        setattr(storage, name, timed)


def _worker(url: str, target: int, epochs: int, epoch_s: float, heartbeat_s: int, seed: int, out: str) -> None:
    """One simulated worker process: the real Worker loop, with a sleep for training."""
    import warnings

    import optuna

    from study import records
    from study.storage import open_storage
    from study.worker import Worker, report_epochs

    warnings.filterwarnings("ignore")
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    latencies: list[float] = []
    ran: list[int] = []
    result: dict[str, Any] = {"error": None}
    try:
        storage = open_storage(url, heartbeat_s)
        _timed(storage, latencies)
        study = optuna.load_study(study_name=NAME, storage=storage, sampler=optuna.samplers.RandomSampler(seed=seed),
                                  pruner=optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1))

        def objective(trial: optuna.Trial) -> float:
            ran.append(trial.number)
            lr = trial.suggest_float("lr", 1e-4, 1e-1, log=True)
            rng = random.Random(trial.number)
            history: list[dict] = []
            reported: set[int] = set()
            try:
                for epoch in range(epochs):
                    time.sleep(epoch_s * rng.uniform(0.5, 1.5))  # "training"
                    loss = abs(math.log10(lr) + 2) + 1 / (epoch + 1) + rng.gauss(0, 0.05)
                    history.append({"epoch": epoch, "val_loss": loss})
                    report_epochs(trial, history, "val_loss", reported)
            finally:  # what the runner stores at a trial's end, pruned or not
                records.write(trial, history=history)
            return history[-1]["val_loss"]

        Worker(study, target, objective).run()
    except Exception as exc:  # a worker that cannot connect, or dies of the storage: counted, not hidden
        cause = exc.__cause__ or exc.__context__ or exc  # Optuna wraps the driver's error; say what it was
        result["error"] = f"{type(exc).__name__}: {_first_line(cause)}"
    result.update(ran=ran, latencies=latencies, torch="torch" in sys.modules)
    Path(out).write_text(json.dumps(result))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"


@contextmanager
def database() -> Iterator[str]:
    """A PostgreSQL database of this run's own, dropped afterwards."""
    import psycopg

    name = f"sim_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as con:
        con.execute(f"CREATE DATABASE {name}")
    try:
        yield f"{SERVER}/{name}"
    finally:
        with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as con:
            con.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def proxy(db_url: str) -> Iterator[str]:
    """`python -m study serve-storage` in front of `db_url`, as a real process; its grpc:// URL."""
    port = free_port()
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    server = subprocess.Popen([sys.executable, "-m", "study", "serve-storage", "--storage", db_url,
                               "--port", str(port)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)
    try:
        line = server.stdout.readline()  # printed once it is about to serve
        if "gRPC storage proxy" not in line:
            raise RuntimeError(f"the proxy did not start: {line}{server.stdout.read()}")
        yield f"grpc://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=30)


def simulate(url: str, db_url: str, workers: int, target: int, epochs: int = 4, epoch_s: float = 0.2,
             heartbeat_s: int = 2) -> dict[str, Any]:
    """Run `workers` simulated workers on a new study at `url` (the database itself at `db_url`)."""
    import optuna

    from study.records import status_of
    from study.storage import open_storage

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    optuna.create_study(study_name=NAME, storage=open_storage(db_url), direction="minimize")
    ctx = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp:
        outs = [str(Path(tmp) / f"{i}.json") for i in range(workers)]
        procs = [ctx.Process(target=_worker, args=(url, target, epochs, epoch_s, heartbeat_s, i, outs[i]))
                 for i in range(workers)]
        start = time.perf_counter()
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        wall = time.perf_counter() - start
        results = [json.loads(Path(o).read_text()) if Path(o).is_file() else {"error": "died", "ran": [],
                                                                               "latencies": [], "torch": False}
                   for o in outs]
    trials = optuna.load_study(study_name=NAME, storage=open_storage(db_url)).get_trials(deepcopy=False)
    statuses = [status_of(t) for t in trials]
    finished = sum(s in ("complete", "pruned", "diverged") for s in statuses)
    ran = [n for r in results for n in r["ran"]]
    latencies = sorted(x for r in results for x in r["latencies"])
    done = [t.datetime_complete for t in trials if t.datetime_complete]
    first = min((t.datetime_start for t in trials if t.datetime_start), default=None)
    span = (max(done) - first).total_seconds() if done and first else math.nan
    errors = [r["error"] for r in results if r["error"]]
    return {"workers": workers, "target": target, "finished": finished, "duplicates": len(ran) - len(set(ran)),
            "surplus": statuses.count("surplus"), "failed": statuses.count("failed"),
            "worker_errors": len(errors), "connection_errors": sum("connect" in e.lower() or "too many" in e.lower()
                                                                   for e in errors),
            "first_error": errors[0] if errors else "", "errors": sorted(set(errors)),
            "torch_imported": any(r["torch"] for r in results),
            "trials_per_s": finished / span if span else math.nan, "wall_s": wall,
            "p50_ms": 1000 * latencies[len(latencies) // 2] if latencies else math.nan,
            "p99_ms": 1000 * latencies[int(len(latencies) * 0.99)] if latencies else math.nan,
            "storage_calls": len(latencies)}


def run(mode: str, workers: int, trials_per_worker: int, epochs: int) -> dict[str, Any]:
    with database() as db_url:
        if mode == "direct":
            row = simulate(db_url, db_url, workers, workers * trials_per_worker, epochs)
        else:
            with proxy(db_url) as url:
                row = simulate(url, db_url, workers, workers * trials_per_worker, epochs)
    return {"mode": mode, **row}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[50, 100, 200])
    parser.add_argument("--modes", nargs="+", default=["direct", "proxy"], choices=["direct", "proxy"])
    parser.add_argument("--trials-per-worker", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    rows = []
    print(f"{os.cpu_count()} cores; target = workers x {args.trials_per_worker}; {args.epochs} epochs of ~0.2 s")
    print(f"{'mode':<7}{'workers':>8}{'target':>7}{'finished':>9}{'dupl.':>6}{'surplus':>8}{'failed':>7}"
          f"{'w.err':>6}{'conn.err':>9}{'trials/s':>9}{'p50 ms':>8}{'p99 ms':>8}  first error")
    for n in args.workers:
        for mode in args.modes:
            r = run(mode, n, args.trials_per_worker, args.epochs)
            rows.append(r)
            print(f"{r['mode']:<7}{r['workers']:>8}{r['target']:>7}{r['finished']:>9}{r['duplicates']:>6}"
                  f"{r['surplus']:>8}{r['failed']:>7}{r['worker_errors']:>6}{r['connection_errors']:>9}"
                  f"{r['trials_per_s']:>9.2f}"
                  f"{r['p50_ms']:>8.1f}{r['p99_ms']:>8.1f}  {r['first_error'][:80]}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
