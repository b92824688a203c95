"""Trials left RUNNING by a worker that is gone: found at once where the worker ran on this machine, by the
heartbeat on RDB storages (fail_dead), and on storages without one (journal files) by `run --retry-stale`
(retry_stale). Either way the trial is failed, marked `interrupted` and `stale`, and queued again, so that
every storage counts it alike (a trial whose tries died more than MAX_RETRY times is given up: it fails
with that as its error).

    >>> study = optuna.create_study()
    >>> records.write(study.ask(), worker=worker_identity())   # who runs it: host, boot, pid namespace, pid, start
    >>> alive_here(study.trials[0])        # True / False on this host, None elsewhere
    True
    >>> retry_stale(study)                 # fails, marks and queues again those whose worker is gone
    []

A worker that ran on this machine is known alive or gone (alive_here), on any storage. Elsewhere, RDB
storages tell by Optuna's heartbeat; a journal storage cannot tell a dead worker from a live one, so a
run there that meets such trials says so and exits non-zero, and `run --retry-stale` fails and re-queues
them (never one whose worker is alive on this machine). A re-queued trial keeps its first attempt's
number, so it resumes from that attempt's checkpoints.
"""
from __future__ import annotations

import datetime
import os
import socket
from collections import Counter
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from study import records
from study.records import TrialRecord

MAX_RETRY = 2  # a dead worker's trial is retried this often: one that kills its worker (out of memory) would forever
# A worker killed between Optuna's ask and its first heartbeat left a trial that the heartbeat never sees
# (Optuna skips trials without one) and that names no worker: it held its slot for good, and a rerun
# waited for it forever. A live worker names itself at once, so a nameless trial this many heartbeat
# intervals old is dead: twice the grace period, against clocks that differ between machines.
NAMELESS_AFTER = 6


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), to tell a reused pid apart."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _read(path: str, link: bool = False) -> str | None:
    try:
        return os.readlink(path) if link else Path(path).read_text().strip()
    except OSError:
        return None


# Which kernel boot and pid namespace this process runs in (Linux): a pid is known dead only within both.
# Two machines may share a host name (images cloned with one), and containers that share it (`--network
# host`) each have their own pid namespace, where another's pids are not visible.
_KERNEL = {"boot": _read("/proc/sys/kernel/random/boot_id"), "pidns": _read("/proc/self/ns/pid", link=True)}


def worker_identity() -> dict[str, Any]:
    return {"host": socket.gethostname(), **_KERNEL, "pid": os.getpid(), "started": _start_time(os.getpid())}


def alive_here(trial: optuna.trial.FrozenTrial) -> bool | None:
    """Whether the worker that runs `trial` is alive: known only on the host, in the boot and the pid
    namespace, that it ran in."""
    who = TrialRecord.of(trial).worker
    if not isinstance(who, dict) or who.get("host") != socket.gethostname():
        return None
    if any(who.get(k) != v for k, v in _KERNEL.items()):  # another machine's, or a container's, or recorded before
        return None
    pid = who.get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return who.get("started") is None or who.get("started") == _start_time(pid)


def describe(trial: optuna.trial.FrozenTrial) -> str:
    who = TrialRecord.of(trial).worker
    state = {True: "alive", False: "gone", None: "unknown"}[alive_here(trial)]
    if isinstance(who, dict):
        return f"trial {trial.number} (worker pid {who.get('pid')!r} on {who.get('host')!r}, {state})"
    return f"trial {trial.number} (worker unknown)"


def stale_message(running: list[optuna.trial.FrozenTrial]) -> str:
    shown = ", ".join(describe(t) for t in running[:5]) + (f" and {len(running) - 5} more" if len(running) > 5 else "")
    return (f"{len(running)} trial(s) are marked running in a storage without a heartbeat, which cannot tell a "
            f"dead worker from a live one: {shown}. If no other worker is running them, rerun with --retry-stale "
            "to fail and re-queue them")


def retry_stale(study: optuna.Study) -> list[int]:
    """Fail every running trial whose worker is not alive on this machine, marked `interrupted` and
    `stale`, and queue it again, as fail_dead does (MAX_RETRY included); return their numbers."""
    return _fail_each(study, [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                              if not alive_here(t)])


def fail_dead(study: optuna.Study, running: list[FrozenTrial] = (), heartbeat: bool = True) -> list[int]:
    """Fail, mark and queue again the trials of dead workers: those of `running` whose worker is known gone
    (alive_here), on any storage, and with `heartbeat` (an RDB storage's) those the heartbeat found silent.
    A run killed and started again on one machine so retries its trials at once, instead of waiting out
    the heartbeat's grace period, or, on a journal, for `--retry-stale`. With `heartbeat`, a trial that
    names no worker NAMELESS_AFTER intervals after it started is dead too.
    Optuna's fail_stale_trials, which this replaces, failed a dead worker's trial unmarked: it counted as
    failed, with no error, and the report took its span, which ends when another worker found it dead (30 s
    or a day later), for training time; its callback copied every user attr into the retry, the dead
    try's engine record too. Here the retry is queued as an interrupted trial's is, unless its tries have
    died more than MAX_RETRY times: then it fails with that as its error. Returns the numbers failed here."""
    storage = study._storage
    silent = set(storage._get_stale_trial_ids(study._study_id)) if heartbeat else set()
    dead = [storage.get_trial(i) for i in silent]
    # a trial that names no worker, started before this, is dead too (NAMELESS_AFTER)
    nameless_before = datetime.datetime.now() - datetime.timedelta(
        seconds=NAMELESS_AFTER * storage.get_heartbeat_interval()) if heartbeat else None
    dead += [t for t in running if t._trial_id not in silent and t.state == TrialState.RUNNING
             and (alive_here(t) is False or _nameless(t, nameless_before))]
    return _fail_each(study, dead)


def _nameless(trial: FrozenTrial, before: datetime.datetime | None) -> bool:
    """Whether `trial` names no worker and started before `before` (None: never so)."""
    return (before is not None and TrialRecord.of(trial).worker is None and trial.datetime_start is not None
            and trial.datetime_start < before)


def _fail_each(study: optuna.Study, dead: list[FrozenTrial]) -> list[int]:
    """_fail_dead for each of `dead`, counting the deaths of its earlier tries; the numbers failed here."""
    if not dead:
        return []
    deaths = Counter(records.first_number(t) for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
                     if TrialRecord.of(t).stale)
    return [t.number for t in dead if _fail_dead(study, t, deaths[records.first_number(t)] + 1)]


def _fail_dead(study: optuna.Study, trial: FrozenTrial, deaths: int) -> bool:
    """Mark `trial` interrupted and stale, fail it, and queue it again, unless its worker queued it itself
    (interrupted, then killed before it could fail it), or its tries have died more than MAX_RETRY times.
    False where it ended meanwhile: another worker failed it first, or its own worker, only late, told it
    (the marks then say nothing: records.status_of reads them on failed trials only)."""
    queued, retry = TrialRecord.of(trial).interrupted, deaths <= MAX_RETRY
    marks = {} if queued else {"interrupted": True} if retry else {
        "error": f"its worker died running it, {deaths} times; not retried"}
    try:
        records.write_stored(study, trial, stale=True, **marks)
        if not study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL):
            return False
    except optuna.exceptions.UpdateFinishedTrialError:
        return False
    if retry and not queued:  # failed first, then queued: two workers that find it dead at once queue one retry
        records.queue_retry(study, trial)
    return True
