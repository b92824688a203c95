"""The population engine against the sequential one: the same trials, the same numbers, member by member."""
import functools
import inspect
import math
from typing import Callable

import pytest
import torch

from conftest import own_forward_class, scalar_reads
from study.checkpoints import Checkpoints
from study.config import TrialConfig
from study.engine import Diverged, PreparedTrial, TrainResult, run_sequential
from study.optimizers import OPTIMIZERS
from study.population import _host_copies, _probe_step, fitting, run_population, why_not
from study.schedules import SCHEDULES
from study.trial import prepare, train

CPU = torch.device("cpu")
BASE = dict(dataset="synthetic", data_options={"n_samples": 300, "n_features": 8, "n_classes": 3}, depth=2, width=16,
            batch_size=32, budget=3)


def _cfg(i: int, **kw) -> TrialConfig:
    return TrialConfig(**{**BASE, "seed": i, "init": ("he", "xavier")[i % 2], "lr": 0.01, "momentum": 0.9,
                          "weight_decay": 1e-3 * (i % 2), **kw})


def _sequential(cfg: TrialConfig, checkpoints: Checkpoints | None = None, make=None, optimizer=None) -> TrainResult:
    """cfg's trial trained alone (with make or optimizer, as _with_model builds it)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        p = prepare(cfg, CPU) if make is None and optimizer is None else _with_model(cfg, make, optimizer)
        return run_sequential(p, checkpoints=checkpoints)


def _with_model(cfg: TrialConfig, make: Callable[[torch.nn.Module], torch.nn.Module] | None = None,
                optimizer: Callable[..., torch.optim.Optimizer] | None = None) -> PreparedTrial:
    """A prepared trial whose model is make(its MLP), as a user's model would be its own, and whose
    optimizer is optimizer(params) (default: one of its kind), with a constant schedule for them."""
    p = prepare(cfg, CPU)
    p.model = p.model if make is None else make(p.model)
    p.opt = (optimizer or functools.partial(type(p.opt), **p.opt.defaults))(p.model.parameters())
    p.sched = torch.optim.lr_scheduler.LambdaLR(p.opt, lambda _: 1.0)
    return p


def _owns_storage(t: torch.Tensor) -> bool:
    """Not a view of a larger tensor (a stack, a flat copy): saving it saves it alone."""
    return t.untyped_storage().nbytes() == t.numel() * t.element_size()


def _flat(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


@pytest.mark.parametrize("schedule", sorted(SCHEDULES))
def test_every_optimizer_and_schedule_trains_as_it_does_alone(schedule):
    """The central test: every member's weights agree with its sequential run to 1e-5 relative, and its
    per-epoch validation losses to 1e-5. Fused matmuls add in another order (about 1e-7 relative per
    step in fp32); over 30 steps of these small models that stays far below 1e-5, and far below seed
    noise (a validation NLL's standard deviation across seeds is about 1e-2)."""
    cfgs = [_cfg(i, optimizer=name, lr={"adam": 3e-3, "adamw": 3e-3, "rmsprop": 1e-3}.get(name, 0.05),
                 schedule=schedule) for i, name in enumerate(sorted(OPTIMIZERS))]
    fused = run_population([prepare(c, CPU) for c in cfgs])
    for cfg, got in zip(cfgs, fused, strict=True):
        want = _sequential(cfg)
        assert isinstance(got, TrainResult), got
        a, b = _flat(want.model), _flat(got.model)
        assert float((a - b).abs().max() / a.abs().max()) < 1e-5, cfg.optimizer
        assert [h["val_loss"] for h in got.history] == pytest.approx([h["val_loss"] for h in want.history],
                                                                    abs=1e-5)
        assert [h["train_loss"] for h in got.history] == pytest.approx([h["train_loss"] for h in want.history],
                                                                      rel=1e-5)
        assert [h["lr"] for h in got.history] == [h["lr"] for h in want.history]  # torch's own scheduler


def test_after_one_step_the_weights_agree_to_float_rounding():
    cfgs = [_cfg(i, optimizer=o, budget=1, budget_unit="iterations") for i, o in enumerate(["sgd", "adam"])]
    for cfg, got in zip(cfgs, run_population([prepare(c, CPU) for c in cfgs]), strict=True):
        a, b = _flat(_sequential(cfg).model), _flat(got.model)
        assert float((a - b).abs().max() / a.abs().max()) < 1e-6


def test_a_diverging_member_never_touches_the_others():
    healthy = [_cfg(0, optimizer="adam", lr=3e-3), _cfg(1, optimizer="sgd", lr=0.05)]
    wild = _cfg(2, optimizer="sgd", lr=1e6)
    alone = run_population([prepare(c, CPU) for c in healthy])
    together = run_population([prepare(c, CPU) for c in [healthy[0], wild, healthy[1]]])
    assert isinstance(together[1], Diverged) and together[1].step > 0
    for a, b in zip(alone, [together[0], together[2]], strict=True):
        assert torch.allclose(_flat(a.model), _flat(b.model), rtol=1e-6, atol=1e-7)
        assert all(math.isfinite(h["val_loss"]) for h in b.history)


def test_a_member_pruned_by_its_callback_leaves_and_the_others_go_on():
    """The members that stay carry their weights and optimizer state (Adam's moments, momentum) into the
    next, smaller stack; each member that is done holds tensors of its own, not views of a stack."""
    cfgs = [_cfg(0, optimizer="adam", lr=3e-3), _cfg(1, optimizer="sgd", lr=0.05),
            _cfg(2, optimizer="sgd_momentum", lr=0.02)]

    def prune(history):
        if history[-1]["epoch"] == 0:
            raise RuntimeError("pruned (test)")

    outcomes = run_population([prepare(c, CPU) for c in cfgs], on_epoch=[None, prune, None])
    assert isinstance(outcomes[1], RuntimeError) and len(outcomes[0].history) == len(outcomes[2].history) == 3
    for i in (0, 2):
        a, b = _flat(_sequential(cfgs[i]).model), _flat(outcomes[i].model)
        assert float((a - b).abs().max() / a.abs().max()) < 1e-5, cfgs[i].optimizer
        assert all(_owns_storage(t) for t in [*outcomes[i].model.parameters(), *outcomes[i].model.buffers()])


def test_a_member_s_checkpoint_resumes_alone_to_the_same_result(tmp_path):
    cfgs = [_cfg(i, optimizer="sgd_momentum", lr=0.02, schedule="cosine") for i in range(2)]
    cks = [Checkpoints(tmp_path / f"t{i}", keep=3, identity={"trial": i}) for i in range(2)]

    def stop_after_first(history):
        if history[-1]["epoch"] == 1:
            raise KeyboardInterrupt  # a worker stopped mid-trial

    with pytest.raises(KeyboardInterrupt):
        run_population([prepare(c, CPU, cks[i]) for i, c in enumerate(cfgs)], on_epoch=[stop_after_first, None],
                       checkpoints=cks)
    # epoch 1's checkpoint was written before the callback; resume member 0 with the sequential engine
    resumed = train(cfgs[0], CPU, checkpoints=Checkpoints(tmp_path / "t0", keep=3, identity={"trial": 0}))
    assert resumed.resumed_from_epoch == 2
    want = _sequential(cfgs[0])
    assert [h["val_loss"] for h in resumed.history] == pytest.approx([h["val_loss"] for h in want.history], abs=1e-5)


def test_a_member_s_checkpoint_holds_what_the_sequential_engine_saves_in_tensors_of_its_own(tmp_path):
    """The checkpoints are copied off the stack in one flat copy and split: each tensor must land under its
    own key with its own storage (a view of the flat copy or the stack would save all of it)."""
    cfgs = [_cfg(i, optimizer=o, lr=lr) for i, (o, lr) in enumerate([("adam", 3e-3), ("nesterov", 0.02),
                                                                          ("rmsprop", 1e-3)])]
    fused = [Checkpoints(tmp_path / f"fused{i}", keep=3, identity={"trial": i}) for i in range(3)]
    run_population([prepare(c, CPU) for c in cfgs], checkpoints=fused)
    for i, cfg in enumerate(cfgs):
        alone = Checkpoints(tmp_path / f"alone{i}", keep=3, identity={"trial": i})
        _sequential(cfg, alone)
        got, want = fused[i].latest(), alone.latest()
        assert got["epoch"] == want["epoch"] == 2 and got["optimizer"]["param_groups"] == want["optimizer"][
            "param_groups"]
        pairs = [(got["model"], want["model"])] + [(got["optimizer"]["state"][k], want["optimizer"]["state"][k])
                                                   for k in want["optimizer"]["state"]]
        for a, b in pairs:
            assert a.keys() == b.keys(), cfg.optimizer
            for key in b:
                assert a[key].shape == b[key].shape and a[key].dtype == b[key].dtype, key
                assert torch.allclose(a[key], b[key], rtol=1e-4, atol=1e-6), (cfg.optimizer, key)
                assert _owns_storage(a[key]), key


@pytest.mark.parametrize("fits", [True, False])
def test_checkpoint_tensors_reach_the_host_as_copies_of_their_own(monkeypatch, fits):
    """In one flat copy per dtype, or, where that copy would not fit in device memory, one by one."""
    stack = torch.arange(24.0).view(4, 2, 3)
    tensors = [stack[1], stack[3, 0], torch.tensor(7, dtype=torch.int64), stack[0].t()]
    if not fits:
        def too_big(*args, **kwargs):
            raise torch.OutOfMemoryError("CUDA out of memory (test)")
        monkeypatch.setattr(torch, "cat", too_big)
    copies = _host_copies(tensors)
    for t, c in zip(tensors, copies, strict=True):
        assert c.device.type == "cpu" and c.dtype == t.dtype and torch.equal(c, t)
        assert _owns_storage(c)  # not the stack's, not the flat copy's


@pytest.mark.parametrize("optimizer", ["sgd_momentum", "nesterov", "adam"])
def test_a_resumed_member_joins_fresh_ones_and_each_trains_as_it_does_alone(tmp_path, optimizer):
    """A retried trial brings its optimizer state (momentum buffers, Adam moments) into a population whose
    other members start theirs at this step: the stacked update treats each as torch would alone."""
    lr = 3e-3 if optimizer == "adam" else 0.02
    retried = _cfg(0, optimizer=optimizer, lr=lr)
    ck = Checkpoints(tmp_path / "t0", keep=3, identity={"trial": 0})

    def stop_after_first(history):
        raise KeyboardInterrupt  # a worker stopped after the first epoch's checkpoint

    with pytest.raises(KeyboardInterrupt):
        run_population([prepare(retried, CPU, ck)], on_epoch=[stop_after_first], checkpoints=[ck])
    fresh = [_cfg(i, optimizer=o, lr=lr) for i, o in ((1, optimizer), (2, "sgd_momentum"), (3, "nesterov"))]
    members = [prepare(retried, CPU, Checkpoints(tmp_path / "t0", keep=3, identity={"trial": 0}))]
    assert members[0].resumed_from_epoch == 1 and members[0].opt.state  # its state rides in with it
    got = run_population(members + [prepare(c, CPU) for c in fresh])
    for cfg, outcome in zip([retried, *fresh], got, strict=True):
        a, b = _flat(_sequential(cfg).model), _flat(outcome.model)
        assert float((a - b).abs().max() / a.abs().max()) < 1e-5, cfg


DROPOUT = "conftest:dropout_mlp"  # a user's model with dropout


@pytest.mark.parametrize("optimizer, options", [
    ("sgd_momentum", {}), ("adam", {}), ("sgd_momentum", {"norm": "batch"}), ("adam", {"norm": "layer"}),
    ("adam", {"own_forward": True}), ("sgd_momentum", {"own_forward": True, "norm": "batch"})])
def test_members_with_dropout_draw_their_own_masks_and_train_as_they_do_alone(optimizer, options):
    """Each member's dropout draws from its own CPU stream, seeded by its trial as the sequential engine
    seeds it: the same masks, so the same training, whatever the other members draw (with a BatchNorm too,
    whose statistics are each member's own, or a LayerNorm, whose weight and bias are), in study.fused's
    layers and, for a model with a forward of its own, under vmap."""
    lr = 3e-3 if optimizer == "adam" else 0.05
    cfgs = [_cfg(i, model=DROPOUT, model_options=options, optimizer=optimizer, lr=lr) for i in range(3)]
    for cfg, got in zip(cfgs, run_population([prepare(c, CPU) for c in cfgs]), strict=True):
        want = _sequential(cfg)
        a, b = _flat(want.model), _flat(got.model)
        assert float((a - b).abs().max() / a.abs().max()) < 1e-5, cfg.seed
        assert [h["val_loss"] for h in got.history] == pytest.approx([h["val_loss"] for h in want.history],
                                                                    abs=1e-5)


@pytest.mark.parametrize("own_forward", [False, True], ids=["layers", "vmap"])
def test_a_dropout_member_s_checkpoint_holds_its_own_stream_for_either_engine_to_resume(tmp_path, own_forward):
    """Stopped mid-run, one member resumes alone and another in a new population; the masks of each go on
    as in its uninterrupted run."""
    kw = dict(model=DROPOUT, model_options={"own_forward": own_forward}, optimizer="sgd_momentum", lr=0.05, budget=4)
    cfgs = [_cfg(i, **kw) for i in range(2)]
    fresh = _cfg(2, **kw)

    def ck(i: int) -> Checkpoints:
        return Checkpoints(tmp_path / f"t{i}", keep=3, identity={"trial": i})

    def stop_at_second(history):
        if history[-1]["epoch"] == 1:
            raise KeyboardInterrupt  # a worker stopped mid-trial, after member 0's second checkpoint

    with pytest.raises(KeyboardInterrupt):
        run_population([prepare(c, CPU, ck(i)) for i, c in enumerate(cfgs)], on_epoch=[stop_at_second, None],
                       checkpoints=[ck(0), ck(1)])
    alone = train(cfgs[0], CPU, checkpoints=ck(0))
    retried = prepare(cfgs[1], CPU, ck(1))
    together = run_population([retried, prepare(fresh, CPU)])
    assert alone.resumed_from_epoch == 2 and retried.resumed_from_epoch == 1
    for cfg, got in [(cfgs[0], alone), (cfgs[1], together[0]), (fresh, together[1])]:
        want = _sequential(cfg)
        assert [h["val_loss"] for h in got.history] == pytest.approx([h["val_loss"] for h in want.history],
                                                                    abs=1e-5), cfg.seed


@pytest.mark.parametrize("shuffle, budget", [(True, {}), (False, {}),
                                             (True, {"budget_unit": "samples", "budget": 500})])  # batches wrap
def test_members_of_either_order_are_one_population_and_each_trains_as_alone(shuffle, budget):
    """class_sorted and random arrange the same training rows, so members of both are one population: a
    member's batches index the population's data (the first member's, class-sorted) through its own
    rows, and each member sees the batches it sees alone."""
    cfgs = [_cfg(i, optimizer="sgd_momentum", lr=0.05, order=order, shuffle=shuffle, **budget)
            for i, order in enumerate(["class_sorted", "random", "class_sorted", "random"])]
    members = [prepare(c, CPU) for c in cfgs]
    assert why_not(members) is None
    for cfg, got in zip(cfgs, run_population(members), strict=True):
        want = _sequential(cfg)
        for key in ("train_loss", "val_loss"):  # validation: every order's x_val is the same, to the bit
            assert [h[key] for h in got.history] == pytest.approx([h[key] for h in want.history], rel=1e-5)
        a, b = _flat(want.model), _flat(got.model)
        assert float((a - b).abs().max() / a.abs().max()) < 1e-5, cfg.order


def test_a_population_reads_no_tensor_value_per_step():
    """test_cuda.py counts the host syncs of the step loop, on a GPU only; this counts, on the CPU, the ops
    that would be such syncs there, so that CI catches a per-step .item(). Four times the steps in one
    epoch must read no more (an epoch's end reads its losses in one .tolist(), which dispatches none)."""
    def reads(steps: int, batch: int) -> int:
        cfgs = [_cfg(i, optimizer=o, batch_size=batch, budget_unit="iterations", budget=steps)
                for i, o in enumerate(sorted(OPTIMIZERS))]
        members = [prepare(c, CPU) for c in cfgs]
        with scalar_reads() as counted:
            run_population(members)
        return counted.n

    assert reads(3, 32) == reads(12, 8)


@pytest.mark.parametrize("change, reason", [
    ({"batch_size": 64}, "differ in model, data or batch size"),
    ({"width": 32}, "differ in model, data or batch size"),
])
def test_trials_that_do_not_share_a_graph_are_not_one_population(change, reason):
    members = [prepare(_cfg(0), CPU), prepare(_cfg(1, **change), CPU)]
    assert reason in why_not(members)
    with pytest.raises(ValueError, match="cannot train as one population"):
        run_population(members)


def _batchnorm(mlp: torch.nn.Module) -> torch.nn.Module:
    """The MLP normalising its first hidden layer (a user model would, in its own code)."""
    body = list(mlp.children())  # Flatten, Linear(8, 16), ReLU, ...
    return torch.nn.Sequential(*body[:2], torch.nn.BatchNorm1d(16), *body[2:])


def _with_batchnorm(cfg: TrialConfig) -> PreparedTrial:
    return _with_model(cfg, _batchnorm)


@pytest.mark.parametrize("make", [_batchnorm, lambda mlp: own_forward_class()(_batchnorm(mlp))], ids=["layers", "vmap"])
def test_batchnorm_members_keep_their_own_running_statistics(tmp_path, make):
    cfgs = [_cfg(i, optimizer="sgd_momentum", lr=0.05) for i in range(3)]
    cks = [Checkpoints(tmp_path / f"t{i}", keep=1) for i in range(3)]
    fused = run_population([_with_model(c, make) for c in cfgs], checkpoints=cks)
    for ck, got in zip(cks, fused, strict=True):  # the last checkpoint: the final state, int64 counts too
        saved, final = ck.latest()["model"], got.model.state_dict()
        assert saved.keys() == final.keys()
        assert all(saved[k].dtype == v.dtype and torch.equal(saved[k], v) for k, v in final.items())
    for cfg, got in zip(cfgs, fused, strict=True):
        want = _sequential(cfg, make=make)
        norm_got = next(m for m in got.model.modules() if isinstance(m, torch.nn.BatchNorm1d))
        norm_want = next(m for m in want.model.modules() if isinstance(m, torch.nn.BatchNorm1d))
        assert int(norm_got.num_batches_tracked) == int(norm_want.num_batches_tracked) > 0
        assert torch.allclose(norm_got.running_mean, norm_want.running_mean, rtol=1e-5, atol=1e-6)
        assert torch.allclose(norm_got.running_var, norm_want.running_var, rtol=1e-5, atol=1e-6)
        assert [h["val_loss"] for h in got.history] == pytest.approx([h["val_loss"] for h in want.history], abs=1e-5)
    means = [next(m for m in r.model.modules() if isinstance(m, torch.nn.BatchNorm1d)).running_mean for r in fused]
    assert not torch.allclose(means[0], means[1])  # per member, not shared


class _Scaled(torch.nn.Module):
    """A user model with a scalar parameter, of its own dtype or of the others'."""

    def __init__(self, body: torch.nn.Module, dtype: torch.dtype):
        super().__init__()
        self.body, self.scale = body, torch.nn.Parameter(torch.ones((), dtype=dtype))

    def forward(self, x):
        return self.body(x) * self.scale.float()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_scalar_param_and_params_of_two_dtypes_train_as_they_do_alone(dtype):
    """float32: the scalar takes one column of the flat params. float64: the params cannot share one flat
    tensor, so each member's own optimizer steps it, its dtype kept."""
    cfgs = [_cfg(i, optimizer=o, lr=0.05) for i, o in enumerate(["sgd_momentum", "adam"])]
    scaled = functools.partial(_Scaled, dtype=dtype)
    fused = run_population([_with_model(c, scaled) for c in cfgs])
    for cfg, got in zip(cfgs, fused, strict=True):
        assert isinstance(got, TrainResult), got
        want = _sequential(cfg, make=scaled)
        assert got.model.scale.dtype == dtype and got.model.scale.item() != 1.0
        assert got.model.scale.item() == pytest.approx(want.model.scale.item(), rel=1e-6)
        a, b = _flat(want.model.body), _flat(got.model.body)
        assert float((a - b).abs().max() / a.abs().max()) < 1e-5
        assert [h["val_loss"] for h in got.history] == pytest.approx([h["val_loss"] for h in want.history], abs=1e-5)


class _Unused(torch.nn.Module):
    """A user model with a parameter its forward never uses: it gets no gradient."""

    def __init__(self, body: torch.nn.Module):
        super().__init__()
        self.body, self.spare = body, torch.nn.Parameter(torch.ones(3))

    def forward(self, x):
        return self.body(x)


def test_a_param_without_gradient_is_left_as_torch_leaves_it():
    """torch's optimizers skip a param whose grad is None (no decay, no momentum, no state); a stacked
    update would move it, so these members step alone, and train as they do sequentially."""
    cfgs = [_cfg(i, optimizer=o, lr=0.05) for i, o in enumerate(["sgd_momentum", "adam", "sgd"])]
    prepared = [_with_model(c, _Unused) for c in cfgs]
    fused = run_population(prepared)
    for cfg, p, got in zip(cfgs, prepared, fused, strict=True):
        assert isinstance(got, TrainResult), got
        want = _sequential(cfg, make=_Unused)
        assert torch.equal(got.model.spare, torch.ones(3)) and got.model.spare not in p.opt.state
        a, b = _flat(want.model.body), _flat(got.model.body)
        assert float((a - b).abs().max() / a.abs().max()) < 1e-5
        assert [h["val_loss"] for h in got.history] == pytest.approx([h["val_loss"] for h in want.history], abs=1e-5)


class _Frozen(torch.nn.Module):
    """A user model with a frozen layer (requires_grad False) before its MLP, the same in every member."""

    def __init__(self, body: torch.nn.Module, frozen: bool = True):
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            self.proj = torch.nn.Linear(8, 8).requires_grad_(not frozen)
        self.body = body

    def forward(self, x):
        return self.body(self.proj(x))


def test_a_frozen_param_stays_as_it_was():
    """torch's optimizers skip a param that requires no grad: its gradient is None. The stack's copy of it
    requires none either, and the members step alone, so that the frozen layer stays as it was and the
    rest trains as it does sequentially. Members that differ in what they froze are no population."""
    cfgs = [_cfg(i, optimizer=o, lr=0.05) for i, o in enumerate(["sgd_momentum", "adam", "sgd"])]
    fused = run_population([_with_model(c, _Frozen) for c in cfgs])
    for cfg, got in zip(cfgs, fused, strict=True):
        assert isinstance(got, TrainResult), got
        want = _sequential(cfg, make=_Frozen)
        assert torch.equal(got.model.proj.weight, _Frozen(torch.nn.Identity()).proj.weight)
        a, b = _flat(want.model), _flat(got.model)
        assert float((a - b).abs().max() / a.abs().max()) < 1e-5
        assert [h["val_loss"] for h in got.history] == pytest.approx([h["val_loss"] for h in want.history], abs=1e-5)
    mixed = [_with_model(cfgs[0], _Frozen), _with_model(cfgs[1], functools.partial(_Frozen, frozen=False))]
    assert "requires_grad" in why_not(mixed)


@pytest.mark.parametrize("optimizer", [functools.partial(torch.optim.SGD, lr=0.05, momentum=0.9),
                                       functools.partial(torch.optim.Adam, lr=3e-3)], ids=["sgd_momentum", "adam"])
def test_an_optimizer_of_some_of_the_params_leaves_the_others_as_they_were(optimizer):
    """A user's optimizer may step some params only (here the weight matrices): the stacked update, which
    moves a member's every param, is not for it, and the biases stay at their init as they do alone."""
    cfgs = [_cfg(i, optimizer="adam") for i in range(2)]
    weights_only = lambda params: optimizer([t for t in params if t.ndim > 1])  # noqa: E731
    prepared = [_with_model(c, optimizer=weights_only) for c in cfgs]
    biases = [[t.clone() for t in p.model.parameters() if t.ndim == 1] for p in prepared]
    fused = run_population(prepared)
    for cfg, before, got in zip(cfgs, biases, fused, strict=True):
        assert isinstance(got, TrainResult), got
        after = [t for t in got.model.parameters() if t.ndim == 1]
        assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))
        a, b = _flat(_sequential(cfg, optimizer=weights_only).model), _flat(got.model)
        assert float((a - b).abs().max() / a.abs().max()) < 1e-5


@pytest.mark.parametrize("options", [
    pytest.param({"weight_decay": 0.1, "decoupled_weight_decay": True}, id="decoupled", marks=pytest.mark.skipif(
        "decoupled_weight_decay" not in inspect.signature(torch.optim.Adam).parameters,
        reason="torch's Adam has the flag from 2.7")),
    pytest.param({"lr": torch.tensor(3e-3), "weight_decay": 0.1, "betas": (0.8, 0.99)}, id="tensor-lr")])
def test_a_user_s_adam_with_its_own_options_trains_as_it_does_alone(options):
    """A user's optimizer may be torch's Adam with AdamW's decoupled weight decay, which is a flag of its
    param group, not the AdamW type; or an lr given as a tensor. Each member steps as its own would."""
    cfgs = [_cfg(i, optimizer="adam") for i in range(2)]
    adam = functools.partial(torch.optim.Adam, **{"lr": 3e-3, **options})
    fused = run_population([_with_model(c, optimizer=adam) for c in cfgs])
    for cfg, got in zip(cfgs, fused, strict=True):
        assert isinstance(got, TrainResult), got
        a, b = _flat(_sequential(cfg, optimizer=adam).model), _flat(got.model)
        assert float((a - b).abs().max() / a.abs().max()) < 1e-5


@pytest.mark.parametrize("full_after", [0, 3])
def test_out_of_memory_halves_the_population_and_every_member_still_trains_as_alone(monkeypatch, full_after):
    """A CPU has no device memory to run out of, so after `full_after` steps the fused loss raises torch's
    own OutOfMemoryError for more than two members at once, as a GPU would past its memory
    (tests/test_cuda.py runs it there). A halving in the middle of an epoch loses no member's step: the
    epoch's train loss counts every step, before and after it, as alone."""
    import study.population as population

    real, calls = population.nll, []

    def two_fit(logits, *args, **kwargs):
        calls.append(logits.shape[0])
        if len(calls) > full_after and logits.shape[0] > 2 * BASE["batch_size"]:
            raise torch.OutOfMemoryError("CUDA out of memory (test)")
        return real(logits, *args, **kwargs)

    monkeypatch.setattr(population, "nll", two_fit)
    cfgs = [_cfg(i, optimizer=("sgd", "adam")[i % 2], lr=0.01) for i in range(4)]
    sizes = []
    fused = run_population([prepare(c, CPU) for c in cfgs], on_shrink=sizes.append)
    monkeypatch.setattr(population, "nll", real)
    assert sizes == [2] and calls[:full_after + 1] == [4 * BASE["batch_size"]] * (full_after + 1)  # an epoch: 6 steps
    for cfg, got in zip(cfgs, fused, strict=True):
        assert isinstance(got, TrainResult), got
        want = _sequential(cfg)
        a, b = _flat(want.model), _flat(got.model)
        assert float((a - b).abs().max() / a.abs().max()) < 1e-5
        assert [h["val_loss"] for h in got.history] == pytest.approx([h["val_loss"] for h in want.history],
                                                                    abs=1e-5)
        assert [h["train_loss"] for h in got.history] == pytest.approx([h["train_loss"] for h in want.history],
                                                                      rel=1e-5)


def test_the_memory_probe_steps_copies_and_leaves_the_trial_as_it_was():
    """fitting's probe step trains copies of the model: the trial's weights, gradients and BatchNorm
    statistics are untouched, and so is the CPU's random stream, from which a dropout in it draws."""
    p = _with_batchnorm(_cfg(0))
    before = {k: v.clone() for k, v in p.model.state_dict().items()}
    rng = torch.get_rng_state()
    _probe_step(p)
    assert all(torch.equal(before[k], v) for k, v in p.model.state_dict().items())
    assert all(param.grad is None for param in p.model.parameters())
    assert fitting(p, 16) == 16  # a few MB: this machine fits far more
    from study.population import _member_bytes

    assert _member_bytes(prepare(_cfg(0, model=DROPOUT), CPU)) > 0  # it failed under vmap: K went unchecked
    assert torch.equal(torch.get_rng_state(), rng)


def test_on_a_cpu_the_probe_sizes_populations_to_this_worker_s_share_of_the_free_memory():
    """A CPU has no out-of-memory error to back off from: a population past its memory was killed by the
    kernel, and its trials with it, at every retry. The probe counts what a member's step holds (the
    tensors its forward saves for backward, its parameters, gradients and optimizer state), which grows
    with the batch, and K is what fits in the worker's share of the free memory."""
    from study import memory
    from study.population import HEADROOM, OPTIMIZER_COPIES, _member_bytes

    small, large = (prepare(_cfg(0, batch_size=b, width=256), CPU) for b in (16, 128))
    params = sum(t.numel() * t.element_size() for t in small.model.parameters())
    activations = [_member_bytes(p) - 3 * params for p in (small, large)]
    assert 6 < activations[1] / activations[0] < 10, activations  # 8x the batch: 8x the activations
    assert activations[1] > 1.5 * 128 * (8 + 256 + 256) * 4  # at least the input and both hidden layers'
    per_member = _member_bytes(large) + OPTIMIZER_COPIES * params
    share = int(HEADROOM * memory.available() / (4.5 * per_member))  # as many workers as leave room for 4
    assert 3 <= fitting(large, 16, share) <= 5
    assert fitting(large, 16, share=10 * share) == 1  # never none: a trial that does not fit alone trains alone
