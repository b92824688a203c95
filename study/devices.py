"""Choosing the device once, at the edge; the training code only receives it."""
from __future__ import annotations

import re

import torch

from study.errors import ConfigError

CHOICES = "auto, cpu, cuda, cuda:N, mps"


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError("--device", "device", name, "MPS is not available on this machine")
        return torch.device("mps")
    m = re.fullmatch(r"cuda(?::(\d+))?", name)
    if not m:
        raise ConfigError("--device", "device", name, f"unknown device; expected one of {CHOICES}")
    if not torch.cuda.is_available():
        raise ConfigError("--device", "device", name, "CUDA is not available on this machine")
    index = int(m.group(1) or 0)
    if index >= torch.cuda.device_count():
        raise ConfigError("--device", "device", name, f"only {torch.cuda.device_count()} CUDA device(s)")
    return torch.device("cuda", index)
