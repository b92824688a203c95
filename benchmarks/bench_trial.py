"""How fast is a trial? The study's training loop against a plain DataLoader loop, in the same run.

    python -m benchmarks.bench_trial                  # CPU
    python -m benchmarks.bench_trial --device cuda    # plus the GPU vs CPU ratio

Prints microseconds per training step for both loops on the same model, data and number of steps
(validation each epoch included in both), their ratio, and trials per minute for a fixed study.
Absolute times on a shared machine are noisy; the ratios are the figures to quote.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from study.config import TrialConfig, load_config
from study.data import load_splits
from study.metrics import evaluate
from study.optimizers import OPTIMIZERS
from study.trial import make_model, plan, train

CFG = TrialConfig(dataset="digits", model="mlp", depth=2, width=64, init="he", optimizer="adam", lr=1e-3,
                  batch_size=64, budget=10)


def study_loop(cfg: TrialConfig, device: torch.device) -> float:
    """Seconds for one trial of the study's own loop."""
    start = time.perf_counter()
    train(cfg, device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def dataloader_loop(cfg: TrialConfig, device: torch.device) -> float:
    """Seconds for the same training written the usual way: DataLoader over CPU tensors, .item() per step."""
    from torch.utils.data import DataLoader, TensorDataset

    start = time.perf_counter()
    s = load_splits(cfg.dataset, cfg.data_options, val_fraction=cfg.val_fraction, test_fraction=cfg.test_fraction,
                    split_seed=cfg.split_seed, preprocess=cfg.preprocess, order=cfg.order)
    loader = DataLoader(TensorDataset(torch.as_tensor(s.x_train), torch.as_tensor(s.y_train)),
                        batch_size=cfg.batch_size, shuffle=True)
    x_val, y_val = torch.as_tensor(s.x_val).to(device), torch.as_tensor(s.y_val).to(device)
    data, _ = plan(cfg, device)
    model = make_model(cfg, data, device)
    opt = OPTIMIZERS[cfg.optimizer](model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=0.0)
    for _ in range(cfg.budget):
        total = 0.0
        for xb, yb in loader:
            xb, yb = xb.to(device), yb.to(device)
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item()
        evaluate(model, x_val, y_val)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def per_step_us(fn, cfg: TrialConfig, device: torch.device, repeats: int) -> float:
    _, budget = plan(cfg, device)
    fn(cfg, device)  # warm-up: data cache, kernels, allocator
    return statistics.median(fn(cfg, device) for _ in range(repeats)) / budget.total_iters * 1e6


def trials_per_minute(device: torch.device, n_trials: int) -> float:
    from study.runner import run_study

    cfg = load_config("quick", [f"study.n_trials={n_trials}", "study.pruner={name: none}"])
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        run_study(cfg, f"sqlite:///{Path(tmp) / 'bench.db'}", device, checkpoint_root=Path(tmp), quiet=True)
        return n_trials / (time.perf_counter() - start) * 60


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--trials", type=int, default=8)
    args = parser.parse_args()
    devices = [torch.device("cpu")] + ([torch.device(args.device)] if args.device != "cpu" else [])
    results = {}
    for device in devices:
        ours = per_step_us(study_loop, CFG, device, args.repeats)
        base = per_step_us(dataloader_loop, CFG, device, args.repeats)
        tpm = trials_per_minute(device, args.trials)
        results[device.type] = (ours, tpm)
        print(f"[{device}] study loop {ours:8.1f} us/step | DataLoader loop {base:8.1f} us/step | "
              f"speed-up x{base / ours:.2f} | {tpm:.1f} trials/min (quick, {args.trials} trials, no pruning)")
    if "cuda" in results:
        cpu, gpu = results["cpu"], results["cuda"]
        print(f"GPU vs CPU: step time x{cpu[0] / gpu[0]:.2f} faster, trials/min x{gpu[1] / cpu[1]:.2f}")


if __name__ == "__main__":
    main()
