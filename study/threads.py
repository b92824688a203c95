"""Intra-op threads for a trial, chosen from its work: a small network's step is too short for threads
to pay, and on a busy machine they contend with everything else for the cores.

    >>> import torch; from study.models import build_model
    >>> mlp = build_model("mlp", (64,), 10, depth=2, width=64, activation="relu")         # quick's MLP
    >>> cnn = build_model("cnn", (40,), 10, depth=3, width=32, activation="relu", kernel_size=5)   # lecture's
    >>> work(mlp, torch.zeros(64, 64)), work(cnn, torch.zeros(64, 40))      # flops of a batch of 64
    (1130496, 20684800)
    >>> for_work(1130496, allowed=8), for_work(20684800, allowed=8)
    (1, 8)

A step's work is its forward pass's matmul and convolution flops (torch.utils.flop_counter): for an MLP
about 2 x params x batch, for a CNN far more than its parameters say, since each kernel slides over the
whole signal (lecture's CNN above has 12,106 parameters). The threshold is measured: `python -m
benchmarks.bench_threads`, whose figures README quotes. `--threads N` fixes the count; `--jobs N`
divides the cores this process may use (share); OMP_NUM_THREADS, where set, caps a worker's part.
"""
from __future__ import annotations

import contextlib
import os
from typing import Iterator

SMALL_WORK = 4_000_000  # forward flops per step below which one thread is as fast or faster


def cores() -> int:
    """The cores this process may use: joblib's count, which takes its CPU affinity (taskset, a container's
    or a cluster job's cpuset) and a cgroup's CPU quota (docker --cpus, Kubernetes limits) into account. The
    machine's count would put several threads on each core it may use (a short lecture trial under
    `taskset -c 0` on 2 cores: 13.8 s on 2 threads, 5.2 s on 1)."""
    import joblib

    return joblib.cpu_count()


def share(jobs: int = 1) -> int:
    """The most intra-op threads one of `jobs` workers gives a trial, unless --threads fixes them: its part
    of the cores this process may use, and no more than OMP_NUM_THREADS where the user set it (the usual cap
    on a process's threads, which torch itself reads)."""
    part = max(1, cores() // jobs)
    cap = os.environ.get("OMP_NUM_THREADS", "")
    return min(part, int(cap)) if cap.isdigit() and int(cap) > 0 else part


def for_work(flops: int, allowed: int) -> int:
    return 1 if flops < SMALL_WORK else max(1, allowed)


def oversubscribed(count: int | None, jobs: int) -> str | None:
    """Why `jobs` workers, or `count` fixed threads (study.threads) on each, are slow here, where they are
    more than the cores: threads that take turns on a core wait for each other at every op (a short
    lecture trial retrained in 6 s on 2 threads, 33 s on 8, on 2 cores), and workers that take turns
    gain nothing (quick --trials 64 took 12.7-13.5 s with --jobs 8, 9.7-10.4 s with --jobs 2, on 2 cores).
    None where they fit."""
    usable = cores()
    if jobs > usable:  # at one thread each, as many as fit: the count can then be no remedy
        return (f"--jobs {jobs} is more workers than the {usable} cores this process may use: they take turns "
                f"on them, each a process with torch of its own; --jobs {usable} fits")
    if count is None or count * jobs <= usable:
        return None
    on = "" if jobs == 1 else f" on each of {jobs} workers"
    return (f"study.threads is {count}{on}, more than the {usable} cores this process may use: the trials add "
            f"their sums as {count} threads do, but threads that take turns on a core can make each step several "
            f"times slower; --threads {max(1, usable // jobs)} is faster, its sums in another order")


def work(model, batch) -> int:
    """The matmul and convolution flops of `model`'s forward pass over `batch`, counted by
    torch.utils.flop_counter on one real forward: in eval mode, without grad and in a fork of torch's CPU
    random stream, so that the model's statistics and the trial's stream are left as they were."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[]), FlopCounterMode(display=False) as counter:
            model(batch)
    finally:
        for m, training in modes:
            m.training = training
    return counter.get_total_flops()


def choose(p, allowed: int | None, fixed: bool, members: int = 1) -> None:
    """Set torch's intra-op threads for a prepared trial `p` (engine.PreparedTrial) on the CPU, or a
    population of `members` such trials, whose fused step does their work at once (allowed None, or a
    trial on another device, whose steps run there: leave them as they are)."""
    import torch

    if allowed is None or p.device.type != "cpu":
        return
    if not fixed:
        allowed = for_work(work(p.model, p.data.x_train[:p.cfg.batch_size]) * members, allowed)
    torch.set_num_threads(allowed)


@contextlib.contextmanager
def held(count: int | None = None) -> Iterator[None]:
    """torch's intra-op thread count set to `count` inside (None: left as it is) and given back after, for
    what must not depend on it or must not leave its own behind."""
    import torch

    before = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)
