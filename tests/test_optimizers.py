import pytest
import torch

from study.optimizers import OPTIMIZERS, USES_MOMENTUM


@pytest.mark.parametrize("name", [pytest.param(n, id=n) for n in OPTIMIZERS])
def test_every_optimizer_descends_a_quadratic(name):
    w = torch.nn.Parameter(torch.tensor([3.0, -2.0]))
    opt = OPTIMIZERS[name]([w], lr=0.05, momentum=0.9, weight_decay=0.0)
    start = (w ** 2).sum().item()
    for _ in range(20):
        opt.zero_grad()
        (w ** 2).sum().backward()
        opt.step()
    assert (w ** 2).sum().item() < start


@pytest.mark.parametrize("name", [pytest.param(n, id=n) for n in OPTIMIZERS])
def test_momentum_is_used_exactly_where_declared(name):
    opt = OPTIMIZERS[name]([torch.nn.Parameter(torch.zeros(1))], lr=0.1, momentum=0.7, weight_decay=0.01)
    group = opt.param_groups[0]
    assert group["lr"] == 0.1 and group["weight_decay"] == 0.01
    assert (group.get("momentum", 0) == 0.7) == (name in USES_MOMENTUM)
    assert group.get("nesterov", False) == (name == "nesterov")
