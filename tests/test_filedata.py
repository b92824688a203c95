"""Datasets from files, without code: npz (with its own test split), csv, parquet and image folders,
each made small in a temporary folder and trained on through the normal pipeline."""
import os
import re

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from study.data import load_splits
from study.filedata import imagefolder, npz, table


def _splits(name, **options):
    return load_splits(name, options, val_fraction=0.2, test_fraction=0.2, split_seed=0, preprocess="standardize",
                       order="random")


def test_npz_with_its_own_test_split(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.normal(size=(50, 3)), y=np.arange(50) % 2,
             x_test=rng.normal(size=(7, 3)), y_test=np.arange(7) % 2)
    s = _splits("npz", path=str(tmp_path / "d.npz"))
    assert len(s.y_test) == 7 and len(s.y_train) + len(s.y_val) == 50 and len(s.y_val) == 10
    assert len(npz(str(tmp_path / "d.npz"))) == 4


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_tabular_files_map_named_classes_to_0_to_k(tmp_path, suffix):
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"f1": rng.normal(size=40), "f2": rng.normal(size=40),
                          "label": np.where(np.arange(40) % 2, "spam", "ham")})
    path = tmp_path / f"t.{suffix}"
    frame.to_csv(path, index=False) if suffix == "csv" else frame.to_parquet(path)
    x, y = table(str(path), target="label")
    assert x.shape == (40, 2) and y.tolist() == [0, 1] * 20  # ham < spam
    assert _splits(suffix, path=str(path), target="label").n_classes == 2
    with pytest.raises(ValueError, match="no column 'target'"):
        table(str(path))


def test_an_image_folder_is_resized_and_cached(tmp_path, monkeypatch):
    monkeypatch.setattr("study.data.CACHE_DIR", tmp_path / "cache")
    for c, colour in (("cats", (200, 30, 30)), ("dogs", (30, 30, 200))):
        (tmp_path / "img" / c).mkdir(parents=True)
        for i in range(6):
            Image.new("RGB", (20 + i, 17), colour).save(tmp_path / "img" / c / f"{i}.png")
    x, y = imagefolder(str(tmp_path / "img"), size=8)
    assert x.shape == (12, 3, 8, 8) and y.tolist() == [0] * 6 + [1] * 6
    assert x[0, 0].mean() > x[0, 2].mean() and x[6, 2].mean() > x[6, 0].mean()  # red cats, blue dogs
    assert len(list((tmp_path / "cache").glob("imagefolder-*.npz"))) == 1
    gray, _ = imagefolder(str(tmp_path / "img"), size=4, grayscale=True)
    assert gray.shape == (12, 1, 4, 4)


def test_a_study_trains_on_a_csv_file_from_the_command_line(tmp_path, write_space):
    from conftest import SYNTH_SPACE, call_cli, trials

    rng = np.random.default_rng(2)
    y = np.arange(120) % 3
    pd.DataFrame({"a": rng.normal(size=120) + y, "b": rng.normal(size=120), "target": y}).to_csv(
        tmp_path / "data.csv", index=False)
    space = write_space(SYNTH_SPACE.replace("name: synthetic\n  options: {n_samples: 160, n_features: 8, n_classes: 3}",
                                            "name: csv\n  options: {path: data.csv}"))
    result = call_cli("run", str(space), "--storage", "sqlite:///s.db", "--trials", "2", "--no-report", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert len(trials(tmp_path)) == 2


def test_a_study_whose_data_file_changed_is_not_joined(tmp_path, write_space):
    """The same space on other data joined the study: its new trials were ranked against trials of the old data."""
    from conftest import SYNTH_SPACE, call_cli, run_cli, trials

    rng = np.random.default_rng(2)
    y = np.arange(120) % 3
    frame = pd.DataFrame({"a": rng.normal(size=120) + y, "b": rng.normal(size=120), "target": y})
    frame.to_csv(tmp_path / "data.csv", index=False)
    space = write_space(SYNTH_SPACE.replace("name: synthetic\n  options: {n_samples: 160, n_features: 8, n_classes: 3}",
                                            "name: csv\n  options: {path: data.csv}"))
    args = ("run", str(space), "--storage", "sqlite:///s.db", "--no-report", "-q")
    assert call_cli(*args, "--trials", "1", cwd=tmp_path).returncode == 0
    assert call_cli(*args, "--trials", "2", cwd=tmp_path).returncode == 0  # the same data: the study goes on
    frame.loc[0, "a"] += 1.0  # one value edited
    frame.to_csv(tmp_path / "data.csv", index=False)
    result = run_cli(*args, "--trials", "3", cwd=tmp_path)  # a process: this one caches what it loaded
    assert result.returncode == 2, result.stderr
    assert re.fullmatch(r"error: sqlite:///s\.db: data: the data has changed since study 'synth' was made \(digest "
                        r"[0-9a-f]{16} there, [0-9a-f]{16} here\): its trials would be compared with trials of other "
                        r"data; restore the data, or choose another --study-name \(got \{'path': 'data\.csv'\}\)\n",
                        result.stderr), result.stderr
    assert len(trials(tmp_path)) == 2


def test_a_missing_file_or_column_is_one_line_before_the_study(tmp_path, write_space):
    from conftest import SYNTH_SPACE, call_cli

    space = write_space(SYNTH_SPACE.replace("name: synthetic\n  options: {n_samples: 160, n_features: 8, n_classes: 3}",
                                            "name: npz\n  options: {path: missing.npz}"))
    result = call_cli("run", str(space), "--storage", "sqlite:///s.db", cwd=tmp_path)
    assert result.returncode == 2 and "data.options" in result.stderr and "missing.npz" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "s.db").exists()
    # where a relative path was looked for: the current folder, which need not be the space's
    assert f"no file 'missing.npz' in the current folder, {tmp_path}" in result.stderr


@pytest.mark.parametrize("kind, loader, missing", [("file", npz, "x.npz"), ("file", table, "x.csv"),
                                                   ("file", table, "x.parquet"), ("folder", imagefolder, "imgs")])
def test_a_missing_data_path_says_where_it_was_looked_for(tmp_path, monkeypatch, kind, loader, missing):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=re.escape(f"no {kind} '{missing}' in the current folder, {tmp_path}")):
        loader(missing)
    with pytest.raises(ValueError) as absolute:  # an absolute path is where it was looked for
        loader(str(tmp_path / missing))
    assert str(absolute.value) == f"no {kind} '{tmp_path / missing}'"


UNSEEDED = """\
import numpy as np


def load():  # unseeded: other data at each call, so in each process
    x, y = np.random.randn(120, 4), np.arange(120) % 3
    return x + y[:, None], y
"""


def test_a_worker_whose_dataset_function_gives_other_data_stops_with_one_line(tmp_path, write_space):
    """Each `--jobs` worker loads the data itself: an unseeded dataset function gave each its own, and their
    trials were ranked together. The worker that meets other data stops; the others train the study."""
    from conftest import SYNTH_SPACE, call_cli, trials

    (tmp_path / "unseeded.py").write_text(UNSEEDED)
    space = write_space(SYNTH_SPACE.replace("name: synthetic\n  options: {n_samples: 160, n_features: 8, n_classes: 3}",
                                            "name: unseeded:load"))
    result = call_cli("run", str(space), "--storage", "sqlite:///s.db", "--trials", "3", "--jobs", "2", "-q",
                      "--no-report", cwd=tmp_path)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert re.search(r"warning: worker 1: error: sqlite:///s\.db: data: the data has changed since study 'synth' was "
                     r"made .*\(a dataset function must give the same data at each call: seed it\)", result.stdout)
    assert {t.user_attrs["worker"]["pid"] for t in trials(tmp_path)} == {os.getpid()}  # worker 0: this process
