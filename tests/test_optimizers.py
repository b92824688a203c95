import pytest
import torch

from study.optimizers import OPTIMIZERS, optimizer_spec


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
def test_each_optimizer_uses_exactly_the_hyperparameters_it_declares(name):
    opt = OPTIMIZERS[name]([torch.nn.Parameter(torch.zeros(1))], lr=0.1, momentum=0.7, weight_decay=0.01)
    group = opt.param_groups[0]
    assert group["lr"] == 0.1 and group["weight_decay"] == 0.01
    assert (group.get("momentum", 0) == 0.7) == ("momentum" in OPTIMIZERS[name].uses)
    assert group.get("nesterov", False) == (name == "nesterov")


def test_a_user_optimizer_gets_the_hyperparameters_its_signature_names(tmp_path, monkeypatch):
    (tmp_path / "myopt.py").write_text(
        "import torch\n"
        "def lion_ish(params, lr, weight_decay):\n"
        "    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, betas=(0.95, 0.98))\n")
    monkeypatch.syspath_prepend(tmp_path)
    spec = optimizer_spec("myopt:lion_ish")
    assert spec.uses == ("lr", "weight_decay")
    opt = spec([torch.nn.Parameter(torch.zeros(1))], lr=0.01, momentum=0.9, weight_decay=0.1)
    assert opt.param_groups[0]["betas"] == (0.95, 0.98) and opt.param_groups[0]["lr"] == 0.01
