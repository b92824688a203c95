"""Batch orders: a population's lockstep batches are each member's own, step by step."""
import pytest
import torch

from study.batches import BatchOrder, Lockstep
from study.budget import Budget

CPU = torch.device("cpu")


@pytest.mark.parametrize("unit, amount, its", [
    ("epochs", 4, [0, 0, 0]),               # fresh members
    ("epochs", 4, [0, 11, 33]),             # a member two passes ahead, one a pass ahead: 11 steps a pass
    ("iterations", 40, [3, 14, 25]),        # mid-pass, the same place in each pass
    ("samples", 2000, [0, 0, 5]),           # batches wrap across passes: each member sliced on its own
])
def test_lockstep_batches_are_each_member_s_own_batches(unit, amount, its):
    budget = Budget.of(n_train=300, batch_size=28, unit=unit, amount=amount)  # a short last batch of 20
    orders = [BatchOrder(budget, seed=s, shuffle=s != 1, device=CPU) for s in range(len(its))]
    alone = [BatchOrder(budget, seed=s, shuffle=s != 1, device=CPU) for s in range(len(its))]
    lockstep = Lockstep(orders, its)
    assert lockstep.same_place == (unit != "samples")
    for step in range(30):  # across pass boundaries, short last batches included
        want = torch.stack([o.indices(it + step) for o, it in zip(alone, its, strict=True)])
        assert torch.equal(lockstep.indices(step), want), step


def test_members_at_different_places_in_their_passes_are_sliced_one_by_one():
    budget = Budget.of(n_train=300, batch_size=30, unit="epochs", amount=3)  # no short batch: any offset aligns
    orders = [BatchOrder(budget, seed=s, shuffle=True, device=CPU) for s in range(2)]
    lockstep = Lockstep(orders, [0, 4])
    assert not lockstep.same_place
    assert torch.equal(lockstep.indices(7), torch.stack([orders[0].indices(7), orders[1].indices(11)]))
