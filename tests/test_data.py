import numpy as np
import pytest

from study import data
from study.data import DATASETS, ORDERS, PREPROCESSING, load_dataset, load_splits

SPLIT = dict(val_fraction=0.2, test_fraction=0.2, split_seed=0)
SMALL = {"digits": {}, "mnist1d": {"num_samples": 400}, "synthetic": {"n_samples": 120}}


def test_every_dataset_has_a_small_case():
    from study.filedata import FILE_DATASETS

    assert set(DATASETS) == set(SMALL) | set(FILE_DATASETS)  # files: tests/test_filedata.py


@pytest.mark.parametrize("name", [pytest.param(n, id=n) for n in SMALL])
def test_datasets_follow_the_contract(name):
    x, y = load_dataset(name, SMALL[name])
    assert x.dtype == np.float32 and y.dtype == np.int64 and len(x) == len(y)
    assert x.ndim in (2, 3, 4) and y.min() == 0


def test_digits_are_8x8_images_and_mnist1d_signals():
    assert load_dataset("digits", {})[0].shape[1:] == (1, 8, 8)
    assert load_dataset("mnist1d", SMALL["mnist1d"])[0].shape[1:] == (1, 40)


def test_mnist1d_is_cached_on_disk_as_plain_arrays(tmp_path, monkeypatch):
    import mnist1d.data

    monkeypatch.setattr(data, "CACHE_DIR", tmp_path)
    first = data._make_mnist1d(300, 1)
    assert [p.name for p in tmp_path.iterdir()] == ["mnist1d-300-1.npz"]

    def no_generation(*args):
        raise AssertionError("the cache was not used")

    monkeypatch.setattr(mnist1d.data, "make_dataset", no_generation)
    again = data._make_mnist1d(300, 1)
    assert np.array_equal(again[0], first[0]) and np.array_equal(again[1], first[1])


def test_a_replaced_cache_file_is_never_unpickled(tmp_path, monkeypatch):
    """A cache file holding a pickle (which could run any code on load) is refused and made again."""
    monkeypatch.setattr(data, "CACHE_DIR", tmp_path)
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (marker.write_text, ("code ran",))

    path = tmp_path / "mnist1d-300-1.npz"
    np.savez(path, x=np.array([Evil()], dtype=object), y=np.array([Evil()], dtype=object))
    x, y = data._make_mnist1d(300, 1)
    assert not marker.exists()
    assert x.dtype != object and len(x) == len(y) == 300
    with np.load(path, allow_pickle=False) as cached:  # made again, as plain arrays
        assert cached["x"].shape == x.shape


def test_the_package_never_unpickles_what_it_did_not_write():
    """Every torch.load is weights_only=True, every np.load allow_pickle=False; no pickle or joblib.load."""
    import re
    from pathlib import Path

    import study

    for path in Path(study.__file__).parent.rglob("*.py"):
        text = path.read_text()
        assert not re.search(r"\bimport pickle\b|pickle\.loads?\(|joblib\.load\(", text), path
        for call in re.findall(r"torch\.load\([^)]*\)", text):
            assert "weights_only=True" in call, (path, call)
        for call in re.findall(r"np\.load\([^)]*\)", text):
            assert "allow_pickle=False" in call, (path, call)


def test_split_is_fixed_disjoint_and_stratified():
    a = load_splits("synthetic", {"n_samples": 200}, preprocess="none", order="random", **SPLIT)
    b = load_splits("synthetic", {"n_samples": 200}, preprocess="none", order="random", **SPLIT)
    assert np.array_equal(a.x_val, b.x_val)
    assert (len(a.y_train), len(a.y_val), len(a.y_test)) == (120, 40, 40)
    rows = {tuple(r) for r in np.concatenate([a.x_train, a.x_val, a.x_test]).round(5)}
    assert len(rows) == 200  # no sample in two splits
    assert np.bincount(a.y_val).tolist() == [10, 10, 10, 10]


@pytest.mark.parametrize("name", [pytest.param(n, id=n) for n in PREPROCESSING])
def test_preprocessing_uses_training_statistics_per_channel(name):
    s = load_splits("digits", {}, preprocess=name, order="random", **SPLIT)
    raw = load_splits("digits", {}, preprocess="none", order="random", **SPLIT)
    train_mean = s.x_train.mean(axis=(0, 2, 3))
    if name == "none":
        assert np.array_equal(s.x_train, raw.x_train)
    else:
        assert np.allclose(train_mean, 0, atol=1e-4)
        # Validation is shifted by the *training* mean, so its own mean is not exactly zero.
        shift = raw.x_train.mean(axis=(0, 2, 3), keepdims=True)
        assert np.allclose(s.x_val * (raw.x_train.std() if name == "standardize" else 1),
                           raw.x_val - shift, atol=1e-3)
    if name == "standardize":
        assert np.allclose(s.x_train.std(axis=(0, 2, 3)), 1, atol=1e-4)


def test_vectors_are_standardised_per_feature():
    s = load_splits("synthetic", {"n_samples": 200}, preprocess="standardize", order="random", **SPLIT)
    assert np.allclose(s.x_train.mean(axis=0), 0, atol=1e-5)
    assert np.allclose(s.x_train.std(axis=0), 1, atol=1e-4)


def test_class_sorted_order_sorts_the_training_split_only():
    s = load_splits("synthetic", {"n_samples": 200}, preprocess="none", order="class_sorted", **SPLIT)
    assert np.all(np.diff(s.y_train) >= 0)
    assert not np.all(np.diff(s.y_val) >= 0)
    assert set(ORDERS) == {"random", "class_sorted"}


@pytest.mark.parametrize("name", [pytest.param(n, id=n) for n in ("center", "standardize")])
def test_every_order_arranges_the_same_rows_to_the_last_bit(name):
    """train_ids names each training row's sample; an order only permutes them. The statistics are summed
    in one order for all, so that the rows' values agree exactly (float sums in another order do not:
    mnist1d's standardised values differed by up to 5e-7), and a population may mix orders."""
    a, b = (load_splits("mnist1d", {"num_samples": 400}, preprocess=name, order=o, **SPLIT) for o in ORDERS)
    assert not np.array_equal(a.train_ids, b.train_ids)
    assert np.array_equal(np.sort(a.train_ids), np.sort(b.train_ids))
    assert np.array_equal(a.x_train[np.argsort(a.train_ids)], b.x_train[np.argsort(b.train_ids)])
    assert np.array_equal(a.y_train[np.argsort(a.train_ids)], b.y_train[np.argsort(b.train_ids)])
    assert np.array_equal(a.x_val, b.x_val) and np.array_equal(a.x_test, b.x_test)


def test_user_dataset_that_breaks_the_contract_is_refused(tmp_path, monkeypatch):
    (tmp_path / "baddata.py").write_text("def load():\n    return [[1.0, 2.0]], [0, 1]\n")
    monkeypatch.syspath_prepend(tmp_path)
    with pytest.raises(ValueError, match="must return"):
        load_dataset("baddata:load", {})
