"""Datasets, splits, preprocessing and ordering, by the names a search space uses.

    >>> splits = load_splits("digits", {}, val_fraction=0.2, test_fraction=0.2, split_seed=0,
    ...                      preprocess="standardize", order="class_sorted")
    >>> splits.x_train.shape, splits.input_shape, splits.n_classes
    ((1078, 1, 8, 8), (1, 8, 8), 10)
    >>> abs(float(splits.x_train.mean())) < 1e-6     # standardised with the training split's statistics
    True

A dataset is a function returning (X, y): X float of shape (N, F) vectors, (N, C, L) signals or
(N, C, H, W) images, y integer class labels 0..K-1; or (X, y, X_test, y_test) with a test split of its
own (then the validation split is `val_fraction` of X and `test_fraction` is unused). A user dataset is
`package.module:callable`, called as `fn(**options)` with the `data.options` mapping. Files need no code
(filedata.py): `npz`, `csv`, `parquet` and `imagefolder`.

The train/validation/test split is fixed by `split_seed` and stratified; preprocessing statistics
come from the training split only, per feature for vectors and per channel otherwise, summed in one
order whatever `order` arranges: the same samples give the same statistics to the last bit, so that
trials of either order see the same values (and fuse into one population, `train_ids`).
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from study.callables import is_reference, load_callable
from study.filedata import FILE_DATASETS
from study.files import atomic_write

Dataset = Callable[..., tuple[np.ndarray, np.ndarray]]

CACHE_DIR = Path(os.environ.get("STUDY_CACHE_DIR", Path.home() / ".cache" / "study"))


def _digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 8x8 handwritten digits, pixel values 0..16, as (N, 1, 8, 8) images."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return x.reshape(-1, 1, 8, 8), y


def _make_mnist1d(num_samples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Generated once per (num_samples, seed) and cached as plain arrays: a cache file is data, never code."""
    path = CACHE_DIR / f"mnist1d-{int(num_samples)}-{int(seed)}.npz"
    try:
        with np.load(path, allow_pickle=False) as cached:
            return cached["x"], cached["y"]
    except (OSError, ValueError, KeyError):  # missing, damaged or not ours: make it again
        pass
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples, args.seed = num_samples, seed
    d = make_dataset(args)  # generated locally; mnist1d's get_dataset() would download instead
    x, y = np.concatenate([d["x"], d["x_test"]]), np.concatenate([d["y"], d["y_test"]])
    try:
        atomic_write(path, lambda f: np.savez(f, x=x, y=y))
    except OSError:  # a cache that cannot be written only costs time
        pass
    return x, y


def _mnist1d(num_samples: int = 5000, seed: int = 42) -> tuple[np.ndarray, np.ndarray]:
    """MNIST-1D (Greydanus 2020): 40-step signals of 10 classes, as (N, 1, 40); cached on disk."""
    x, y = _make_mnist1d(num_samples, seed)
    return x.reshape(len(x), 1, -1), y


def _synthetic(n_samples: int = 240, n_features: int = 16, n_classes: int = 4, separation: float = 2.0,
               shape: list[int] | None = None, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Seeded Gaussian blobs, one per class, reshaped to `shape` per sample if given (for CNN tests)."""
    rng = np.random.default_rng(seed)
    means = rng.normal(0.0, separation, size=(n_classes, n_features))
    y = np.arange(n_samples) % n_classes
    x = means[y] + rng.normal(size=(n_samples, n_features))
    return (x.reshape(n_samples, *shape) if shape else x), y


DATASETS: dict[str, Dataset] = {"digits": _digits, "mnist1d": _mnist1d, "synthetic": _synthetic, **FILE_DATASETS}


def _stat_axes(x: np.ndarray) -> tuple[int, ...]:
    return (0,) if x.ndim == 2 else (0, *range(2, x.ndim))  # per feature, else per channel


def _stats_none(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.zeros(1, x.dtype), np.ones(1, x.dtype)


def _stats_center(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return x.mean(axis=_stat_axes(x), keepdims=True), np.ones(1, x.dtype)


def _stats_standardize(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    std = x.std(axis=_stat_axes(x), keepdims=True)
    return x.mean(axis=_stat_axes(x), keepdims=True), np.where(std > 0, std, 1.0).astype(x.dtype)


# name -> (training split) -> (shift, scale); every split becomes (x - shift) / scale.
PREPROCESSING: dict[str, Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]] = {
    "none": _stats_none,
    "center": _stats_center,
    "standardize": _stats_standardize,
}


def _order_random(y: np.ndarray, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).permutation(len(y))


def _order_class_sorted(y: np.ndarray, seed: int) -> np.ndarray:
    # Sorted by label, the way many datasets ship: unshuffled batches then hold one class each.
    return np.argsort(y, kind="stable")


# The order of the training split before batching; `shuffle` then permutes it every pass (or not).
ORDERS: dict[str, Callable[[np.ndarray, int], np.ndarray]] = {
    "random": _order_random,
    "class_sorted": _order_class_sorted,
}


@dataclass(frozen=True)
class Splits:
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    n_classes: int
    train_ids: np.ndarray  # the dataset index of each training row: the rows of two orders are one permutation apart

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])


def load_dataset(name: str, options: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """(X float32, y int64) from a registered dataset or a user callable, checked against the contract."""
    return _load_dataset(name, _key(options))[:2]


def fingerprint(name: str, options: dict[str, Any]) -> str | None:
    """A digest of the data a user's file or callable gives, to tell when it changed under a study; None for
    the generated datasets, which their options and versions fix (as float arithmetic does not always, across
    machines, bit for bit)."""
    if name in DATASETS and name not in FILE_DATASETS:
        return None
    return _fingerprint(name, _key(options))


@functools.lru_cache(maxsize=4)
def _fingerprint(name: str, options_json: str) -> str:
    # once per process: create_or_load asks in every phase, and a --jobs parent asks again as worker 0
    x, y, test = _load_dataset(name, options_json)
    digest = hashlib.sha256()
    for array in (x, y, *(test or ())):
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(np.ascontiguousarray(array).data)
    return digest.hexdigest()[:16]


def given_test(name: str, options: dict[str, Any]) -> tuple[np.ndarray, np.ndarray] | None:
    """The test split a dataset ships (a 4-tuple return, e.g. an npz file's x_test and y_test), or None."""
    return _load_dataset(name, _key(options))[2]


def _key(options: dict[str, Any]) -> str:
    """The loaders' cache key: a dict is not hashable."""
    return json.dumps(options, sort_keys=True)


@functools.lru_cache(maxsize=4)
def _load_dataset(name: str, options_json: str) -> tuple:
    fn = load_callable(name) if is_reference(name) else DATASETS[name]
    loaded = fn(**json.loads(options_json))
    x, y = _checked(name, *loaded[:2])
    test = _checked(name, *loaded[2:4], n_classes=int(y.max()) + 1) if len(loaded) == 4 else None
    return x, y, test


def _checked(name: str, x: Any, y: Any, n_classes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x, dtype=np.float32), np.asarray(y)
    if x.ndim not in (2, 3, 4) or y.ndim != 1 or len(x) != len(y):
        raise ValueError(f"dataset {name!r} must return X of shape (N, F), (N, C, L) or (N, C, H, W) and y "
                         f"of shape (N,); got {x.shape} and {y.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"dataset {name!r} returned NaN or infinite features "
                         f"({int((~np.isfinite(x)).any(axis=tuple(range(1, x.ndim))).sum())} samples)")
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"dataset {name!r} must return integer labels 0..K-1; got dtype {y.dtype}")
    labels = np.unique(y)
    if n_classes is not None:  # a shipped test split: labels among the training split's classes
        if len(labels) and (labels[0] < 0 or labels[-1] >= n_classes):
            raise ValueError(f"dataset {name!r}: test labels must lie in 0..{n_classes - 1}, as the training "
                             f"labels do; got {labels[0]}..{labels[-1]}")
        return x, y.astype(np.int64)
    if len(labels) < 2 or labels[0] != 0 or labels[-1] != len(labels) - 1:
        shown = ", ".join(map(str, labels[:6].tolist())) + (", ..." if len(labels) > 6 else "")
        raise ValueError(f"dataset {name!r} must return labels 0..K-1 with every class present and K >= 2; "
                         f"got {{{shown}}}")
    return x, y.astype(np.int64)


def load_splits(name: str, options: dict[str, Any], *, val_fraction: float, test_fraction: float,
                split_seed: int, preprocess: str, order: str) -> Splits:
    from sklearn.model_selection import train_test_split

    x, y = load_dataset(name, options)
    shipped = given_test(name, options)
    idx = np.arange(len(y))
    try:
        if shipped is not None:  # the file's own test split; validation comes from the rest
            idx_train, idx_val = train_test_split(idx, test_size=val_fraction, random_state=split_seed, stratify=y)
            idx_test = np.arange(len(y), len(y) + len(shipped[1]))
            x, y = np.concatenate([x, shipped[0]]), np.concatenate([y, shipped[1]])
        else:
            idx_train, idx_rest = train_test_split(idx, test_size=val_fraction + test_fraction,
                                                   random_state=split_seed, stratify=y)
            idx_val, idx_test = train_test_split(idx_rest, test_size=test_fraction / (val_fraction + test_fraction),
                                                 random_state=split_seed, stratify=y[idx_rest])
    except ValueError as exc:  # scikit-learn: too few samples of some class for a stratified split
        if "class" not in str(exc):
            raise
        raise ValueError(f"dataset {name!r} is too small to split into training, validation and test sets "
                         f"with every class in each ({len(y)} samples, {int(y.max()) + 1} classes, smallest "
                         f"class {int(np.bincount(y).min())}): {exc}") from None
    # The statistics of the `random` arrangement for every order: float sums depend on their order.
    shift, scale = PREPROCESSING[preprocess](x[idx_train[_order_random(y[idx_train], split_seed)]])
    idx_train = idx_train[ORDERS[order](y[idx_train], split_seed)]

    def prep(i: np.ndarray) -> np.ndarray:
        return ((x[i] - shift) / scale).astype(np.float32)

    return Splits(prep(idx_train), y[idx_train], prep(idx_val), y[idx_val], prep(idx_test), y[idx_test],
                  n_classes=int(y.max()) + 1, train_ids=idx_train)
