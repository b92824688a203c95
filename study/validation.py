"""Checking a search space's YAML against the config's constraints: every problem one ConfigError that
names the file (and `--set`), the dotted key and the value.

    >>> Validator("space.yaml", "space", overridden=set()).config({"study": {"name": "x"}, "training": {"lr": -1}})
    Traceback (most recent call last):
    ...
    study.errors.ConfigError: space.yaml: training.lr: must be a number > 0 (got -1)
"""
from __future__ import annotations

import dataclasses
import difflib
from typing import Any, Callable, Mapping

from study.config import (DICT_KNOBS, GRID_LIMIT, KNOBS, METRICS, SECTIONS, SEED, Param, StudyConfig,
                          StudySettings, TrialConfig, check_study_name, is_option, non_finite, option_of, source_of)
from study.constraints import Boolean, Interval, MappingOf, OneOf
from study.consumed import CONSUMED
from study.errors import ConfigError
from study.pruners import PRUNERS
from study.samplers import SAMPLERS

def _yaml(value: Any) -> str:
    """A value as a space's YAML writes it: `true`, not Python's `True`."""
    return str(value).lower() if isinstance(value, bool) else str(value)


class Validator:
    def __init__(self, source: str, stem: str, overridden: set[str]):
        self.source, self.stem, self.overridden = source, stem, overridden

    def error(self, key: str, value: Any, problem: str) -> ConfigError:
        return ConfigError(source_of(self.source, self.overridden, key), key, value, problem)

    def mapping(self, key: str, value: Any, allowed: tuple | Mapping) -> dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.error(key, value, "must be a mapping")
        for k in value:
            if k not in allowed:
                hint = difflib.get_close_matches(str(k), [str(a) for a in allowed], n=1)
                raise self.error(f"{key}.{k}" if key else str(k), value[k],
                                 f"unknown key{f' (did you mean {hint[0]!r}?)' if hint else ''}; "
                                 f"allowed: {', '.join(map(str, allowed))}")
        return value

    def check(self, key: str, name: str, value: Any) -> Any:
        return self.wrap(key, value, KNOBS[name].metadata["check"])

    def config(self, raw: dict) -> StudyConfig:
        self.mapping("", raw, ("study", *SECTIONS, "params"))
        bad = non_finite(raw)
        if bad:
            raise self.error(bad[0], bad[1], "must be a finite number")
        knobs: dict[str, Any] = {}
        for section in SECTIONS:
            keys = {(f.metadata["yaml"] or name): name for name, f in KNOBS.items() if f.metadata["section"] == section}
            for k, v in self.mapping(section, raw.get(section), keys).items():
                knobs[keys[k]] = self.check(f"{section}.{k}", keys[k], v)
        params = self.params(raw.get("params"), knobs)
        defaults = self.trial_config(knobs, "data")
        self.consumed(params, defaults)
        study = self.study(raw.get("study"), params)
        return StudyConfig(self.source, study, defaults, params, raw, overridden=frozenset(self.overridden))

    def consumed(self, params: dict[str, Param], defaults: TrialConfig) -> None:
        """A searched hyperparameter must be read by every trial it can apply to (consumed.py): searching
        momentum for Adam, or warmup_iters without a warmup, would spend trials on a value that changes
        nothing."""
        for name, (owner, uses) in CONSUMED.items():
            p = params.get(name)
            if p is None:
                continue
            owners = dict(p.when).get(owner)
            if owners is None:
                o = params.get(owner)
                owners = o.choices if o is not None and o.kind == "categorical" else (getattr(defaults, owner),)
            unused = [v for v in owners if name not in uses(v)]
            if unused:
                users = [_yaml(v) for v in owners if name in uses(v)]
                fix = (f"; make it conditional: when: {{{owner}: [{', '.join(users)}]}}" if users
                       else f"; no {owner} it can apply to uses it")
                raise self.error(f"params.{name}", unused[0], f"searched, but {owner} {_yaml(unused[0])} does not "
                                 f"use {name}{fix}")

    def trial_config(self, knobs: dict, key: str) -> TrialConfig:
        cfg = TrialConfig(**knobs)
        if cfg.val_fraction + cfg.test_fraction >= 1:
            raise self.error(f"{key}.val_fraction", cfg.val_fraction,
                             f"val_fraction + test_fraction must be < 1 (test_fraction is {cfg.test_fraction})")
        return cfg

    def params(self, raw: Any, knobs: dict) -> dict[str, Param]:
        params: dict[str, Param] = {}
        searchable = [n for n in KNOBS if n not in DICT_KNOBS]
        self.searched = {n for n, spec in (raw or {}).items() if isinstance(spec, dict)} if isinstance(raw, dict) \
            else set()
        self.mapping("params", {k: v for k, v in (raw or {}).items() if not is_option(k)} if isinstance(raw, dict)
                     else raw, searchable)
        for name, spec in (raw or {}).items():
            key = f"params.{name}"
            if is_option(name):
                self.option(key, name, spec, params, knobs)
                continue
            if self.set_in_section(name):
                continue  # `--set training.lr=...` fixes a searched lr: the section's value stands
            if isinstance(spec, dict) and spec.keys() & {"type", "choices", "low", "high", "range"}:
                param = self.distribution(key, name, spec, params, knobs)
                if param is not None:
                    params[name] = param
            else:
                knobs[name] = self.check(key, name, spec)  # a fixed value
        return params

    def option(self, key: str, name: str, spec: Any, params: dict[str, Param], knobs: dict) -> None:
        """`model.options.NAME` / `data.options.NAME`: a value or a distribution of the callable's own
        argument (preflight checks that its signature takes NAME). Its type comes from the YAML: choices, or
        `type: float|int` with low and high."""
        knob, option = option_of(name)
        if not isinstance(spec, dict) or not spec.keys() & {"type", "choices", "low", "high"}:
            knobs[knob] = {**(knobs.get(knob) or {}), option: spec}
            return
        self.mapping(key, spec, ("type", "choices", "low", "high", "log", "step", "when"))
        kind = spec.get("type", "categorical" if "choices" in spec else None)
        if kind not in ("categorical", "float", "int"):
            raise self.error(f"{key}.type", kind, "an option's distribution needs choices, or type: float or int "
                             "with low and high")
        when = self.when(f"{key}.when", spec.get("when"), params, knobs)
        if when is None:
            return
        if kind == "categorical":
            choices = spec.get("choices")
            if not isinstance(choices, list) or not choices:
                raise self.error(f"{key}.choices", choices, "must be a non-empty list")
            params[name] = Param(name, kind, choices=tuple(choices), when=when)
            return
        number = Interval(int if kind == "int" else float, None, None)
        low, high = (self.wrap(f"{key}.{b}", spec.get(b), number) for b in ("low", "high"))
        if low > high:
            raise self.error(f"{key}.low", low, f"low must be <= high ({high})")
        log = spec.get("log", False)
        if log is not False and (log is not True or low <= 0):
            raise self.error(f"{key}.log", log, "must be true or false, and true needs low > 0")
        step = spec.get("step")
        if step is not None:
            step = self.wrap(f"{key}.step", step, Interval(int, 1, None) if kind == "int"
                             else Interval(float, 0, None, "neither"))
        params[name] = Param(name, kind, low=low, high=high, log=log, step=step, when=when)

    def set_in_section(self, name: str) -> bool:
        meta = KNOBS[name].metadata
        return f"{meta['section']}.{meta['yaml'] or name}" in self.overridden

    def distribution(self, key: str, name: str, spec: dict, earlier: dict[str, Param],
                     fixed: dict | None = None) -> Param | None:
        """The param's distribution, or None when a `when` on a fixed setting can never hold."""
        self.mapping(key, spec, ("type", "choices", "low", "high", "log", "step", "when", "range"))
        numeric = "int" if KNOBS[name].type in ("int", int) else "float"
        kind = spec.get("type", "categorical" if "choices" in spec else numeric)
        if kind not in ("categorical", "float", "int"):
            raise self.error(f"{key}.type", kind, "must be categorical, float or int")
        when = self.when(f"{key}.when", spec.get("when"), earlier, fixed or {})
        if when is None:
            return None
        if kind == "categorical":
            choices = spec.get("choices")
            if not isinstance(choices, list) or not choices:
                raise self.error(f"{key}.choices", choices, "must be a non-empty list")
            checked = tuple(self.check(f"{key}.choices[{i}]", name, c) for i, c in enumerate(choices))
            return Param(name, kind, choices=checked, when=when)
        if numeric == "int" and kind == "float":
            raise self.error(f"{key}.type", kind, f"{name} is an integer setting; use type: int")
        if numeric == "float" and kind == "int":
            raise self.error(f"{key}.type", kind, f"{name} is a real-valued setting; use type: float")
        if "range" in spec:
            if spec["range"] != "auto" or name != "lr" or spec.keys() & {"low", "high", "step"} or \
                    spec.get("log") is not True:
                raise self.error(f"{key}.range", spec["range"], "only lr takes range: auto, with log: true and "
                                 "without low, high or step (the LR range test sets them)")
            # A placeholder until the LR range test runs (lrfind.resolve); never sampled as it is.
            return Param(name, kind, low=1e-6, high=1e-3, log=True, when=when, auto=True)
        for bound in ("low", "high"):
            if bound not in spec:
                raise self.error(f"{key}.{bound}", None, f"a {kind} distribution needs low and high")
        low = self.check(f"{key}.low", name, spec["low"])
        high = self.check(f"{key}.high", name, spec["high"])
        if low > high:
            raise self.error(f"{key}.low", low, f"low must be <= high ({high})")
        log = spec.get("log", False)
        if not isinstance(log, bool):
            raise self.error(f"{key}.log", log, "must be true or false")
        if log and low <= 0:
            raise self.error(f"{key}.low", low, "a log distribution needs low > 0")
        step = spec.get("step")
        if step is not None:
            try:
                step = Interval(int, 1, None)(step) if kind == "int" else Interval(float, 0, None, "neither")(step)
            except ValueError as exc:
                raise self.error(f"{key}.step", step, str(exc)) from None
            if log:
                raise self.error(f"{key}.step", step, "step cannot be combined with log: true")
        return Param(name, kind, low=low, high=high, log=log, step=step, when=when)

    def when(self, key: str, raw: Any, earlier: dict[str, Param], fixed: dict) -> tuple | None:
        """The conditions on earlier params; one on a fixed setting (a fixed param, a section value, or a
        --set) is resolved here: dropped when it holds, and None (never active) when it cannot."""
        conditions = []
        settable = [*earlier, *(n for n in KNOBS if n not in earlier and n not in DICT_KNOBS)]
        for other, allowed in self.mapping(key, raw, settable).items():
            allowed = allowed if isinstance(allowed, list) else [allowed]
            if not allowed:
                raise self.error(f"{key}.{other}", allowed, "must list at least one value")
            checked = tuple(self.check(f"{key}.{other}", other, v) for v in allowed)
            if other not in earlier and other in self.searched and not self.set_in_section(other):
                raise self.error(f"{key}.{other}", raw[other], f"{other} is searched below this param; a `when` "
                                 "can only depend on a param listed before it")
            if other in earlier:
                conditions.append((other, checked))
            elif fixed.get(other, getattr(TrialConfig(), other)) not in checked:
                return None
        return tuple(conditions)

    def study(self, raw: Any, params: dict[str, Param]) -> StudySettings:
        allowed = ("name", "question", "metric", "direction", "n_trials", "timeout", "sampler", "pruner",
                   "scientific", "max_initial_failures", "checkpoints", "max_iters", "engine", "population",
                   "threads", "confirm", "balance")
        s = self.mapping("study", raw, allowed)
        out: dict[str, Any] = {"name": s.get("name", self.stem)}
        out["name"] = self.wrap("study.name", out["name"], check_study_name)
        if "question" in s:
            if not isinstance(s["question"], str):
                raise self.error("study.question", s["question"], "must be a string")
            out["question"] = s["question"].strip()
        metric = s.get("metric", "val_loss")
        if metric not in METRICS:
            raise self.error("study.metric", metric, f"must be one of {', '.join(METRICS)}")
        direction = s.get("direction", METRICS[metric])
        if direction != METRICS[metric]:
            raise self.error("study.direction", direction, f"{metric} must be {METRICS[metric]}d")
        out.update(metric=metric, direction=direction)
        if "engine" in s:
            out["engine"] = self.wrap("study.engine", s["engine"], OneOf(("auto", "sequential", "population")))
        for k, low in (("n_trials", 1), ("max_initial_failures", 1), ("max_iters", 1), ("population", 1)):
            if k in s:
                out[k] = self.wrap(f"study.{k}", s[k], Interval(int, low, None))
        if s.get("timeout") is not None:
            out["timeout"] = self.wrap("study.timeout", s["timeout"], Interval(float, 0, None, "neither"))
        if s.get("threads") is not None:
            out["threads"] = self.wrap("study.threads", s["threads"], Interval(int, 1, None))
        if "checkpoints" in s:
            ck = self.mapping("study.checkpoints", s["checkpoints"], ("keep", "keep_best"))
            if "keep" in ck:
                out["checkpoint_keep"] = self.wrap("study.checkpoints.keep", ck["keep"], Interval(int, 1, None))
            if "keep_best" in ck:
                out["checkpoint_keep_best"] = self.wrap("study.checkpoints.keep_best", ck["keep_best"],
                                                        Interval(int, 0, None))
        if "confirm" in s:
            c = self.mapping("study.confirm", s["confirm"], ("top", "seeds", "vary_split"))
            for k, low in (("top", 1), ("seeds", 0)):
                if k in c:
                    out[f"confirm_{k}"] = self.wrap(f"study.confirm.{k}", c[k], Interval(int, low, None))
            if "vary_split" in c:
                out["confirm_vary_split"] = self.wrap("study.confirm.vary_split", c["vary_split"], Boolean())
        if "balance" in s:
            out["balance"] = self.wrap("study.balance", s["balance"], Interval(float, 0, 1))
        sampler = s.get("sampler", {})
        sampler = {"name": sampler} if isinstance(sampler, str) else sampler
        sampler = self.mapping("study.sampler", sampler, ("name", "seed", "options"))
        out["sampler"] = self.wrap("study.sampler.name", sampler.get("name", "tpe"), OneOf(SAMPLERS))
        seed = sampler.get("seed", 0)
        out["sampler_seed"] = None if seed is None else self.wrap("study.sampler.seed", seed, SEED)
        out["sampler_options"] = self.wrap("study.sampler.options", sampler.get("options") or {}, MappingOf())
        pruner = s.get("pruner", {})
        pruner = {"name": pruner} if isinstance(pruner, str) else pruner
        pruner = self.mapping("study.pruner", pruner, ("name", "options", "per_arm"))
        if "per_arm" in pruner:
            out["per_arm_pruning"] = self.wrap("study.pruner.per_arm", pruner["per_arm"], Boolean())
        out["pruner"] = self.wrap("study.pruner.name", pruner.get("name", "median"), OneOf(PRUNERS))
        out["pruner_options"] = self.wrap("study.pruner.options", pruner.get("options") or {}, MappingOf())
        scientific = s.get("scientific", [])
        if not isinstance(scientific, list):
            raise self.error("study.scientific", scientific, "must be a list of param names")
        for i, name in enumerate(scientific):
            if name not in params:
                raise self.error(f"study.scientific[{i}]", name, f"must be a searched param: {', '.join(params)}")
            if params[name].grid_size() is None:  # every trial its own arm, each confirmed with its own seeds
                raise self.error(f"study.scientific[{i}]", name, "is continuous, so each trial would be an arm of its "
                                 "own; a scientific param compares a few values: give it choices or a step")
            if params[name].when:  # an arm is a value of each: the others would be named by the default
                when = "; ".join(f"{k}: [{', '.join(map(_yaml, v))}]" for k, v in params[name].when)
                raise self.error(f"study.scientific[{i}]", name, f"is searched only when {when}, and each arm is a "
                                 "value of every scientific param, so the other trials' arms would be named by its "
                                 "default, which they never used; compare it unconditionally, or in a space of its own")
        out["scientific"] = tuple(scientific)
        settings = StudySettings(**out)
        points = self.strategies(settings, params)
        if points is not None and "n_trials" not in s:  # a grid's default target: each of its points once
            settings = dataclasses.replace(settings, n_trials=points)
        elif points is not None and settings.n_trials > points:  # past it, the grid sampler runs points again
            raise self.error("study.n_trials", settings.n_trials, f"the grid holds {points} point"
                             f"{'s' * (points != 1)}, each run once: ask for {points} trials or fewer")
        return settings

    def wrap(self, key: str, value: Any, check: Callable[[Any], Any]) -> Any:
        try:
            return check(value)
        except ValueError as exc:
            raise self.error(key, value, str(exc)) from None

    def strategies(self, s: StudySettings, params: dict[str, Param]) -> int | None:
        """Build the sampler and pruner once, so that bad options fail here and not mid-study. Returns the
        grid's points for the grid sampler, else None."""
        from study.pruners import make_pruner
        from study.samplers import make_sampler

        grid = {}
        if s.sampler == "grid":
            size = 1
            for name, p in params.items():
                n = p.grid_size()
                if n is None:
                    raise self.error(f"params.{name}", p.kind, "grid search needs categorical, int, or float with step")
                size *= n
                if size > GRID_LIMIT:
                    raise self.error(f"params.{name}", f"{n} values", f"the grid would hold more than {GRID_LIMIT} "
                                     "points; use a larger step or another sampler")
            grid = {n: p.grid() for n, p in params.items()}
        try:
            make_sampler(s.sampler, s.sampler_seed, s.sampler_options, grid)
        except (TypeError, ValueError) as exc:
            raise self.error("study.sampler.options", s.sampler_options, str(exc)) from None
        try:
            make_pruner(s.pruner, s.pruner_options)
        except (TypeError, ValueError) as exc:
            raise self.error("study.pruner.options", s.pruner_options, str(exc)) from None
        return size if s.sampler == "grid" else None
