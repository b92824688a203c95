"""Shared fixtures: a tiny synthetic search space, and running the CLI in-process or as a real process."""
from __future__ import annotations

import contextlib
import functools
import io
import os
import pty
import select
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

SYNTH_SPACE = """\
# Question: a tiny synthetic study for tests
study:
  name: synth
  question: a tiny synthetic study for tests
  n_trials: 3
  sampler: {name: random, seed: 0}
  pruner: {name: none}
  confirm: {seeds: 0}       # no confirmation phase here: tests/test_confirm.py has its own
data:
  name: synthetic
  options: {n_samples: 160, n_features: 8, n_classes: 3}
model:
  name: mlp
  depth: 1
  width: 16
training:
  batch_size: 32
  budget: 3
params:
  optimizer: {choices: [sgd_momentum, adam]}
  lr: {type: float, low: 1.0e-3, high: 1.0e-1, log: true}
  momentum: {type: float, low: 0.5, high: 0.9, when: {optimizer: [sgd_momentum]}}
"""


@pytest.fixture
def synth_space(tmp_path: Path) -> Path:
    path = tmp_path / "synth.yaml"
    path.write_text(SYNTH_SPACE)
    return path


@pytest.fixture
def write_space(tmp_path: Path):
    def write(text: str, name: str = "space.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text))
        return path
    return write


SLOW_MODEL = """\
import os
import time
import torch


class Slow(torch.nn.Module):
    \"\"\"A linear classifier that sleeps in every training step, so that a trial takes seconds.\"\"\"

    def __init__(self, input_shape, n_classes, delay):
        super().__init__()
        self.delay = delay
        self.linear = torch.nn.Linear(input_shape[0], n_classes)

    def forward(self, x):
        if torch.is_grad_enabled():
            time.sleep(self.delay)
        return self.linear(x)


def net(input_shape, n_classes, delay=None):
    # SLOW_DELAY=0: the rerun of a stopped run only has to finish, not to be stopped
    return Slow(input_shape, n_classes, float(os.environ.get("SLOW_DELAY", 0.05)) if delay is None else delay)
"""


def dropout_mlp(input_shape, n_classes, width=16, norm=None, own_forward=False):
    """A user's MLP with dropout after each hidden layer (and, with norm "batch" or "layer", that norm before
    its first activation), by reference (`conftest:dropout_mlp`); with own_forward, a module whose forward
    calls it (which vmap runs, where study.fused runs the Sequential)."""
    import torch

    norm = {None: [], "batch": [torch.nn.BatchNorm1d(width)], "layer": [torch.nn.LayerNorm(width)]}[norm]
    body = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(input_shape[0], width), *norm, torch.nn.ReLU(),
                               torch.nn.Dropout(0.3), torch.nn.Linear(width, width), torch.nn.Tanh(),
                               torch.nn.Dropout(0.2), torch.nn.Linear(width, n_classes))
    return own_forward_class()(body) if own_forward else body


@functools.cache
def own_forward_class():
    """A module whose forward calls its body: vmap runs it, where study.fused runs the Sequential body.
    One class for every call (stack_module_state wants the members' classes the same), made on first use
    so that importing conftest does not import torch."""
    import torch

    class Own(torch.nn.Module):
        def __init__(self, body):
            super().__init__()
            self.body = body

        def forward(self, x):
            return self.body(x)

    return Own


@pytest.fixture
def slow_space(tmp_path, write_space):
    """The synthetic space with a model that takes about 0.15 s per epoch, 8 epochs a trial."""
    (tmp_path / "slowmodel.py").write_text(SLOW_MODEL)
    return write_space(SYNTH_SPACE.replace("name: mlp", "name: slowmodel:net").replace("budget: 3", "budget: 8"),
                       "slow.yaml")


def start(space: Path, cwd: Path, *args: str, session: bool = False, storage: str = "sqlite:///s.db",
          **env: str) -> subprocess.Popen:
    """`study run` as a real process; with `session`, in a process group of its own, as a terminal's job."""
    return subprocess.Popen([sys.executable, "-m", "study", "run", str(space), "--storage", storage,
                             "--heartbeat", "1", "--no-report", *args], cwd=cwd,
                            env=cli_env(PYTHONPATH=str(cwd), **env), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=session)


class OnTerminal:
    """`python -m study ARGS` as the job of a terminal of its own (a pseudo-terminal), which it writes to;
    closing the terminal hangs it up, as a closed window or ssh session does."""

    def __init__(self, cwd: Path, *args: str):
        argv = [sys.executable, "-m", "study", *args]
        env = cli_env(PYTHONPATH=str(cwd))
        self.pid, self.master = pty.fork()  # the child leads a new session, the terminal its controlling one
        if self.pid == 0:
            try:
                os.chdir(cwd)
                os.execve(argv[0], argv, env)
            finally:
                os._exit(127)
        self.returncode, self.output, self.reading = None, bytearray(), True
        self.reader = threading.Thread(target=self._read, daemon=True)  # a full terminal would block its writes
        self.reader.start()

    def _read(self) -> None:
        while self.reading:
            if select.select([self.master], [], [], 0.05)[0]:
                try:
                    self.output += os.read(self.master, 65536)
                except OSError:  # the child has gone
                    return

    def poll(self) -> int | None:
        if self.returncode is None and (done := os.waitpid(self.pid, os.WNOHANG))[0]:
            self.returncode = os.waitstatus_to_exitcode(done[1])
        return self.returncode

    def communicate(self) -> tuple[str, str]:  # what wait helpers show when the run ended early
        return self.output.decode(errors="replace"), ""

    def hang_up(self) -> None:
        """The terminal closes: the kernel signals the session's leader, and a shell its job's whole group."""
        self.reading = False
        self.reader.join()
        os.close(self.master)
        time.sleep(0.5)  # the shell's SIGHUP comes after the kernel's: a second one, which is no second request
        os.killpg(self.pid, signal.SIGHUP)

    def wait(self, timeout: float) -> int:
        end = time.monotonic() + timeout
        while self.poll() is None:
            assert time.monotonic() < end, "the run did not stop"
            time.sleep(0.05)
        return self.returncode


# start()'s own flags, for the rerun of a killed or stopped run through call_cli.
RERUN = ("--storage", "sqlite:///s.db", "--heartbeat", "1", "--no-report")


def wait_for(cwd: Path, pattern: str, proc: subprocess.Popen, timeout: float = 90) -> Path:
    """The first file matching the glob `pattern` under `cwd`, waiting while `proc` runs."""
    end = time.monotonic() + timeout
    while True:
        found = sorted(cwd.glob(pattern))
        if found:
            return found[0]
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < end, f"{pattern} never appeared"
        time.sleep(0.05)


def trials(cwd: Path, storage: str | None = None, name: str = "synth") -> list:
    import optuna

    return optuna.load_study(study_name=name, storage=storage or f"sqlite:///{cwd / 's.db'}").get_trials()


def finished(ts) -> list:
    from study.records import FINISHED_STATES

    return [t for t in ts if t.state in FINISHED_STATES]


@contextlib.contextmanager
def tmpfs(folder: Path, options: str):
    """A real tmpfs mounted at `folder` (read-only, or small enough to fill); skips where mounting is not
    allowed (it needs root, as CI has)."""
    folder.mkdir(exist_ok=True)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield folder
    finally:
        # lazily: the test's own process may still hold a file there open (a storage's pooled connection)
        subprocess.run(["umount", "--lazy", str(folder)], check=True)


PG = dict(host="127.0.0.1", port=5432, user="postgres")


@pytest.fixture
def pg_url():
    """A fresh database on the real server, dropped afterwards. No server is a failure, never a skip."""
    import uuid

    import psycopg

    name = f"study_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(dbname="postgres", autocommit=True, **PG) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(dbname="postgres", autocommit=True, **PG) as admin:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
            admin.execute(f'DROP DATABASE "{name}"')


@pytest.fixture
def redis_url():
    """An empty database of the real Redis server, claimed for this test and emptied afterwards. Redis has
    no CREATE DATABASE: of its numbered databases (16 by default) the test takes the first that holds no
    key, or only what a killed test of ours left (marked), by setting a claim key that only one process
    can set. No server is a failure, never a skip."""
    import uuid

    import redis

    claim, mark, token = "study-test:claim", "study-test:mark", uuid.uuid4().hex
    for db in range(1, 16):
        client = redis.Redis(host="127.0.0.1", port=6379, db=db)
        if not client.set(claim, token, nx=True, ex=3600):  # another test's, for the hour one may take
            continue
        if client.dbsize() == 1 or client.exists(mark):
            client.flushdb()
            client.set(claim, token, ex=3600)
            client.set(mark, 1)
            break
        client.delete(claim)  # someone else's data: not ours to empty
    else:
        pytest.fail("no empty Redis database at 127.0.0.1:6379")
    try:
        yield f"redis://127.0.0.1:6379/{db}"
    finally:
        client.flushdb()


def cli_env(**extra: str) -> dict[str, str]:
    path = [str(ROOT), extra.pop("PYTHONPATH", ""), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, path)),
           "PYTHONUNBUFFERED": "1"}
    env.update(extra)
    return env


def run_cli(*args: str, cwd: Path, timeout: float = 240, **env: str) -> subprocess.CompletedProcess:
    """`python -m study ...` as a real process, with this checkout on the path."""
    return subprocess.run([sys.executable, "-m", "study", *args], cwd=cwd, env=cli_env(**env),
                          capture_output=True, text=True, timeout=timeout)


def call_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """`study ...` through main() in this process, in `cwd` and with it on the path as `python -m study` has
    it: what run_cli checks, less the 5-9 s a new process spends importing torch, its compiler and
    scikit-learn. For what a command does and prints; run_cli stays for what only a process shows (signals,
    kills, the interpreter's own output, an installed package)."""
    import torch

    from study.cli import main
    from study.storage import _close_sqlite

    out, err, before, home = io.StringIO(), io.StringIO(), set(sys.modules), os.getcwd()
    threads = torch.get_num_threads()  # a run sets them for its trials (threads.py)
    os.chdir(cwd)
    sys.path.insert(0, str(cwd))
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(args))
            except SystemExit as exc:  # argparse's refusal: its usage line and exit 2, as a process has them
                code = exc.code
    finally:
        _close_sqlite()  # as a process's exit does: the WAL merged into the file, whenever the GC runs
        os.chdir(home)
        sys.path.remove(str(cwd))
        torch.set_num_threads(threads)
        for name in set(sys.modules) - before:  # a user module of this folder; the next test may have its own
            if str(getattr(sys.modules[name], "__file__", None) or "").startswith(str(cwd) + os.sep):
                del sys.modules[name]
    return subprocess.CompletedProcess(["study", *args], code, out.getvalue(), err.getvalue())


def scalar_reads():
    """A context manager whose `n` counts the ops dispatched meanwhile that read a tensor's value to the host
    (.item(), float(), bool(), a mask's nonzero): on a GPU each makes the host wait for the device. CPU
    tests count them where test_cuda.py counts the syncs themselves, which needs a GPU. (A CPU tensor's
    .item(), such as Adam's step counter, counts here but is no sync on a GPU.)"""
    from torch.utils._python_dispatch import TorchDispatchMode

    class ScalarReads(TorchDispatchMode):
        READS = ("_local_scalar_dense", "nonzero", "masked_select", "unique", "_unique2")
        n = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.n += func.__name__.split(".")[0] in self.READS
            return func(*args, **(kwargs or {}))

    return ScalarReads()


def make_study(n: int, *, storage=None, name: str = "made", statuses: tuple = ("complete",), epochs: int = 4,
               seed: int = 0, **attrs):
    """A study of `n` trials added through Optuna's API, with the user attrs a real run stores
    (config, history, budget), cycling through `statuses`. For report tests that need many trials fast."""
    import math
    import random

    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution
    from optuna.trial import TrialState

    from study import records
    from study.config import TrialConfig

    rng = random.Random(seed)
    study = optuna.create_study(storage=storage, study_name=name, direction="minimize")
    records.write_study(study, **{"metric": "val_loss", "scientific": ["optimizer", "batch_size"],
                                  "dataset": "synthetic", "model": "mlp", "question": "made-up question", **attrs})
    dists = {"optimizer": CategoricalDistribution(["sgd", "adam"]), "lr": FloatDistribution(1e-5, 1.0, log=True),
             "batch_size": CategoricalDistribution([16, 32, 64]),
             "schedule": CategoricalDistribution(["constant", "cosine"])}
    trials = []
    for i in range(n):
        status = statuses[i % len(statuses)]
        params = {"optimizer": rng.choice(["sgd", "adam"]), "lr": 10 ** rng.uniform(-5, 0),
                  "batch_size": rng.choice([16, 32, 64]), "schedule": rng.choice(["constant", "cosine"])}
        cfg = TrialConfig(**params, budget_unit="samples", budget=3200)
        final = 0.2 + abs(math.log10(params["lr"]) + 2) * 0.3 + rng.random() * 0.1
        n_epochs = epochs if status == "complete" else max(1, epochs // 2)
        history = [{"epoch": e, "iteration": (e + 1) * 10, "samples": (e + 1) * 10 * params["batch_size"],
                    "train_loss": final + 1 / (e + 1) - 0.05, "val_loss": final + 1 / (e + 1) - 1 / epochs,
                    "val_accuracy": 0.9, "val_precision": 0.9,
                    "val_recall": 0.9, "val_f1": 0.9, "lr": params["lr"], "wall_time": e * 0.1}
                   for e in range(n_epochs)]
        user_attrs = records.attrs(config=cfg.to_dict(), history=history,
                                   budget={"total_iters": 3200 // params["batch_size"], "iters_per_epoch": 10,
                                           "samples_seen": 3200})
        if status == "diverged":
            history[-1]["val_loss"] = math.inf
            user_attrs |= records.attrs(diverged={"reason": "non-finite loss", "step": 20})
        if status == "failed":
            user_attrs = records.attrs(error="RuntimeError: <b>boom</b>")
        state = {"complete": TrialState.COMPLETE, "pruned": TrialState.PRUNED, "diverged": TrialState.PRUNED,
                 "failed": TrialState.FAIL}[status]
        trials.append(optuna.trial.create_trial(
            state=state, params=params, distributions=dists, user_attrs=user_attrs,
            value=history[-1]["val_loss"] if status == "complete" else None,
            intermediate_values={h["epoch"]: h["val_loss"] for h in history} if status != "failed" else None))
    study.add_trials(trials)
    return study


def confirmed_study(values_of: dict, searched=(("a", 0.2), ("b", 0.25)), verified: dict | None = None,
                    scientific=("opt",)):
    """Search trials 0 (opt a, 0.2) and 1 (opt b, 0.25), or `searched` (opt, value) pairs; trial n confirmed
    with values_of[n] and verified with verified[n] (confirm.py's verification runs), a value over 2 at
    chance accuracy (10 classes), as a seed that did not learn ends. `scientific=()`: a study of one arm."""
    import optuna
    from optuna.distributions import CategoricalDistribution
    from optuna.trial import TrialState, create_trial

    from study import records
    from study.verdict import decide

    study = optuna.create_study()
    records.write_study(study, scientific=list(scientific), metric="val_loss")
    dists = {"opt": CategoricalDistribution(list(dict.fromkeys(["a", "b"] + [opt for opt, _ in searched])))}
    for opt, value in searched:
        study.add_trial(create_trial(state=TrialState.COMPLETE, value=value, params={"opt": opt}, distributions=dists,
                                     user_attrs=records.attrs(config={"opt": opt})))
    runs = [(of, {"of": of, "seed": seed}, value) for of, values in values_of.items()
            for seed, value in enumerate(values)]
    runs += [(of, {"of": of, "seed": 500 + seed, "verify": True}, value) for of, values in (verified or {}).items()
             for seed, value in enumerate(values)]
    for of, run, value in runs:
        study.add_trial(create_trial(
            state=TrialState.COMPLETE, value=value, params=study.trials[of].params, distributions=dists,
            user_attrs=records.attrs(confirm=run, config=study.trials[of].user_attrs["config"],
                                     budget={"n_classes": 10},
                                     history=[{"epoch": 0, "val_accuracy": 0.1 if value > 2 else 0.9}])))
    records.write_study(study, verdict=decide(records.trials(study), list(scientific), "minimize", "val_loss"))
    return study
