"""A trial's splits as tensors on its device, and the cache a worker keeps of them.

    >>> cache = DataCache()                       # one per worker: trials of one space share their data
    >>> cfg = TrialConfig(dataset="synthetic", data_options={"n_samples": 200})
    >>> data = cache.get(cfg, torch.device("cpu"))  # DeviceData: x_train, y_train, ..., n_classes, input_shape
    >>> tuple(data.x_train.shape), data.n_classes, cache.get(cfg, torch.device("cpu")) is data
    ((120, 16), 4, True)
    >>> cache.clear()                             # the worker is done: the device memory goes back

The cache is an object its owner holds and clears, not a hidden module-level one that would keep
datasets in GPU memory for the life of the process.
"""
from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import torch

from study.config import TrialConfig
from study.data import load_splits


@dataclass(frozen=True)
class DeviceData:
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    n_classes: int
    input_shape: tuple[int, ...]
    train_ids: torch.Tensor  # the dataset index of each training row (int64, on the device): orders differ in it alone


def _key(cfg: TrialConfig, device: torch.device) -> tuple:
    return (cfg.dataset, json.dumps(cfg.data_options, sort_keys=True), cfg.val_fraction, cfg.test_fraction,
            cfg.split_seed, cfg.preprocess, cfg.order, str(device))


def load(cfg: TrialConfig, device: torch.device) -> DeviceData:
    """The splits of `cfg`'s data settings as tensors on `device` (no cache)."""
    s = load_splits(cfg.dataset, cfg.data_options, val_fraction=cfg.val_fraction, test_fraction=cfg.test_fraction,
                    split_seed=cfg.split_seed, preprocess=cfg.preprocess, order=cfg.order)

    def put(a: Any) -> torch.Tensor:
        return torch.as_tensor(a).to(device)

    return DeviceData(put(s.x_train), put(s.y_train), put(s.x_val), put(s.y_val), put(s.x_test), put(s.y_test),
                      s.n_classes, s.input_shape, put(s.train_ids))


class DataCache:
    def __init__(self, size: int = 4):
        self.size = size  # distinct data settings kept at once, least recently used first out
        self._entries: OrderedDict[tuple, DeviceData] = OrderedDict()

    def get(self, cfg: TrialConfig, device: torch.device) -> DeviceData:
        key = _key(cfg, device)
        if key in self._entries:
            self._entries.move_to_end(key)
        else:
            self._entries[key] = load(cfg, device)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)
        return self._entries[key]

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
