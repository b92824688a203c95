import math

import pytest

from study.schedules import SCHEDULES, lr_curve

N, LR = 100, 0.1

# name -> {iteration: expected lr} with gamma=0.1, step_fraction=0.3, no warmup
EXPECTED = {
    "constant": {0: LR, 50: LR, 99: LR},
    "step": {0: LR, 29: LR, 30: LR * 0.1, 60: LR * 0.01, 99: LR * 0.001},
    "multistep": {0: LR, 49: LR, 50: LR * 0.1, 75: LR * 0.01},
    "exponential": {0: LR, 50: LR * 0.1 ** 0.5, 99: LR * 0.1 ** 0.99},
    "cosine": {0: LR, 50: LR / 2, 25: LR * (1 + math.cos(math.pi / 4)) / 2},
    "onecycle": {0: LR / 25, 29: LR},  # starts at max_lr/25 and peaks at 30% of the run
}


def test_every_schedule_has_expectations():
    assert set(SCHEDULES) == set(EXPECTED)


@pytest.mark.parametrize("name", [pytest.param(n, id=n) for n in SCHEDULES])
def test_lr_at_chosen_iterations(name):
    lrs = lr_curve(name, LR, N, gamma=0.1, step_fraction=0.3)
    assert len(lrs) == N
    for it, expected in EXPECTED[name].items():
        assert lrs[it] == pytest.approx(expected, rel=1e-3), f"iteration {it}"


@pytest.mark.parametrize("name", [pytest.param(n, id=n) for n in SCHEDULES])
def test_warmup_ramps_linearly_then_hands_over(name):
    lrs = lr_curve(name, LR, N, warmup_iters=10)
    assert lrs[0] == pytest.approx(LR / 100)
    assert lrs[5] == pytest.approx(LR * (0.01 + 0.99 * 5 / 10), rel=1e-3)
    assert lrs[0] < lrs[5] < lrs[9]
    after = lr_curve(name, LR, N - 10)
    assert lrs[10:] == pytest.approx(after, rel=1e-3)


def test_warmup_is_one_treatment_for_every_schedule_onecycle_included():
    # One-cycle used to read "warmup" as its own ramp fraction: another treatment than for the others.
    ramps = {name: lr_curve(name, LR, N, warmup_iters=10)[:10] for name in SCHEDULES}
    assert all(r == pytest.approx(ramps["constant"]) for r in ramps.values())


def test_a_user_schedule_is_a_callable_stepped_every_iteration(tmp_path, monkeypatch):
    import torch

    from study.schedules import make_schedule, schedule_spec

    (tmp_path / "mysched.py").write_text(
        "from torch.optim import lr_scheduler as S\n"
        "def halving(opt, total_iters, gamma):\n"
        "    return S.StepLR(opt, step_size=max(1, total_iters // 2), gamma=gamma)\n")
    monkeypatch.syspath_prepend(tmp_path)
    assert schedule_spec("mysched:halving").uses == ("gamma",)
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    sched = make_schedule(opt, "mysched:halving", total_iters=10, warmup_iters=2, gamma=0.5)
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.01) and lrs[2] == pytest.approx(1.0) and lrs[-1] == pytest.approx(0.5)


def test_onecycle_is_torchs_onecycle_lr():
    import torch
    from torch.optim import lr_scheduler

    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=LR)
    sched = lr_scheduler.OneCycleLR(opt, max_lr=LR, total_steps=N, pct_start=0.3, cycle_momentum=False)
    torchs = []
    for _ in range(N):
        torchs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lr_curve("onecycle", LR, N) == pytest.approx(torchs, rel=1e-9)
