"""Optimizer steps over stacked members: one update for all the members of a population that use SGD
(plain, momentum, Nesterov) or Adam/AdamW, instead of one torch optimizer call per member.

    >>> import torch
    >>> models = [torch.nn.Linear(2, 1) for _ in range(2)]
    >>> opts = [torch.optim.SGD(models[0].parameters(), lr=0.1), torch.optim.Adam(models[1].parameters())]
    >>> [kind_of(o) for o in opts]
    ['sgd', 'adam']

Each update is torch.optim's single-tensor code, written over the stacked tensors with the members'
hyperparameters as vectors: the same operations in the same order, so a member's step agrees with its
own torch optimizer's to float rounding (population tests compare them member by member). Each member's
torch optimizer still holds the member's state, as views into the stacked state, so that its
`state_dict()` is a normal checkpoint and either engine resumes it. Anything else (RMSprop, a user
optimizer, amsgrad, maximize, a dampening) is stepped by its own torch optimizer.
"""
from __future__ import annotations

import torch

_SGD_STATE = ("momentum_buffer",)
_ADAM_STATE = ("exp_avg", "exp_avg_sq")


def kind_of(opt: torch.optim.Optimizer) -> str | None:
    """'sgd' or 'adam' (Adam and AdamW) when the stacked update reproduces `opt`, else None."""
    if len(opt.param_groups) != 1:
        return None
    g = opt.param_groups[0]
    if g.get("maximize") or g.get("differentiable") or g.get("fused"):
        return None
    if type(opt) is torch.optim.SGD and g["dampening"] == 0:
        return "sgd"
    if type(opt) in (torch.optim.Adam, torch.optim.AdamW) and not g["amsgrad"] and not g.get("capturable"):
        return "adam"
    return None


class StackedOptimizer:
    """The update for members [start, stop) of the stack, all of one kind, with their optimizers' state
    moved into stacked tensors (and the optimizers' state made views of them)."""

    def __init__(self, kind: str, opts: list[torch.optim.Optimizer], params: dict[str, torch.Tensor],
                 owned: list[dict[str, torch.nn.Parameter]], start: int, stop: int):
        self.kind, self.opts, self.params, self.owned = kind, opts, params, owned
        self.slice = slice(start, stop)
        names = _SGD_STATE if kind == "sgd" else _ADAM_STATE
        self.fresh = [not opt.state for opt in opts]  # no state yet: torch starts it at the first step
        self.steps = [int(opt.state[next(iter(o.values()))]["step"]) if kind == "adam" and opt.state else 0
                      for opt, o in zip(opts, owned[self.slice], strict=True)]
        self.state: dict[str, dict[str, torch.Tensor]] = {}
        for name, stack in params.items():
            self.state[name] = {}
            zeros = torch.zeros_like(stack[0])  # one for all the fresh members: torch.stack copies it
            for key in names:
                rows = [opt.state[o[name]][key] if opt.state.get(o[name], {}).get(key) is not None
                        else zeros for opt, o in zip(opts, owned[self.slice], strict=True)]
                self.state[name][key] = torch.stack(rows).detach()
        self.synced = False
        for opt in opts:
            opt._opt_called = True  # its scheduler checks that the optimizer stepped; this update is its step

    def sync(self) -> None:
        """Each member optimizer's state as views of the stacked state, in torch's own format: before a
        checkpoint or a release (not at every step, which would cost a tensor per member and param). A
        member that leaves the stack gets copies of its own (population._own)."""
        if self.synced:  # no step since: the views are there (a release follows an epoch end's sync)
            return
        self.synced = True
        for i, (opt, own) in enumerate(zip(self.opts, self.owned[self.slice], strict=True)):
            g = opt.param_groups[0]
            for name, param in own.items():
                if self.kind == "sgd":
                    if g["momentum"] != 0 and not self.fresh[i]:
                        opt.state[param] = {"momentum_buffer": self.state[name]["momentum_buffer"][i]}
                elif not self.fresh[i]:
                    opt.state[param] = {"step": torch.tensor(float(self.steps[i])),
                                        **{k: self.state[name][k][i] for k in _ADAM_STATE}}

    @torch.no_grad()
    def step(self) -> None:
        groups = [opt.param_groups[0] for opt in self.opts]
        ps = [stack.data[self.slice] for stack in self.params.values()]
        gs = [stack.grad[self.slice] for stack in self.params.values()]
        if self.kind == "sgd":
            self._sgd(groups, ps, gs)
        else:
            self._adam(groups, ps, gs)
        self.fresh = [False] * len(self.opts)
        self.synced = False

    # The updates below run each operation on all params at once (torch._foreach_*, as torch.optim's own
    # foreach implementations do): per param, dispatching a dozen small ops cost more than their arithmetic
    # (a stacked Adam step of quick's MLP took nearly as long at K = 1 as at K = 16).

    def _sgd(self, groups: list[dict], ps: list[torch.Tensor], gs: list[torch.Tensor]) -> None:
        decay, moving = any(x["weight_decay"] for x in groups), any(x["momentum"] for x in groups)
        all_moving = all(x["momentum"] for x in groups)
        nesterov = any(x["nesterov"] for x in groups)
        col = _columns(ps, {
            "neg_lr": [-x["lr"] for x in groups], "wd": [x["weight_decay"] for x in groups],
            "mom": [x["momentum"] for x in groups], "moving": [float(x["momentum"] != 0) for x in groups],
            "nesterov": [float(x["nesterov"]) for x in groups]}, masks=("moving", "nesterov"))
        if decay:
            gs = torch._foreach_add(gs, torch._foreach_mul(col["wd"], ps))  # torch: grad.add(param, alpha=wd)
        if moving:
            # torch: clone(grad) at the first step, else buf * momentum + grad. A fresh member's buffer is
            # zeros here, and 0 * momentum + grad is grad exactly: one update serves both.
            bufs = [self.state[name]["momentum_buffer"] for name in self.params]
            torch._foreach_mul_(bufs, col["mom"])
            torch._foreach_add_(bufs, gs)
            steps = bufs
            if nesterov:
                ahead = torch._foreach_add(gs, torch._foreach_mul(col["mom"], bufs))
                steps = [torch.where(n, a, b) for n, a, b in zip(col["nesterov"], ahead, bufs, strict=True)]
            gs = steps if all_moving else [torch.where(m, s, g)
                                           for m, s, g in zip(col["moving"], steps, gs, strict=True)]
        torch._foreach_add_(ps, torch._foreach_mul(col["neg_lr"], gs))  # torch: param.add_(grad, alpha=-lr)

    def _adam(self, groups: list[dict], ps: list[torch.Tensor], gs: list[torch.Tensor]) -> None:
        self.steps = [s + 1 for s in self.steps]
        decoupled = [type(opt) is torch.optim.AdamW for opt in self.opts]
        decay = any(x["weight_decay"] for x in groups)
        at = list(zip(groups, self.steps, strict=True))
        col = _columns(ps, {
            "coupled": [0.0 if d else x["weight_decay"] for x, d in zip(groups, decoupled, strict=True)],
            "shrink": [1 - x["lr"] * x["weight_decay"] if d else 1.0 for x, d in zip(groups, decoupled, strict=True)],
            # 1 - beta in Python, as torch computes it, then rounded once to the tensors' dtype
            "keep1": [1 - x["betas"][0] for x in groups],
            "beta2": [x["betas"][1] for x in groups], "keep2": [1 - x["betas"][1] for x in groups],
            "neg_step_size": [-(x["lr"] / (1 - x["betas"][0] ** s)) for x, s in at],
            "bc2_sqrt": [(1 - x["betas"][1] ** s) ** 0.5 for x, s in at], "eps": [x["eps"] for x in groups]})
        ms = [self.state[name]["exp_avg"] for name in self.params]
        vs = [self.state[name]["exp_avg_sq"] for name in self.params]
        if decay:
            gs = torch._foreach_add(gs, torch._foreach_mul(col["coupled"], ps))  # Adam: grad.add(param, alpha=wd)
            torch._foreach_mul_(ps, col["shrink"])  # AdamW: param.mul_(1 - lr * weight_decay)
        torch._foreach_lerp_(ms, gs, col["keep1"])
        torch._foreach_mul_(vs, col["beta2"])
        torch._foreach_addcmul_(vs, gs, torch._foreach_mul(gs, col["keep2"]))
        denom = torch._foreach_sqrt(vs)
        torch._foreach_div_(denom, col["bc2_sqrt"])
        torch._foreach_add_(denom, col["eps"])
        ratio = torch._foreach_div(ms, denom)
        torch._foreach_mul_(ratio, col["neg_step_size"])
        torch._foreach_add_(ps, ratio)  # torch: param.addcdiv_(exp_avg, denom, value=-step_size)


def _columns(like: list[torch.Tensor], rows: dict[str, list[float]],
             masks: tuple[str, ...] = ()) -> dict[str, list[torch.Tensor]]:
    """Each row of per-member values as one column per tensor of `like`, shaped to broadcast over its
    stacked dimension; the rows named in `masks` as booleans, for torch.where. One host-to-device copy for
    them all, from pinned memory, so asynchronous on a GPU: no host sync in the step loop."""
    first = like[0]
    table = torch.tensor(list(rows.values()), dtype=first.dtype, pin_memory=first.is_cuda)
    table = table.to(first.device, non_blocking=True)
    dims = {t.dim() for t in like}
    out = {}
    for name, row in zip(rows, table, strict=True):
        row = row.bool() if name in masks else row  # once a step, not once a tensor
        by_dim = {d: row.view(-1, *([1] * (d - 1))) for d in dims}
        out[name] = [by_dim[t.dim()] for t in like]
    return out
