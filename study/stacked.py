"""Optimizer steps over stacked members: one update for all the members of a population that use SGD
(plain, momentum, Nesterov) or Adam/AdamW, instead of one torch optimizer call per member.

    >>> import torch
    >>> models = [torch.nn.Linear(2, 1) for _ in range(2)]
    >>> opts = [torch.optim.SGD(models[0].parameters(), lr=0.1), torch.optim.Adam(models[1].parameters())]
    >>> [kind_of(o) for o in opts]
    ['sgd', 'adam']

Each update is torch.optim's single-tensor code, written over the population's flat [K, P] parameter
tensor (a member's params side by side in its row) with the members' hyperparameters as [K, 1] columns:
the same operations in the same order, so a member's step agrees with its own torch optimizer's to float
rounding (population tests compare them member by member), and each operation is one kernel for all
members and params (`flatten` lays them out). Each member's torch optimizer still holds the member's
state, as views into the flat state, so that its `state_dict()` is a normal checkpoint and either engine
resumes it. Anything else (RMSprop, a user optimizer, amsgrad, maximize, a dampening) is stepped by its
own torch optimizer.
"""
from __future__ import annotations

import torch

_SGD_STATE = ("momentum_buffer",)
_ADAM_STATE = ("exp_avg", "exp_avg_sq")


def kind_of(opt: torch.optim.Optimizer, params=None) -> str | None:
    """'sgd' or 'adam' (Adam and AdamW) when the stacked update reproduces `opt`, else None. With `params`
    (its model's), only if `opt` steps exactly those: the stacked update moves every param of a member."""
    if len(opt.param_groups) != 1:
        return None
    g = opt.param_groups[0]
    if params is not None and {id(t) for t in g["params"]} != {id(t) for t in params}:
        return None
    if g.get("maximize") or g.get("differentiable") or g.get("fused"):
        return None
    if type(opt) is torch.optim.SGD and g["dampening"] == 0:
        return "sgd"
    if type(opt) in (torch.optim.Adam, torch.optim.AdamW) and not g["amsgrad"] and not g.get("capturable"):
        return "adam"
    return None


class StackedOptimizer:
    """The update for members [start, stop) of the stack, all of one kind: its rows of the stack's flat
    [K, P] parameter tensor, with their optimizers' state moved into flat tensors of the same layout (and
    the optimizers' state made views of them)."""

    def __init__(self, kind: str, opts: list[torch.optim.Optimizer], flat: torch.Tensor,
                 params: dict[str, torch.Tensor], owned: list[dict[str, torch.nn.Parameter]], start: int, stop: int):
        self.kind, self.opts, self.params = kind, opts, params
        self.owned = owned[start:stop]
        self.rows = slice(start, stop)
        self.flat = flat[self.rows]  # these members' params, one row each: an update is one op per formula step
        self.cols = layout_of(params)
        self.fresh = [not opt.state for opt in opts]  # no state yet: torch starts it at the first step
        self.steps = [int(opt.state[next(iter(o.values()))]["step"]) if kind == "adam" and opt.state else 0
                      for opt, o in zip(opts, self.owned, strict=True)]
        self.state = {key: self._gathered(key) for key in (_SGD_STATE if kind == "sgd" else _ADAM_STATE)}
        self.grad = torch.empty_like(self.flat)  # the rows' gradients, gathered into it once a step
        self.scratch = [torch.empty_like(self.flat) for _ in range(2 if kind == "adam" else 1)]
        self.synced = False
        for opt in opts:
            opt._opt_called = True  # its scheduler checks that the optimizer stepped; this update is its step

    def _gathered(self, key: str) -> torch.Tensor:
        """The members' state `key` as one flat tensor: zeros for a member without it (fresh), which the
        first update treats as torch's first step does (see _sgd)."""
        if all(self.fresh):
            return torch.zeros_like(self.flat)
        blocks = []
        for name, stack in self.params.items():
            zeros = torch.zeros_like(stack[0])  # one for all the fresh members: torch.stack copies it
            rows = [opt.state[o[name]][key] if opt.state.get(o[name], {}).get(key) is not None else zeros
                    for opt, o in zip(self.opts, self.owned, strict=True)]
            blocks.append(torch.stack(rows).detach().reshape(len(rows), -1))
        return torch.cat(blocks, dim=1)

    def _view(self, key: str, i: int, name: str) -> torch.Tensor:
        """Member i's state `key` of param `name`: a view of the flat state."""
        return self.state[key][i, self.cols[name]].view(self.params[name].shape[1:])

    def sync(self) -> None:
        """Each member optimizer's state as views of the flat state, in torch's own format: before a
        checkpoint or a release (not at every step, which would cost a tensor per member and param). A
        member that leaves the stack gets copies of its own (population._own)."""
        if self.synced:  # no step since: the views are there (a release follows an epoch end's sync)
            return
        self.synced = True
        for i, (opt, own) in enumerate(zip(self.opts, self.owned, strict=True)):
            g = opt.param_groups[0]
            for name, param in own.items():
                if self.kind == "sgd":
                    if g["momentum"] != 0 and not self.fresh[i]:
                        opt.state[param] = {"momentum_buffer": self._view("momentum_buffer", i, name)}
                elif not self.fresh[i]:
                    opt.state[param] = {"step": torch.tensor(float(self.steps[i])),
                                        **{k: self._view(k, i, name) for k in _ADAM_STATE}}

    @torch.no_grad()
    def step(self) -> None:
        groups = [opt.param_groups[0] for opt in self.opts]
        k = self.flat.shape[0]
        torch.cat([stack.grad[self.rows].reshape(k, -1) for stack in self.params.values()], dim=1, out=self.grad)
        if self.kind == "sgd":
            self._sgd(groups, self.flat, self.grad)
        else:
            self._adam(groups, self.flat, self.grad)
        self.fresh = [False] * len(self.opts)
        self.synced = False

    # The updates below are torch.optim's single-tensor arithmetic, each operation once over all the rows,
    # into buffers kept from step to step: one op per param and operation (torch._foreach_* over the
    # stacked tensors) was 60 kernels an Adam step of quick's MLP, each out-of-place result a fresh tensor.

    def _sgd(self, groups: list[dict], p: torch.Tensor, g: torch.Tensor) -> None:
        decay, moving = any(x["weight_decay"] for x in groups), any(x["momentum"] for x in groups)
        all_moving = all(x["momentum"] for x in groups)
        nesterov = any(x["nesterov"] for x in groups)
        col = _columns(p, {
            "neg_lr": [-x["lr"] for x in groups], "wd": [x["weight_decay"] for x in groups],
            "mom": [x["momentum"] for x in groups], "moving": [float(x["momentum"] != 0) for x in groups],
            "nesterov": [float(x["nesterov"]) for x in groups]}, masks=("moving", "nesterov"))
        tmp = self.scratch[0]
        if decay:
            g.add_(torch.mul(col["wd"], p, out=tmp))  # torch: grad.add(param, alpha=wd)
        if moving:
            # torch: clone(grad) at the first step, else buf * momentum + grad. A fresh member's buffer is
            # zeros here, and 0 * momentum + grad is grad exactly: one update serves both.
            buf = self.state["momentum_buffer"]
            buf.mul_(col["mom"]).add_(g)
            step = buf
            if nesterov:  # torch: grad.add(buf, alpha=momentum)
                step = torch.where(col["nesterov"], torch.mul(col["mom"], buf, out=tmp).add_(g), buf, out=tmp)
            g = step if all_moving else torch.where(col["moving"], step, g, out=g)
        p.add_(torch.mul(col["neg_lr"], g, out=tmp))  # torch: param.add_(grad, alpha=-lr)

    def _adam(self, groups: list[dict], p: torch.Tensor, g: torch.Tensor) -> None:
        self.steps = [s + 1 for s in self.steps]
        # AdamW, or Adam(decoupled_weight_decay=True) as a user's optimizer may be: the flag, not the type
        decoupled = [x.get("decoupled_weight_decay", isinstance(o, torch.optim.AdamW))
                     for x, o in zip(groups, self.opts, strict=True)]
        decay = any(x["weight_decay"] for x in groups)
        at = list(zip(groups, self.steps, strict=True))
        col = _columns(p, {
            "coupled": [0.0 if d else x["weight_decay"] for x, d in zip(groups, decoupled, strict=True)],
            "shrink": [1 - x["lr"] * x["weight_decay"] if d else 1.0 for x, d in zip(groups, decoupled, strict=True)],
            # 1 - beta in Python, as torch computes it, then rounded once to the tensors' dtype
            "keep1": [1 - x["betas"][0] for x in groups],
            "beta2": [x["betas"][1] for x in groups], "keep2": [1 - x["betas"][1] for x in groups],
            "neg_step_size": [-(x["lr"] / (1 - x["betas"][0] ** s)) for x, s in at],
            "bc2_sqrt": [(1 - x["betas"][1] ** s) ** 0.5 for x, s in at], "eps": [x["eps"] for x in groups]})
        m, v = self.state["exp_avg"], self.state["exp_avg_sq"]
        tmp, denom = self.scratch
        if decay:
            g.add_(torch.mul(col["coupled"], p, out=tmp))  # Adam: grad.add(param, alpha=wd)
            p.mul_(col["shrink"])  # AdamW: param.mul_(1 - lr * weight_decay)
        m.lerp_(g, col["keep1"])
        v.mul_(col["beta2"]).addcmul_(g, torch.mul(g, col["keep2"], out=tmp))
        torch.sqrt(v, out=denom).div_(col["bc2_sqrt"]).add_(col["eps"])
        # torch: param.addcdiv_(exp_avg, denom, value=-step_size)
        p.add_(torch.div(m, denom, out=tmp).mul_(col["neg_step_size"]))


def flatten(params: dict[str, torch.Tensor]) -> tuple[torch.Tensor | None, dict[str, torch.Tensor]]:
    """The stacked params ([K, ...] each) copied side by side into the rows of one flat [K, P] tensor, and
    each as a view of its columns (layout_of); (None, the params) where their dtypes differ, as one tensor
    cannot hold them."""
    rows = [v.detach().reshape(len(v), -1) for v in params.values()]
    if len({r.dtype for r in rows}) != 1:
        return None, params
    flat, cols = torch.cat(rows, dim=1), layout_of(params)
    return flat, {name: flat[:, cols[name]].view(v.shape) for name, v in params.items()}


def layout_of(params: dict[str, torch.Tensor]) -> dict[str, slice]:
    """Where each stacked param [K, ...] lies in the rows of the flat [K, P] tensor: its columns, in order."""
    cols, at = {}, 0
    for name, stack in params.items():
        n = stack[0].numel()
        cols[name], at = slice(at, at + n), at + n
    return cols


def _columns(like: torch.Tensor, rows: dict[str, list[float]], masks: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """Each row of per-member values as a [K, 1] column that broadcasts over the flat rows; the rows named
    in `masks` as booleans, for torch.where. One host-to-device copy for them all, from pinned memory, so
    asynchronous on a GPU: no host sync in the step loop."""
    table = torch.tensor(list(rows.values()), dtype=like.dtype, pin_memory=like.is_cuda)
    table = table.to(like.device, non_blocking=True).unsqueeze(-1)
    return {name: row.bool() if name in masks else row for name, row in zip(rows, table, strict=True)}
