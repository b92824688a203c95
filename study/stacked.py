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


def _column(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Per-member values (a vector) shaped to broadcast over `like`'s stacked dimension."""
    return values.view(-1, *([1] * (like.dim() - 1)))


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
            for key in names:
                rows = [opt.state[o[name]][key] if opt.state.get(o[name], {}).get(key) is not None
                        else torch.zeros_like(stack[0]) for opt, o in zip(opts, owned[self.slice], strict=True)]
                self.state[name][key] = torch.stack(rows).detach()
        for opt in opts:
            opt._opt_called = True  # its scheduler checks that the optimizer stepped; this update is its step

    def sync(self) -> None:
        """Each member optimizer's state as views of the stacked state, in torch's own format: before a
        checkpoint or a release (not at every step, which would cost a tensor per member and param)."""
        for i, (opt, own) in enumerate(zip(self.opts, self.owned[self.slice], strict=True)):
            g = opt.param_groups[0]
            for name, param in own.items():
                if self.kind == "sgd":
                    if g["momentum"] != 0 and not self.fresh[i]:
                        opt.state[param] = {"momentum_buffer": self.state[name]["momentum_buffer"][i]}
                elif not self.fresh[i]:
                    opt.state[param] = {"step": torch.tensor(float(self.steps[i])),
                                        **{k: self.state[name][k][i] for k in _ADAM_STATE}}

    def release(self) -> None:
        """The members' optimizers get state of their own again (the stack is about to change or go)."""
        self.sync()
        for opt in self.opts:
            for st in opt.state.values():
                for key, value in st.items():
                    if isinstance(value, torch.Tensor) and key != "step":
                        st[key] = value.clone()

    @torch.no_grad()
    def step(self) -> None:
        groups = [opt.param_groups[0] for opt in self.opts]
        like = next(iter(self.params.values()))

        def vector(values: list[float]) -> torch.Tensor:  # once per step, not once per param
            # From pinned memory the copy to a GPU is asynchronous: no host sync in the step loop.
            return torch.tensor(values, dtype=like.dtype, pin_memory=like.is_cuda).to(like.device, non_blocking=True)

        if self.kind == "sgd":
            self._sgd(groups, vector)
        else:
            self._adam(groups, vector)
        self.fresh = [False] * len(self.opts)

    def _sgd(self, groups: list[dict], vector) -> None:
        lr, wd, mom = (vector([x[k] for x in groups]) for k in ("lr", "weight_decay", "momentum"))
        decay, moving = any(x["weight_decay"] for x in groups), any(x["momentum"] for x in groups)
        # The masks only where members differ: each torch.where is a pass over every param (same arithmetic).
        fresh = vector([float(f) for f in self.fresh]).bool() if len(set(self.fresh)) > 1 else self.fresh[0]
        nesterov = vector([float(x["nesterov"]) for x in groups]).bool() if any(x["nesterov"] for x in groups) else None
        all_moving = all(x["momentum"] for x in groups)
        for name, stack in self.params.items():
            p, g = stack.data[self.slice], stack.grad[self.slice]
            if decay:
                g = g + _column(wd, p) * p  # torch: grad.add(param, alpha=weight_decay)
            if moving:
                buf, m = self.state[name]["momentum_buffer"], _column(mom, p)
                if fresh is True:  # torch: clone(grad), else buf*m + grad
                    buf.copy_(g)
                elif fresh is False:
                    buf.mul_(m).add_(g)
                else:
                    buf.copy_(torch.where(_column(fresh, p), g, buf * m + g))
                step = buf if nesterov is None else torch.where(_column(nesterov, p), g + m * buf, buf)
                g = step if all_moving else torch.where(m != 0, step, g)
            p.add_(-_column(lr, p) * g)  # torch: param.add_(grad, alpha=-lr)

    def _adam(self, groups: list[dict], vector) -> None:
        self.steps = [s + 1 for s in self.steps]
        decoupled = [type(opt) is torch.optim.AdamW for opt in self.opts]
        decay = any(x["weight_decay"] for x in groups)
        coupled = vector([0.0 if d else x["weight_decay"] for x, d in zip(groups, decoupled, strict=True)])
        shrink = vector([1 - x["lr"] * x["weight_decay"] if d else 1.0 for x, d in zip(groups, decoupled, strict=True)])
        # 1 - beta in Python, as torch computes it, then rounded once to the tensors' dtype
        keep1 = vector([1 - x["betas"][0] for x in groups])
        beta2, keep2 = vector([x["betas"][1] for x in groups]), vector([1 - x["betas"][1] for x in groups])
        step_size = vector([x["lr"] / (1 - x["betas"][0] ** s) for x, s in zip(groups, self.steps, strict=True)])
        bc2_sqrt = vector([(1 - x["betas"][1] ** s) ** 0.5 for x, s in zip(groups, self.steps, strict=True)])
        eps = vector([x["eps"] for x in groups])
        for name, stack in self.params.items():
            p, g = stack.data[self.slice], stack.grad[self.slice]
            m, v = self.state[name]["exp_avg"], self.state[name]["exp_avg_sq"]
            if decay:
                g = g + _column(coupled, p) * p  # Adam: grad.add(param, alpha=weight_decay)
                p.mul_(_column(shrink, p))  # AdamW: param.mul_(1 - lr * weight_decay)
            m.lerp_(g, _column(keep1, p))
            v.mul_(_column(beta2, p)).addcmul_(g, g * _column(keep2, p))
            denom = (v.sqrt() / _column(bc2_sqrt, p)).add_(_column(eps, p))
            p.add_(-_column(step_size, p) * (m / denom))  # torch: param.addcdiv_(exp_avg, denom, value=-step_size)
