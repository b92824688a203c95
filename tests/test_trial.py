import pytest
import torch

from conftest import scalar_reads
from study.checkpoints import Checkpoints
from study.config import TrialConfig
from study.engine import run_sequential
from study.trial import Diverged, plan, prepare, seeded, train

CPU = torch.device("cpu")
TINY = dict(dataset="synthetic", data_options={"n_samples": 160, "n_features": 8, "n_classes": 3}, depth=1,
            width=16, batch_size=32, budget=3, optimizer="sgd_momentum", lr=0.05)


def tiny(**changes) -> TrialConfig:
    return TrialConfig(**{**TINY, **changes})


def test_training_learns_and_records_every_epoch():
    result = train(tiny(budget=5), CPU)
    assert [r["epoch"] for r in result.history] == [0, 1, 2, 3, 4]
    assert result.history[-1]["val_loss"] < result.history[0]["val_loss"]
    assert result.history[-1]["val_accuracy"] > 0.8
    assert set(result.history[0]) >= {"train_loss", "val_loss", "val_accuracy", "val_precision", "val_recall",
                                      "val_f1", "lr", "wall_time", "iteration"}


def test_same_seed_and_params_give_the_same_validation_loss_on_cpu():
    a = train(tiny(), CPU).final["val_loss"]
    b = train(tiny(), CPU).final["val_loss"]
    c = train(tiny(seed=1), CPU).final["val_loss"]
    assert a == b
    assert a != c


@pytest.mark.parametrize("optimizer", ["sgd", "sgd_momentum"])  # Adam's .item() is of its CPU step counter
def test_the_step_loop_reads_no_tensor_value_per_step(optimizer):
    """The CPU's view of test_cuda.py's no-host-sync check: four times the steps in one epoch read no more
    tensor values to the host (the epoch's end reads its loss)."""
    def reads(steps: int, batch: int) -> int:
        cfg = TrialConfig(dataset="synthetic", data_options={"n_samples": 300}, optimizer=optimizer, lr=0.01,
                          batch_size=batch, budget_unit="iterations", budget=steps)
        with scalar_reads() as counted:
            train(cfg, torch.device("cpu"))
        return counted.n

    assert reads(3, 32) == reads(12, 8) > 0


def test_huge_learning_rate_diverges_with_reason_and_step():
    with pytest.raises(Diverged) as info:
        train(tiny(lr=1e4, optimizer="sgd", budget=10), CPU)
    assert info.value.step > 0 and ("non-finite" in info.value.reason or "exceeded" in info.value.reason)
    assert info.value.history  # the epochs up to the divergence are kept


def test_epoch_can_be_a_fixed_number_of_iterations():
    result = train(tiny(budget_unit="iterations", budget=25, epoch_iters=10), CPU)
    assert [r["iteration"] for r in result.history] == [10, 20, 25]


def test_sample_budget_trades_batch_for_iterations():
    _, small = plan(tiny(budget_unit="samples", budget=3200, batch_size=16), CPU)
    _, big = plan(tiny(budget_unit="samples", budget=3200, batch_size=32), CPU)
    assert small.total_iters == 2 * big.total_iters == 200


def test_linear_scaling_multiplies_the_lr():
    result = train(tiny(batch_size=64, lr=0.01, lr_scaling="linear", reference_batch=32, budget=1), CPU)
    assert result.final["lr"] == pytest.approx(0.02)


def test_checkpoint_every_epoch_and_resume_matches_an_uninterrupted_run(tmp_path):
    full = train(tiny(budget=4), CPU)

    class Stop(Exception):
        pass

    def stop_after_two(history):
        if len(history) == 2:
            raise Stop

    ck = Checkpoints(tmp_path / "trial-0", keep=2)
    with pytest.raises(Stop):
        train(tiny(budget=4), CPU, on_epoch=stop_after_two, checkpoints=ck)
    assert ck.epochs() == [0, 1]
    resumed = train(tiny(budget=4), CPU, checkpoints=ck)
    assert resumed.resumed_from_epoch == 2
    assert [r["epoch"] for r in resumed.history] == [0, 1, 2, 3]
    assert resumed.final["val_loss"] == pytest.approx(full.final["val_loss"], rel=1e-6)
    assert ck.epochs() == [2, 3]


DROPOUT_NET = """\
import torch


def net(input_shape, n_classes):
    return torch.nn.Sequential(torch.nn.Linear(input_shape[0], 16), torch.nn.Dropout(0.3),
                               torch.nn.Linear(16, n_classes))
"""


class _Stop(Exception):
    pass


def _stop_after_two(history):
    if len(history) == 2:
        raise _Stop


def test_a_retry_prepared_before_it_trains_goes_on_with_its_checkpoint_s_random_stream(tmp_path, monkeypatch):
    """The population pool prepares a trial when it asks for it and may train it alone later: the retry
    still continues its checkpoint's random stream (dropout), and preparing it leaves the caller's alone."""
    (tmp_path / "dropnet.py").write_text(DROPOUT_NET)
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = tiny(model="dropnet:net", budget=4)
    full = train(cfg, CPU)
    ck = Checkpoints(tmp_path / "trial-0", keep=2)
    with pytest.raises(_Stop):
        train(cfg, CPU, on_epoch=_stop_after_two, checkpoints=ck)

    caller = torch.get_rng_state()
    p = prepare(cfg, CPU, ck)
    assert torch.equal(torch.get_rng_state(), caller)
    torch.manual_seed(12345)  # the worker's stream moves on between preparing and training
    with seeded(cfg.seed):
        resumed = run_sequential(p, checkpoints=ck)
    assert resumed.resumed_from_epoch == 2
    assert resumed.final["val_loss"] == pytest.approx(full.final["val_loss"], rel=1e-6)


def test_unshuffled_class_sorted_batches_hold_one_class(monkeypatch):
    seen = []
    import study.engine as trial_module

    original = trial_module.F.cross_entropy

    def spy(logits, y, *a, **k):
        if logits.requires_grad:
            seen.append(set(y.tolist()))
        return original(logits, y, *a, **k)

    monkeypatch.setattr(trial_module.F, "cross_entropy", spy)
    train(tiny(order="class_sorted", shuffle=False, budget=1, batch_size=8), CPU)
    single = sum(len(s) == 1 for s in seen)
    assert single >= len(seen) - 2  # all but the batches that straddle a class boundary
    seen.clear()
    train(tiny(order="class_sorted", shuffle=True, budget=1, batch_size=8), CPU)
    assert sum(len(s) == 1 for s in seen) < len(seen) / 2


def test_user_model_callable(tmp_path, monkeypatch):
    (tmp_path / "mymodels.py").write_text(
        "import torch\n"
        "def net(input_shape, n_classes, width, hidden_bias=True):\n"
        "    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(input_shape[0], width, bias=hidden_bias),\n"
        "                               torch.nn.ReLU(), torch.nn.Linear(width, n_classes))\n")
    monkeypatch.syspath_prepend(tmp_path)
    result = train(tiny(model="mymodels:net", model_options={"hidden_bias": False}, width=12, init="he"), CPU)
    assert result.model[1].out_features == 12 and result.model[1].bias is None
    assert result.final["val_accuracy"] > 0.5


@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_cnn_and_mlp_train_on_images(model):
    result = train(tiny(model=model, data_options={"n_samples": 120, "n_features": 16, "n_classes": 3,
                                                   "shape": [1, 4, 4]}, budget=4), CPU)
    assert len(result.history) == 4
    convs = [m for m in result.model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert bool(convs) == (model == "cnn")  # the CNN really convolves the 4x4 images
    assert result.history[-1]["val_loss"] < result.history[0]["val_loss"]  # it learns...
    assert result.final["val_accuracy"] > 0.6  # ...well above chance (1/3)


def test_a_trial_owns_its_randomness_and_leaves_the_caller_s_alone():
    """No global RNG: training neither reads nor changes torch's random stream, so two trials in one
    process (or a caller's own draws between them) never disturb each other."""
    cfg = tiny(budget=2)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    first = train(cfg, CPU)
    assert torch.equal(torch.get_rng_state(), before)  # the caller's stream is as it was
    torch.rand(1000)  # the caller draws; the next trial must not notice
    second = train(cfg, CPU)
    assert [h["val_loss"] for h in first.history] == [h["val_loss"] for h in second.history]


def test_the_data_cache_is_the_worker_s_and_clears():
    from study.datacache import DataCache

    cache = DataCache(size=1)
    a = train(tiny(budget=1), CPU, cache=cache)
    data = cache.get(tiny(), CPU)
    assert len(cache) == 1 and cache.get(tiny(seed=5), CPU) is data  # the same data settings share one entry
    other = cache.get(tiny(split_seed=1), CPU)
    assert len(cache) == 1 and other is not data  # another split evicts it (size 1)
    cache.clear()
    assert len(cache) == 0
    assert a.final["val_loss"] == train(tiny(budget=1), CPU).final["val_loss"]  # with or without a cache
