"""What does a storage cost per trial? The bookkeeping of one trial (ask, 10 epoch reports and history
writes, tell) without training, for each storage kind, against Optuna's in-memory storage.

    python -m benchmarks.bench_storage [--trials 40]

PostgreSQL is the server at 127.0.0.1:5432; a database is created for the run and dropped after.
"""
from __future__ import annotations

import argparse
import tempfile
import time
import uuid
import warnings
from pathlib import Path

import optuna

from study.storage import open_storage

EPOCHS = 10


def per_trial_ms(storage: optuna.storages.BaseStorage, n_trials: int) -> float:
    study = optuna.create_study(storage=storage, study_name=f"bench-{uuid.uuid4().hex[:6]}")
    start = time.perf_counter()
    for _ in range(n_trials):
        trial = study.ask()
        x = trial.suggest_float("lr", 1e-5, 1e-1, log=True)
        history = []
        for epoch in range(EPOCHS):
            trial.report(x / (epoch + 1), epoch)
            history.append({"epoch": epoch, "val_loss": x, "train_loss": x, "lr": x, "wall_time": 0.1})
            trial.set_user_attr("history", history)
        study.tell(trial, x)
    return (time.perf_counter() - start) / n_trials * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=40)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", message="Heartbeat of storage")  # ask/tell here, on purpose
    with tempfile.TemporaryDirectory() as tmp:
        kinds = {"in-memory": optuna.storages.InMemoryStorage(),
                 "sqlite (WAL)": open_storage(f"sqlite:///{Path(tmp) / 'b.db'}"),
                 "journal file": open_storage(str(Path(tmp) / "b.log"))}
        pg = _postgres()
        if pg:
            kinds["postgresql"] = open_storage(pg[0])
        try:
            base = per_trial_ms(kinds["in-memory"], args.trials)
            for name, storage in kinds.items():
                ms = base if name == "in-memory" else per_trial_ms(storage, args.trials)
                print(f"{name:<14} {ms:8.2f} ms per trial ({EPOCHS} epochs)  x{ms / base:.1f} in-memory")
        finally:
            if pg:
                pg[1]()


def _postgres():
    try:
        import psycopg

        name = f"study_bench_{uuid.uuid4().hex[:8]}"
        admin = psycopg.connect(host="127.0.0.1", user="postgres", dbname="postgres", autocommit=True)
        admin.execute(f'CREATE DATABASE "{name}"')
    except Exception as exc:  # a benchmark reports what it can measure
        print(f"postgresql: skipped ({exc})")
        return None

    def drop() -> None:
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
        admin.execute(f'DROP DATABASE "{name}"')

    return f"postgresql://postgres@127.0.0.1:5432/{name}", drop


if __name__ == "__main__":
    main()
