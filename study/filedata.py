"""Datasets from files, without code: `data: {name: npz|csv|parquet|imagefolder, options: {...}}`.

    >>> rng = np.random.default_rng(0)
    >>> np.savez("d.npz", x=rng.normal(size=(30, 4)), y=np.arange(30) % 3)
    >>> x, y = npz("d.npz")
    >>> x.shape, sorted(set(y.tolist()))
    ((30, 4), [0, 1, 2])
    >>> import pandas as pd
    >>> pd.DataFrame({"a": [1.0, 2.0, 3.0, 4.0], "b": [0, 1, 0, 1], "target": ["cat", "dog", "cat", "dog"]}
    ...              ).to_csv("t.csv", index=False)
    >>> table("t.csv")[1].tolist()        # class names become 0..K-1 in sorted order
    [0, 1, 0, 1]

- `npz`: arrays `x` and `y`, optionally `x_test` and `y_test` (then the file's test split is used).
- `csv` / `parquet`: one row per sample, read with pandas; the `target` column (option `target`) holds the
  classes (numbers or names, mapped to 0..K-1 in sorted order), every other column is a numeric feature.
- `imagefolder`: torchvision's ImageFolder layout, `root/<class>/<image>`, classes in sorted order; every
  image is resized to `size` x `size` (RGB, or grayscale with `grayscale: true`) and the result is cached
  as one array file beside the study's other caches, keyed by the folder's files and their times.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def _there(path: str, kind: str = "file") -> Path:
    """`path`, or the error that says where a relative one was looked for: in the current folder, as every
    path of the command line is, not beside the space's file."""
    found = Path(path)
    if not (found.is_dir() if kind == "folder" else found.is_file()):
        where = "" if found.is_absolute() else f" in the current folder, {os.getcwd()}"
        raise ValueError(f"no {kind} {path!r}{where}")
    return found


def npz(path: str) -> tuple:
    found = _there(path)
    with np.load(found, allow_pickle=False) as f:  # never unpickle a data file
        missing = [k for k in ("x", "y") if k not in f.files]
        if missing:
            raise ValueError(f"{path} has no array {missing[0]!r} (it holds: {', '.join(f.files) or 'nothing'})")
        if ("x_test" in f.files) != ("y_test" in f.files):
            raise ValueError(f"{path} must hold both x_test and y_test, or neither")
        if "x_test" in f.files:
            return f["x"], f["y"], f["x_test"], f["y_test"]
        return f["x"], f["y"]


def table(path: str, target: str = "target") -> tuple[np.ndarray, np.ndarray]:
    import pandas as pd

    found = _there(path)
    frame = pd.read_parquet(found) if found.suffix == ".parquet" else pd.read_csv(found)
    if target not in frame.columns:
        raise ValueError(f"{path} has no column {target!r} (columns: {', '.join(map(str, frame.columns))}); "
                         "name the label column with data.options.target")
    features = frame.drop(columns=[target])
    text = [c for c in features.columns if not pd.api.types.is_numeric_dtype(features[c])]
    if text:
        raise ValueError(f"{path}: feature column {text[0]!r} is not numeric")
    codes, _ = pd.factorize(frame[target], sort=True)
    return features.to_numpy(dtype=np.float32), codes.astype(np.int64)


def parquet(path: str, target: str = "target") -> tuple[np.ndarray, np.ndarray]:
    return table(path, target)


def imagefolder(root: str, size: int = 32, grayscale: bool = False) -> tuple[np.ndarray, np.ndarray]:
    from study.data import CACHE_DIR
    from study.files import atomic_write

    folder = _there(root, "folder")
    classes = sorted(d.name for d in folder.iterdir() if d.is_dir())
    if not classes:
        raise ValueError(f"{root} must hold one folder of images per class (root/<class>/<image>)")
    files = [(i, f) for i, c in enumerate(classes) for f in sorted((folder / c).iterdir())
             if f.suffix.lower() in IMAGE_SUFFIXES]
    key = hashlib.sha256(repr((size, grayscale, [(str(f), os.stat(f).st_mtime_ns) for _, f in files]))
                         .encode()).hexdigest()[:16]
    cache = CACHE_DIR / f"imagefolder-{key}.npz"
    if cache.is_file():
        with np.load(cache, allow_pickle=False) as f:
            return f["x"], f["y"]
    x = np.stack([_image(f, size, grayscale) for _, f in files]) if files else np.zeros((0, 1, size, size))
    y = np.array([i for i, _ in files], dtype=np.int64)
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(cache, lambda f: np.savez(f, x=x, y=y))
    except OSError:  # a cache that cannot be written only costs time
        pass
    return x, y


def _image(path: Path, size: int, grayscale: bool) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        pixels = np.asarray(image.convert("L" if grayscale else "RGB").resize((size, size)), dtype=np.float32)
    pixels = pixels / 255.0
    return pixels[None] if grayscale else pixels.transpose(2, 0, 1)  # (C, H, W)


FILE_DATASETS: dict[str, Any] = {"npz": npz, "csv": table, "parquet": parquet, "imagefolder": imagefolder}
