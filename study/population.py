"""The population engine: prepared trials that share one graph, trained at once as one fused model.

    >>> import torch
    >>> from study.config import TrialConfig
    >>> from study.trial import prepare
    >>> cfgs = [TrialConfig(dataset="synthetic", data_options={"n_samples": 200}, budget=2, lr=lr, seed=seed)
    ...         for lr, seed in [(0.01, 0), (0.1, 1), (0.03, 2)]]
    >>> members = [prepare(c, torch.device("cpu")) for c in cfgs]
    >>> why_not(members) is None          # same model, data and batch: one population
    True
    >>> outcomes = run_population(members)
    >>> [len(o.history) for o in outcomes]   # each a TrainResult, as run_sequential returns it
    [2, 2, 2]

Members may differ in everything that leaves the graph alone: init, seed, optimizer, lr, momentum, weight
decay, schedule, warmup, shuffle, and the order of the training split (its rows are the same samples,
so a member's batches index the population's data through `_rows`). They must share the model, the data
and the batch size (`FUSED_BY`).

Exactness: a member keeps its own torch optimizer and scheduler. Its parameters are views of its row of
one flat tensor that holds every member's parameters (`torch.func.stack_module_state`, then side by side),
so its optimizer updates the stack in place, and its gradients are views of the stack's gradients:
every update is torch's arithmetic for that member alone, run by its own optimizer or, for SGD and Adam,
by `study.stacked` over all such members at once. The forward and backward passes are fused: layer by
layer for models built of known layers (`study.fused`: batched matmuls, grouped convolutions), else `vmap`
over `functional_call`. A batched matmul adds in another order than a single one, so a member's
parameters agree with its sequential run to float rounding after one step (about 1e-7 relative in
fp32), and training lets that difference grow slowly; the tests bound both.
In a chaotic config it grows to the size of seed noise, as a change of torch's thread count does to a
sequential run: that is float summation, not the fusion.

Per member: its own batch order (the sequential engine's generator and seeds), its own train loss,
validation, divergence check, checkpoint and on_epoch callback. One member's NaN never reaches another:
the members' losses are summed only to run one backward pass, whose gradient for each member is that of
its own loss. A member that diverges, is pruned (its callback raises) or fails leaves at its epoch's end.
"""
from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch.func import stack_module_state

from study import fused, interrupts, memory, vmapped
from study.batches import BatchOrder, Lockstep
from study.checkpoints import Checkpoints
from study.engine import Diverged, PreparedTrial, TrainResult, _divergence, epoch_record
from study.metrics import EVAL_BATCH, evaluate, metrics_of, nll
from study.stacked import StackedOptimizer, flatten, kind_of
from study.streams import Streams

# The settings that shape the graph and the data: members of one population agree on all of them.
# (`order` only arranges the same training rows: see _rows.)
FUSED_BY = ("model", "depth", "width", "activation", "kernel_size", "model_options", "dataset", "data_options",
            "val_fraction", "test_fraction", "split_seed", "preprocess", "batch_size", "precision")
Outcome = "TrainResult | BaseException"
Job = "tuple[PreparedTrial, Callable[[list[dict]], None] | None, Checkpoints | None]"


class _TooMany(Exception):
    """The fused step ran out of device memory before it changed anything: fewer members may fit."""


class CannotFuse(Exception):
    """The model does not run under vmap (random ops, data-dependent control flow): train these trials
    one by one. run_population raises it only while none of the members left has stepped: they are
    unchanged."""


def fusion_key(p: PreparedTrial) -> str:
    return json.dumps({k: getattr(p.cfg, k) for k in FUSED_BY}, sort_keys=True, default=str) + str(p.device)


def why_not(members: list[PreparedTrial]) -> str | None:
    """Why these prepared trials cannot train as one population, or None when they can."""
    if len({fusion_key(p) for p in members}) > 1:
        return "the trials differ in model, data or batch size"
    if len({_signature(p.model) for p in members}) > 1:  # a user's model may differ for the same config
        return "the trials' models differ in their parameters' or buffers' names, shapes, dtypes or requires_grad"
    p = members[0]
    if p.cfg.precision == "fp16" and p.device.type == "cuda":
        return "fp16 needs a loss scaler per trial; use bf16 or fp32"
    if not _aligned([q.budget for q in members], [q.iteration for q in members]):
        return "the trials' batches would differ in size at some step"
    return None


def _signature(model: torch.nn.Module) -> tuple:
    """What stack_module_state requires to be the same in every member."""
    return (tuple((n, t.shape, t.dtype, t.requires_grad) for n, t in model.named_parameters()),
            tuple((n, t.shape, t.dtype) for n, t in model.named_buffers()))


def _aligned(budgets: list, iterations: list[int]) -> bool:
    """Whether every step gives each member a batch of the same size: a pass's short last batch comes at
    the same step for all, or (sample budgets) batches are full until a last one that all share."""
    if not any(b.wraps for b in budgets):
        return len({it % b.iters_per_pass for b, it in zip(budgets, iterations, strict=True)}) == 1
    ends = {(b.amount, it) for b, it in zip(budgets, iterations, strict=True)}
    return all(b.wraps for b in budgets) and (all(b.amount % b.batch_size == 0 for b in budgets) or len(ends) == 1)


# The share of the free memory that auto-sized populations plan to fill: the rest is for the allocator's
# fragmentation and validation's chunks, which the probe step does not see.
HEADROOM = 0.8
PROBE_MEMBERS = 2
OPTIMIZER_COPIES = 5  # of a member's params: Adam's two states, stacked.StackedOptimizer's grad and scratch
# A CPU step's peak over the tensors its forward saves for backward: the gradients of the largest activations
# (a 3-conv CNN at batch 128, K = 2 to 16: peak RSS 1.43-1.66x the saved bytes, 2026-12-08).
BACKWARD_PEAK = 1.5


def fitting(p: PreparedTrial, cap: int, share: int = 1) -> int:
    """How many trials like p fit at once in 1/share of its device's free memory (share: the workers of
    this machine, which share it), at most cap.

    One fused training step of PROBE_MEMBERS copies of p's model measures what a member holds: its
    parameters, gradients and activations at p's batch size (on CUDA, the allocator's peak; on the CPU,
    which keeps no such count, the tensors the forward saves for backward, times BACKWARD_PEAK); its
    optimizer is counted as five more copies of its parameters (Adam's state, the most that any optimizer
    here keeps, and the stacked update's gathered gradients and two buffers). A model that fails the probe
    for another reason than memory is left to the population to find (CannotFuse). On a CPU whose free
    memory this cannot read (not Linux), cap."""
    device = p.device
    free = _free(device)
    if cap <= 1 or free is None:
        return cap
    try:
        held = _member_bytes(p)
    except torch.OutOfMemoryError:
        return 1
    except Exception:
        return cap
    state = OPTIMIZER_COPIES * sum(t.numel() * t.element_size() for t in p.model.parameters())
    return max(1, min(cap, int(HEADROOM * free / share / (held + state))))


def _member_bytes(p: PreparedTrial) -> float:
    """What one member's training step holds beyond its optimizer's state, from a probe step."""
    device = p.device
    if device.type != "cuda":
        saved: dict[int, int] = {}

        def pack(t: torch.Tensor) -> torch.Tensor:
            saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()  # a storage saved twice counts once
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            stacked = _probe_step(p)
        weights = {t.untyped_storage().data_ptr() for t in stacked}  # saved too, counted as params
        activations = sum(n for ptr, n in saved.items() if ptr not in weights)
        params = sum(t.numel() * t.element_size() for t in stacked)
        return (BACKWARD_PEAK * activations + 3 * params) / PROBE_MEMBERS  # params: stacked, gradients, the trial's
    torch.cuda.synchronize(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    try:
        _probe_step(p)
        torch.cuda.synchronize(device)
    finally:
        torch.cuda.empty_cache()
    return (torch.cuda.max_memory_allocated(device) - base) / PROBE_MEMBERS


def _probe_step(p: PreparedTrial) -> list[torch.Tensor]:
    """One fused step of PROBE_MEMBERS copies of p's model; the stacked parameters. The trial's own model,
    random streams and data are left as they were."""
    models = [copy.deepcopy(p.model).train() for _ in range(PROBE_MEMBERS)]
    params, buffers = stack_module_state(models)
    params = {k: v.detach().requires_grad_() for k, v in params.items()}
    data = p.data
    batch = min(p.cfg.batch_size, len(data.x_train))  # the first samples: no random draw to disturb
    idx = torch.arange(batch, device=data.x_train.device).expand(PROBE_MEMBERS, batch)
    # on the CPU, a dropout draws from streams of its own, which leave torch's as it was (study.streams)
    streams = Streams([torch.get_rng_state() for _ in models]) if p.device.type == "cpu" else None
    with p.autocast():
        logits = fused_forward(models[0], streams)(params, buffers, data.x_train[idx])
        loss = F.cross_entropy(logits.float().flatten(0, 1), data.y_train[idx].flatten())
    loss.backward()
    return list(params.values())


# Why a model's random numbers cannot be drawn per member, by whether the members have streams of their
# own (on the CPU they do: see study.streams).
_RANDOM_FIX = {False: "only nn.Dropout modules and their 1d, 2d and 3d kinds can, not F.dropout in a forward "
                      "or another random op",
               True: "on CUDA, dropout draws from the device's shared stream, not the trial's"}


def fused_forward(template: torch.nn.Module, streams: Streams | None = None) -> fused.Forward:
    """The members' forward over stacked parameters: layer by layer where study.fused knows every layer
    (the shipped MLP and CNN), else vmap over functional_call (any model that runs under vmap); either
    draws each member's dropout masks from its own stream, where the members' `streams` are given."""
    return fused.forward_of(template, streams) or vmapped.forward_of(template, streams)


def _free(device: torch.device) -> int | None:
    """Bytes this process may still allocate. On CUDA, the driver's free memory and the allocator's cached
    blocks, within the per-process cap that torch.cuda.set_per_process_memory_fraction may have set;
    elsewhere, the machine's available memory within its cgroup's limit (None where neither is known)."""
    if device.type != "cuda":
        return memory.available()
    allocated = torch.cuda.memory_allocated(device)
    free = torch.cuda.mem_get_info(device)[0] + torch.cuda.memory_reserved(device) - allocated
    fraction = getattr(torch.cuda, "get_per_process_memory_fraction", lambda _: 1.0)(device)  # torch >= 2.6
    cap = fraction * torch.cuda.get_device_properties(device).total_memory
    return int(min(free, cap - allocated))


@dataclass
class _Member:
    p: PreparedTrial
    on_epoch: Callable[[list[dict]], None] | None
    checkpoints: Checkpoints | None
    order: BatchOrder
    it: int
    epoch: int
    clock: float
    start_loss: torch.Tensor | None
    rng: torch.Tensor  # its CPU random stream (its dropout's): the one its sequential run would draw from
    loss_sum: torch.Tensor | None = None
    steps: int = 0
    outcome: object = None  # a TrainResult or the exception that ended it
    done: bool = False
    index: int = 0  # its position in run_population's members and outcomes

    @property
    def epoch_end(self) -> int:
        return self.p.budget.epoch_end(self.epoch)


def _member(p: PreparedTrial, on_epoch, checkpoints) -> _Member:
    start = None if p.start_loss is None else torch.tensor(p.start_loss, device=p.device)
    clock = time.perf_counter() - (p.history[-1]["wall_time"] if p.history else 0.0)
    order = BatchOrder(p.budget, p.cfg.seed, p.cfg.shuffle, p.device)
    # As trial.train seeds it, or as a retry's checkpoint left it (run_sequential)
    rng = torch.Generator().manual_seed(p.cfg.seed).get_state() if p.rng is None else p.rng
    return _Member(p, on_epoch, checkpoints, order, p.iteration, p.first_epoch, clock, start, rng)


class _Stack:
    """The members' parameters as stacked leaf tensors; each member's own parameters are views of them.
    Members are ordered by optimizer kind, so that each kind's stacked update works on one slice."""

    def __init__(self, members: list[_Member]):
        kinds = [kind_of(m.p.opt, m.p.model.parameters()) for m in members]
        order = sorted(range(len(members)), key=lambda i: kinds[i] or "~")  # the others last, stepped alone
        self.members = [members[i] for i in order]
        models = [m.p.model for m in self.members]
        try:
            params, buffers = stack_module_state(models)
            # One flat [K, P] tensor holds every param, so that a stacked optimizer updates its members'
            # rows in one op (None: params of several dtypes, whose members step alone).
            self.flat, params = flatten(params)
        except torch.OutOfMemoryError:
            _own(self.members)  # some may hold views of the last stack, which must not outlive it
            raise _TooMany from None
        self.owned = [dict(model.named_parameters()) for model in models]
        # A frozen param (requires_grad False; stack_module_state refuses members that disagree) stays
        # frozen: it gets no gradient, as alone.
        self.params = {k: v.detach().requires_grad_(self.owned[0][k].requires_grad) for k, v in params.items()}
        self.buffers = buffers  # BatchNorm's running statistics, per member: the fused forward updates them
        self.owned_buffers = [dict(model.named_buffers()) for model in models]
        for i, (own, bufs) in enumerate(zip(self.owned, self.owned_buffers, strict=True)):
            for name, param in own.items():
                param.data = self.params[name].data[i]  # the member's optimizer now updates the stack in place
            for name, buf in bufs.items():
                buf.data = self.buffers[name][i]  # its evaluation and checkpoint see what the stack tracked
        self.template = models[0]
        # Dropout draws from the trial's CPU stream: seeded per trial on the CPU only (on CUDA it is the
        # device's, shared), so there alone can members draw what they would alone.
        cpu = self.members[0].p.device.type == "cpu"
        self.streams = Streams([m.rng for m in self.members]) if cpu else None
        self.forward = fused_forward(self.template, self.streams)
        self.rows = [_rows(self.members[0].p, m.p) for m in self.members]  # into the first member's data
        self.stacked: list[StackedOptimizer] = []
        self.alone: list[int] = []  # members whose own torch optimizer steps them
        try:
            ungraded = self._probe()
            sorted_kinds = [kinds[i] for i in order]
            for kind in dict.fromkeys(sorted_kinds):
                idx = [i for i, k in enumerate(sorted_kinds) if k == kind]
                if kind is None or self.flat is None or ungraded:
                    self.alone += idx
                else:
                    self.stacked.append(StackedOptimizer(kind, [self.members[i].p.opt for i in idx], self.flat,
                                                         self.params, self.owned, idx[0], idx[-1] + 1))
        except BaseException as exc:
            self.release()  # the members own their parameters again, unchanged
            if isinstance(exc, torch.OutOfMemoryError):
                raise _TooMany from None
            raise

    def _probe(self) -> bool:
        """Two samples each, on copies of the buffers: a model that cannot run fused says so now. Returns
        whether some param gets no gradient (frozen, or unused by the forward): torch's optimizers skip
        such a param, which a stacked update cannot, so its members then step alone."""
        x = self.members[0].p.data.x_train[:2]
        params = [t for t in self.params.values() if t.requires_grad]
        streams = None if self.streams is None else list(self.streams.states)  # the probe's draws are not theirs
        try:
            out = self.forward(self.params, {k: v.clone() for k, v in self.buffers.items()},
                               x.expand(len(self.members), *x.shape))
            if len(params) < len(self.params) or not out.requires_grad:
                return True
            return any(g is None for g in torch.autograd.grad(out.float().sum(), params, allow_unused=True))
        except torch.OutOfMemoryError:
            raise
        except Exception as exc:
            how = "torch.func.vmap" if fused.forward_of(self.template, self.streams) is None else "study.fused's layers"
            why = f"the model cannot run under {how}: {type(exc).__name__}: {exc}"
            if "randomness" in str(exc):  # vmap's: a random op it cannot draw per member
                why = (f"the model draws random numbers under {how} that cannot be drawn per member: "
                       + _RANDOM_FIX[self.streams is None])
            raise CannotFuse(why) from None
        finally:
            if streams is not None:
                self.streams.states = streams

    def optimizer_step(self) -> None:
        for update in self.stacked:
            update.step()
        for i in self.alone:
            for name, param in self.owned[i].items():
                grad = self.params[name].grad
                param.grad = None if grad is None else grad[i]  # None: frozen or unused, and torch skips it
            self.members[i].p.opt.step()

    def sync(self) -> None:
        for update in self.stacked:
            update.sync()
        if self.streams is not None:
            for m, rng in zip(self.members, self.streams.states, strict=True):
                m.rng = rng

    def release(self, staying: list[_Member] | None = None) -> None:
        """Give each member parameters and optimizer state of its own again (the stack changes or goes),
        but the members `staying` in the next stack: they keep views of this one, which that stack's build
        copies anyway. A copy each was a kernel per member and tensor: at K = 64, 744 of them."""
        self.sync()
        for own in self.owned:
            for param in own.values():
                param.grad = None
        stay = {id(m) for m in staying or ()}
        _own([m for m in self.members if id(m) not in stay])


def _rows(first: PreparedTrial, p: PreparedTrial) -> torch.Tensor | None:
    """Where each of p's training rows lies in first's data, the population's: None where p's split is
    arranged as first's (the same order), else a permutation. An order arranges the same samples,
    preprocessed with the same statistics (data.load_splits), so both rows hold the same values."""
    if p.cfg.order == first.cfg.order:
        return None
    # The k-th smallest sample id is row argsort(first's ids)[k] there and argsort(p's ids)[k] here.
    rows = torch.empty_like(p.data.train_ids)
    rows[p.data.train_ids.argsort()] = first.data.train_ids.argsort()
    return rows


def _own(members: list[_Member]) -> None:
    """The members' parameters, buffers and optimizer state as tensors of their own, no longer views of a
    stack (their optimizers' state as the last sync left it)."""
    for m in members:
        for t in [*m.p.model.parameters(), *m.p.model.buffers()]:
            t.data = t.data.clone()
        for st in m.p.opt.state.values():
            for key, value in st.items():
                if isinstance(value, torch.Tensor) and key != "step":
                    st[key] = value.clone()


def _step(stack: _Stack, idx: torch.Tensor, loss_sums: torch.Tensor) -> None:
    """One fused step of every member on its batch, idx [K, B]; its train loss is added to its row of
    loss_sums."""
    members = stack.members
    data = members[0].p.data  # one population, one dataset
    # Activations grow with K. An out-of-memory error raised before the update leaves every member as it
    # was after its last step (BatchNorm's statistics are put back from this copy), so that run_population
    # can retry the step with fewer members.
    before = {k: v.clone() for k, v in stack.buffers.items()}
    streams = None if stack.streams is None else list(stack.streams.states)
    try:
        with members[0].p.autocast():
            logits = stack.forward(stack.params, stack.buffers, data.x_train[idx])  # [K, B, C]
            k, b = idx.shape
            losses = nll(logits.float().reshape(k * b, -1), data.y_train[idx].reshape(-1)).view(k, b).mean(dim=1)
        for t in stack.params.values():
            t.grad = None
        losses.sum().backward()  # each member's gradient is that of its own loss
    except torch.OutOfMemoryError:
        for name, saved in before.items():
            stack.buffers[name].copy_(saved)
        if streams is not None:
            stack.streams.states = streams
        raise _TooMany from None
    stack.optimizer_step()
    losses = losses.detach()
    loss_sums += losses  # one op for all members: an add each cost about 200 us a step at K = 64
    for i, m in enumerate(members):
        m.p.sched.step()
        if m.start_loss is None:
            m.start_loss = losses[i]
        m.steps += 1
        m.it += 1


def _train(stack: _Stack, steps: int) -> None:
    """`steps` fused steps; the members' batches and running train losses of their epochs are kept
    stacked meanwhile."""
    batches = Lockstep([m.order for m in stack.members], [m.it for m in stack.members], stack.rows)
    zero = torch.zeros((), device=stack.members[0].p.device)
    loss_sums = torch.stack([zero if m.loss_sum is None else m.loss_sum for m in stack.members])
    try:
        for step in range(steps):
            interrupts.check()  # Ctrl-C or SIGTERM: stop here, between two steps
            _step(stack, batches.indices(step), loss_sums)
    finally:  # out of memory too: each member's sum as of its last step, for the retry
        for m, loss_sum in zip(stack.members, loss_sums.unbind(), strict=True):
            m.loss_sum = loss_sum


@torch.no_grad()
def _validate(stack: _Stack, ending: list[_Member]) -> list[dict[str, float] | Exception]:
    """The validation metrics of the members whose epoch ends here, as metrics.evaluate gives them one by
    one, from fused forwards in eval mode (one at a time, validation took a sixth of a K = 64 population's
    time). Out of device memory, or for a model that fails so, it goes back to one member at a time, where
    a member that fails fails alone."""
    if not ending:
        return []
    try:
        return _validate_fused(stack, ending)
    except Exception:
        return [_evaluated(m) for m in ending]


def _evaluated(m: _Member) -> dict[str, float] | Exception:
    try:
        return evaluate(m.p.model, m.p.data.x_val, m.p.data.y_val, m.p.autocast)
    except Exception as exc:
        return exc


def _validate_fused(stack: _Stack, ending: list[_Member]) -> list[dict[str, float]]:
    at = {id(m): i for i, m in enumerate(stack.members)}  # by identity: a member is one object
    where = [at[id(m)] for m in ending]
    params, buffers, rows = stack.params, stack.buffers, where
    if sorted(where) != list(range(len(stack.members))):  # a copy of some members' slices only when needed
        index = torch.tensor(where, device=ending[0].p.device)
        params = {k: v[index] for k, v in params.items()}
        buffers = {k: v[index] for k, v in buffers.items()}
        rows = list(range(len(ending)))
    p, k = ending[0].p, len(rows)
    x, y = p.data.x_val, p.data.y_val
    loss_sum, preds = torch.zeros(k, device=x.device), []
    chunk = max(1, EVAL_BATCH // k)  # samples per member and pass: bounds memory as evaluate's EVAL_BATCH does
    stack.template.eval()
    try:
        for i in range(0, len(x), chunk):
            xs, ys = x[i:i + chunk], y[i:i + chunk]
            with p.autocast():
                logits = stack.forward(params, buffers, xs.expand(k, *xs.shape))  # [k, n, C]
            loss_sum += nll(logits.float().reshape(-1, logits.shape[-1]), ys.repeat(k)).view(k, -1).sum(dim=1)
            preds.append(logits.argmax(dim=-1))
    finally:
        stack.template.train()
    scored = metrics_of(loss_sum / len(x), y, torch.cat(preds, dim=1), logits.shape[-1])
    return [scored[r] for r in rows]


def _losses(ending: list[_Member]) -> list[tuple[float, float]]:
    """Each member's (loss sum of its epoch, first loss) as floats, in one copy to the host: on a GPU one
    sync, where a float() of each was 2 K of them."""
    both = torch.stack([m.loss_sum for m in ending] + [m.start_loss for m in ending]).tolist()
    return list(zip(both[:len(ending)], both[len(ending):], strict=True))


def _saved_states(ending: list[_Member]) -> list[tuple[dict, dict] | None]:
    """Each ending member's model and optimizer state_dicts for its checkpoint (None without one), every
    tensor a host copy of its own: a view of the stack would save all of it. Gathered in one flat copy per
    device and dtype, then split on the host: a clone and a save each cost a kernel and, on a GPU, a
    device-to-host sync per member and tensor (882 of each an epoch end at K = 64 for quick's MLP)."""
    opts = [m.p.opt.state_dict() if m.checkpoints else None for m in ending]
    # The optimizers' param_groups stay as they are, as torch saves them (a tensor lr stays on its device).
    states = [(m.p.model.state_dict(), o["state"]) if o else None for m, o in zip(ending, opts, strict=True)]
    tensors: list[torch.Tensor] = []
    _map_tensors(states, tensors.append)
    it = iter(_host_copies(tensors))
    states = _map_tensors(states, lambda t: next(it))
    return [(st[0], {"state": st[1], "param_groups": o["param_groups"]}) if o else None
            for st, o in zip(states, opts, strict=True)]


def _host_copies(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """A host copy of each tensor, with a storage of its own: one flat copy per device and dtype, split on
    the host; one tensor at a time where that flat copy does not fit beside the stack in device memory."""
    copies: list[torch.Tensor] = [None] * len(tensors)
    for kind in dict.fromkeys((t.device, t.dtype) for t in tensors):
        where = [i for i, t in enumerate(tensors) if (t.device, t.dtype) == kind]
        try:
            flat = torch.cat([tensors[i].detach().reshape(-1) for i in where]).cpu()
        except torch.OutOfMemoryError:
            for i in where:
                copies[i] = tensors[i].detach().to("cpu", copy=True)
            continue
        for i, piece in zip(where, flat.split([tensors[i].numel() for i in where]), strict=True):
            copies[i] = piece.view(tensors[i].shape).clone()  # its own storage, not the flat copy's
    return copies


def _map_tensors(tree, fn):
    """tree (dicts, lists and tuples, as state_dicts nest) with fn(t) for each tensor t, in order."""
    if isinstance(tree, torch.Tensor):
        return fn(tree)
    if isinstance(tree, dict):
        return {k: _map_tensors(v, fn) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(_map_tensors(v, fn) for v in tree)
    return tree


def _end_epoch(m: _Member, metrics: dict[str, float], loss_sum: float, start_loss: float,
               saved: tuple[dict, dict] | None) -> None:
    """The divergence check, the checkpoint and the callback, exactly as run_sequential (the validation
    metrics come from _validate, the losses from _losses, the states to save from _saved_states)."""
    p = m.p
    train_loss = loss_sum / max(1, m.steps)
    p.history.append(epoch_record(m.epoch, m.it, p.budget, train_loss, metrics, p.sched.get_last_lr()[0], m.clock))
    m.loss_sum, m.steps = None, 0
    reason = _divergence(train_loss, metrics["val_loss"], start_loss, p.cfg.divergence_factor)
    if reason:
        raise Diverged(reason, m.it, p.history)
    if m.checkpoints:
        model, optimizer = saved
        m.checkpoints.save(m.epoch, {
            "model": model, "optimizer": optimizer, "scheduler": p.sched.state_dict(), "scaler": p.scaler.state_dict(),
            "rng": m.rng, "epoch": m.epoch, "iteration": m.it, "history": p.history,
            "start_loss": start_loss, "config": p.cfg.to_dict()})
    if m.on_epoch:
        m.on_epoch(p.history)
    m.epoch += 1
    if m.it >= p.budget.total_iters:
        m.outcome, m.done = TrainResult(p.model, p.history, p.budget, p.resumed_from_epoch), True


def run_population(members: list[PreparedTrial],
                   on_epoch: list[Callable[[list[dict]], None] | None] | None = None,
                   checkpoints: list[Checkpoints | None] | None = None, *,
                   on_done: Callable[[int, Outcome], None] | None = None,
                   refill: Callable[[int, Callable[[PreparedTrial], bool]], list[Job]] | None = None,
                   on_shrink: Callable[[int], None] | None = None, capacity: int | None = None) -> list[Outcome]:
    """Train `members` together; on_epoch[i](history) after each of member i's epochs (it may raise to
    stop that member alone). Returns, per member, its TrainResult or the exception that ended it.

    As members leave, on_done(i, outcome) is called for each, and refill(free, fits) may return up to
    `free` new (prepared, on_epoch, checkpoints) members for which fits(prepared) holds; they take the
    next indices. The population grows to `capacity` (default: as many as it started with) while refill gives.

    Out of device memory, the population halves: the members beyond the new size wait, each as it was
    after its last step, and take the first free slots; on_shrink(size) is told. No member fails for it
    unless it alone does not fit."""
    reason = why_not(members)
    if reason:
        raise ValueError(f"these trials cannot train as one population: {reason}")
    k = len(members)
    state = [_member(p, (on_epoch or [None] * k)[i], (checkpoints or [None] * k)[i]) for i, p in enumerate(members)]
    size = max(k, capacity or 0)
    for i, m in enumerate(state):
        m.index = i
    active: list[_Member] = []
    waiting: list[_Member] = []  # mid-training members that the last halving left out

    def join(m: _Member) -> None:
        m.p.model.train()
        if m.it < m.p.budget.total_iters:
            active.append(m)
        else:  # a retry whose checkpoint is its last epoch
            m.outcome, m.done = TrainResult(m.p.model, m.p.history, m.p.budget, m.p.resumed_from_epoch), True
            if on_done:
                on_done(m.index, m.outcome)

    for m in state:
        join(m)
    key = fusion_key(members[0])

    def fits(p: PreparedTrial) -> bool:
        return fusion_key(p) == key and why_not([*(m.p for m in active), p]) is None

    while True:
        while waiting and len(active) < size:
            active.append(waiting.pop(0))
        for p, callback, ck in (refill(size - len(active), fits) if refill and len(active) < size else []):
            state.append(_member(p, callback, ck))
            state[-1].index = len(state) - 1
            join(state[-1])
        if not active:
            break
        try:
            _train_until_one_leaves(active)
        except _TooMany:
            if len(active) == 1:
                raise torch.OutOfMemoryError("one trial alone does not fit in the device's memory") from None
            if active[0].p.device.type == "cuda":
                torch.cuda.empty_cache()
            size = len(active) // 2
            waiting[:0] = active[size:]
            del active[size:]
            if on_shrink:
                on_shrink(size)
            continue
        except Exception as exc:
            if isinstance(exc, CannotFuse) and all(m.it == m.p.iteration for m in state if not m.done):
                raise  # before any step of those left: they are unchanged, for the caller to train one by one
            # A fused step failed (a user's forward raised). Whose doing, no one can tell, so each member ends
            # with it, its measured epochs kept, and the study goes on.
            for m in active:
                m.outcome, m.done = exc, True
        for m in active:
            if m.done and on_done:
                on_done(m.index, m.outcome)
        active[:] = [m for m in active if not m.done]
    return [m.outcome for m in state]


def _train_until_one_leaves(active: list[_Member]) -> None:
    """Fused steps, epoch by epoch, until at least one member is done (finished, diverged, pruned, failed)."""
    stack = _Stack(active)
    try:
        while True:
            _train(stack, min(m.epoch_end - m.it for m in active))
            stack.sync()  # the members' optimizers show their state, for checkpoints
            ending = [m for m in active if m.it == m.epoch_end]
            for m, metrics, losses, saved in zip(ending, _validate(stack, ending), _losses(ending),
                                                 _saved_states(ending), strict=True):
                try:
                    if isinstance(metrics, Exception):
                        raise metrics
                    _end_epoch(m, metrics, *losses, saved)
                except Exception as exc:  # diverged, pruned by its callback, or failed: it alone stops
                    m.outcome, m.done = exc, True
            if any(m.done for m in active):
                break
    except BaseException:
        stack.release()  # each member its own copies: some may wait for a slot, or the run ends here
        raise
    stack.release(staying=[m for m in active if not m.done])
