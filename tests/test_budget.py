import pytest

from study.budget import Budget, scaled_lr


def test_epochs_are_full_passes_with_a_short_last_batch():
    b = Budget.of(n_train=1000, batch_size=64, unit="epochs", amount=3)
    assert (b.iters_per_pass, b.total_iters, b.iters_per_epoch, b.n_epochs) == (16, 48, 16, 3)


def test_iterations_budget():
    b = Budget.of(n_train=1000, batch_size=64, unit="iterations", amount=100)
    assert (b.total_iters, b.n_epochs) == (100, 7)
    assert b.epoch_end(6) == 100  # the last epoch is short


@pytest.mark.parametrize("batch", [16, 32, 64, 128, 256])
def test_a_sample_budget_fixes_batch_times_iterations(batch):
    b = Budget.of(n_train=1000, batch_size=batch, unit="samples", amount=32768)
    assert b.total_iters * batch == 32768


def test_doubling_the_batch_halves_the_iterations():
    small = Budget.of(1000, 32, "samples", 64000)
    big = Budget.of(1000, 64, "samples", 64000)
    assert small.total_iters == 2 * big.total_iters


def test_epoch_can_be_redefined_as_n_iterations():
    b = Budget.of(n_train=1000, batch_size=10, unit="epochs", amount=2, epoch_iters=50)
    assert (b.total_iters, b.iters_per_epoch, b.n_epochs) == (200, 50, 4)


def test_linear_lr_scaling():
    assert scaled_lr(0.1, 128, "linear", 32) == pytest.approx(0.4)
    assert scaled_lr(0.1, 128, "none", 32) == 0.1


def test_unknown_unit_is_refused():
    with pytest.raises(ValueError, match="unit"):
        Budget.of(10, 2, "fortnights", 1)


@pytest.mark.parametrize("batch", [24, 128, 256, 300])
def test_a_sample_budget_trains_on_exactly_that_many_samples_whatever_the_batch(batch):
    # 1000 is not a multiple of these batches: short last batches used to lose up to 15% of the budget.
    import torch
    from study.batches import BatchOrder

    b = Budget.of(n_train=1000, batch_size=batch, unit="samples", amount=5000)
    order = BatchOrder(b, seed=3, shuffle=True, device=torch.device("cpu"))
    seen = torch.cat([order.indices(it) for it in range(b.total_iters)])
    assert len(seen) == b.samples == 5000
    assert torch.bincount(seen, minlength=1000).tolist() == [5] * 1000   # every sample once per pass
    assert all(len(order.indices(it)) == batch for it in range(b.total_iters - 1))


def test_epoch_and_iteration_budgets_count_the_short_last_batch():
    assert Budget.of(1000, 300, "epochs", 2).samples == 2000
    assert Budget.of(1000, 300, "iterations", 5).samples == 1000 + 300
