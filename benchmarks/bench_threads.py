"""Where intra-op threads pay: a training step on one thread against all of them, for MLPs and CNNs of the
shipped sizes, beside the work `study/threads.py` measures for each and the count it chooses.

    python -m benchmarks.bench_threads [--rounds 5] [--counts 1 2 4 8]

Each model trains with Adam on random data of its input's shape. The two thread counts alternate, round
after round, in one process; the figures are medians over rounds, so the ratio to quote is `1 / all`
(above 1: the threads pay). `work` is the forward pass's matmul and convolution flops per step
(`threads.work`, torch.utils.flop_counter), the figure that `threads.SMALL_WORK` is compared with.
`--counts` times other thread counts too, each against one thread: on a machine with more cores than two,
whether a count between 1 and all of them is faster still (the rule gives all).
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from study.models import build_model
from study.threads import SMALL_WORK, for_work, work

# (model, input shape, depth, width, kernel size, batch): quick's MLP and wider ones; lecture's 1-D CNNs
# on MNIST-1D (40 points); init's and preprocessing's 2-D CNNs on 8x8 digits.
# Several lie near the threshold (2 to 8 million flops).
CASES = [
    ("mlp", (64,), 2, 64, 3, 64), ("mlp", (64,), 2, 128, 3, 64), ("mlp", (64,), 2, 128, 3, 128),
    ("mlp", (64,), 2, 256, 3, 64), ("mlp", (64,), 2, 512, 3, 64), ("mlp", (64,), 3, 1024, 3, 128),
    ("cnn", (40,), 2, 16, 5, 32), ("cnn", (40,), 2, 16, 5, 64), ("cnn", (40,), 2, 16, 5, 128),
    ("cnn", (40,), 3, 32, 5, 32), ("cnn", (40,), 3, 32, 5, 64), ("cnn", (40,), 4, 64, 5, 128),
    ("cnn", (1, 8, 8), 2, 16, 3, 32), ("cnn", (1, 8, 8), 2, 16, 3, 64), ("cnn", (1, 8, 8), 2, 32, 3, 64),
    ("cnn", (1, 8, 8), 3, 64, 3, 128),
]


def step_us(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, threads: int, steps: int) -> float:
    torch.set_num_threads(threads)
    opt = torch.optim.Adam(model.parameters(), 1e-3)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()

    for _ in range(5):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--counts", type=int, nargs="+", metavar="N",
                        help="thread counts to time against 1 (default: all of them)")
    args = parser.parse_args()
    cores = torch.get_num_threads()
    counts = sorted({1, *(args.counts or [cores])})
    print(f"{', '.join(map(str, counts[1:]))} threads against 1, medians of {args.rounds} alternated rounds; "
          f"threads.SMALL_WORK = {SMALL_WORK:.2g} flops; the rule may give 1 or {cores}")
    for name, shape, depth, width, kernel, batch in CASES:
        torch.manual_seed(0)
        model = build_model(name, shape, 10, depth=depth, width=width, activation="relu", kernel_size=kernel)
        x, y = torch.randn(batch, *shape), torch.randint(0, 10, (batch,))
        flops = work(model, x)
        times: dict[int, list[float]] = {n: [] for n in counts}
        for _ in range(args.rounds):
            for threads in times:
                times[threads].append(step_us(model, x, y, threads, args.steps))
        us = {n: statistics.median(t) for n, t in times.items()}
        label = f"{name} {'x'.join(map(str, shape))} depth {depth} width {width} batch {batch}"
        others = "  ".join(f"{n} threads {us[n]:7.0f} us x{us[1] / us[n]:4.2f}" for n in counts[1:])
        print(f"{label:<38} work {flops:9.3g}  1 thread {us[1]:7.0f} us  {others}  "
              f"fastest: {min(us, key=us.get)}  chosen: {for_work(flops, cores)}")


if __name__ == "__main__":
    main()
