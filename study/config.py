"""A search-space YAML file -> a validated, frozen `StudyConfig`.

    cfg = load_config("quick", overrides=["training.lr=3e-4", "study.n_trials=5"])
    cfg.study.n_trials          # 5
    cfg.params["optimizer"]     # Param(kind="categorical", choices=(...))
    cfg.resolve({"lr": 1e-4})   # a TrialConfig: defaults with one trial's values

The file has five sections: `study` (name, question, direction, sampler, pruner, ...), `data`, `model`
and `training` (fixed settings, each a field of `TrialConfig`), and `params` (the search space: any
`TrialConfig` field as a fixed value or a distribution, optionally conditional on another param with
`when`). Everything is checked before any trial runs; a problem raises `ConfigError` naming the file,
the dotted key and the bad value. Unknown keys are errors.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from study.budget import LR_SCALINGS, UNITS
from study.callables import is_reference, load_callable
from study.data import DATASETS, ORDERS, PREPROCESSING
from study.errors import ConfigError, unsafe_characters
from study.inits import INITS
from study.models import ACTIVATIONS, MODELS
from study.optimizers import OPTIMIZERS
from study.pruners import PRUNERS
from study.samplers import SAMPLERS
from study.schedules import SCHEDULES
from study.spaces import apply_overrides, read_space, shipped_spaces, space_path

__all__ = ["ConfigError", "StudyConfig", "TrialConfig", "load_config", "shipped_spaces", "check_study_name"]

SEED_LIMIT = 2**32  # numpy, scikit-learn and Optuna's samplers take seeds in [0, 2**32)
GRID_LIMIT = 100_000  # points a grid search may enumerate, all params together
NAME_LIMIT = 200  # characters of a study name; every storage's name column holds 512


# ---- value checks: each returns the normalised value or raises ValueError(problem) ----

def _number(v: Any) -> float:
    # PyYAML reads "1e-3" (no dot) as a string; accept it as the number the user meant.
    if isinstance(v, str):
        try:
            v = float(v)
        except ValueError:
            pass
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError("must be a number")
    try:
        return _finite(float(v))
    except OverflowError:  # an integer too large for a float
        raise ValueError("must be a finite number") from None


def _finite(x: float) -> float:
    if not math.isfinite(x):
        raise ValueError("must be a finite number")
    return x


def _int(low: int, high: int | None = None) -> Callable[[Any], int]:
    where = f">= {low}" if high is None else f"in [{low}, {high}]"

    def check(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or v < low or (high is not None and v > high):
            raise ValueError(f"must be an integer {where}")
        return v
    return check


_seed = _int(0, SEED_LIMIT - 1)


def _float(low: float, high: float | None = None, low_open: bool = False, high_open: bool = False
           ) -> Callable[[Any], float]:
    lo, hi = ("(" if low_open else "["), (")" if high_open else "]")
    where = f"in {lo}{low}, {high}{hi}" if high is not None else (f"> {low}" if low_open else f">= {low}")

    def check(v: Any) -> float:
        x = _number(v)
        too_low = x < low or (low_open and x == low)
        too_high = high is not None and (x > high or (high_open and x == high))
        if too_low or too_high:
            raise ValueError(f"must be a number {where}")
        return x
    return check


def _bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise ValueError("must be true or false")
    return v


def _mapping(v: Any) -> dict:
    if not isinstance(v, dict):
        raise ValueError("must be a mapping")
    return v


def _one_of(names: Mapping | tuple) -> Callable[[Any], str]:
    def check(v: Any) -> str:
        if v not in names:
            raise ValueError(f"must be one of {', '.join(names)}")
        return v
    return check


def _name_or_callable(registry: Mapping) -> Callable[[Any], str]:
    def check(v: Any) -> str:
        if isinstance(v, str) and is_reference(v):
            load_callable(v)  # raises ValueError with the import problem
            return v
        if v not in registry:
            raise ValueError(f"must be one of {', '.join(registry)} or package.module:callable")
        return v
    return check


def _knob(section: str, default: Any, check: Callable[[Any], Any], yaml_key: str | None = None) -> Any:
    return field(default=default, metadata={"section": section, "check": check, "yaml": yaml_key})


@dataclass(frozen=True)
class TrialConfig:
    """Everything one trial trains with. Each field is a key of its YAML section and can be a param."""

    # data
    dataset: str = _knob("data", "digits", _name_or_callable(DATASETS), "name")  # or package.module:callable
    data_options: dict = _knob("data", None, _mapping, "options")  # keyword arguments of the dataset function
    val_fraction: float = _knob("data", 0.2, _float(0, 1, True, True))  # of all samples
    test_fraction: float = _knob("data", 0.2, _float(0, 1, True, True))  # of all samples; never used to choose
    split_seed: int = _knob("data", 0, _seed)  # fixes the split and the `random` order
    preprocess: str = _knob("data", "standardize", _one_of(PREPROCESSING))  # training-split statistics
    order: str = _knob("data", "random", _one_of(ORDERS))  # order of the training split before batching
    shuffle: bool = _knob("data", True, _bool)  # a new permutation every pass
    # model
    model: str = _knob("model", "mlp", _name_or_callable(MODELS), "name")  # or package.module:callable
    model_options: dict = _knob("model", None, _mapping, "options")  # extra keyword arguments of the model
    depth: int = _knob("model", 2, _int(1))  # hidden layers (MLP) or conv blocks (CNN)
    width: int = _knob("model", 64, _int(1))  # units or channels per layer
    activation: str = _knob("model", "relu", _one_of(ACTIVATIONS))
    kernel_size: int = _knob("model", 3, _int(1))  # CNN only
    init: str = _knob("model", "pytorch_default", _one_of(INITS))
    # training
    optimizer: str = _knob("training", "adam", _one_of(OPTIMIZERS))
    lr: float = _knob("training", 1e-3, _float(0, low_open=True))  # base learning rate, before batch scaling
    momentum: float = _knob("training", 0.9, _float(0, 1, high_open=True))  # sgd_momentum, nesterov, rmsprop
    weight_decay: float = _knob("training", 0.0, _float(0))
    schedule: str = _knob("training", "constant", _one_of(SCHEDULES))
    gamma: float = _knob("training", 0.1, _float(0, 1, low_open=True))  # lr factor per step (exponential: whole run)
    step_fraction: float = _knob("training", 0.3, _float(0, 1, low_open=True))  # `step`: period, fraction of the run
    warmup: bool = _knob("training", False, _bool)  # linear warmup in front of the schedule
    warmup_iters: int = _knob("training", 0, _int(0))  # iterations of warmup, when warmup is on
    batch_size: int = _knob("training", 64, _int(1))  # samples per iteration
    budget_unit: str = _knob("training", "epochs", _one_of(UNITS))  # what `budget` counts
    budget: int = _knob("training", 10, _int(1))  # trial length, in budget_unit
    epoch_iters: int = _knob("training", 0, _int(0))  # iterations per "epoch" (validation); 0 = a full pass
    lr_scaling: str = _knob("training", "none", _one_of(LR_SCALINGS))  # linear: lr * batch / reference_batch
    reference_batch: int = _knob("training", 64, _int(1))
    precision: str = _knob("training", "fp32", _one_of(("fp32", "bf16", "fp16")))  # autocast dtype on CUDA
    seed: int = _knob("training", 0, _seed)  # model init and batch order
    divergence_factor: float = _knob("training", 10.0, _float(1, low_open=True))  # loss > factor * start: diverged

    def __post_init__(self) -> None:
        for name in ("data_options", "model_options"):
            if getattr(self, name) is None:
                object.__setattr__(self, name, {})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


KNOBS: dict[str, dataclasses.Field] = {f.name: f for f in dataclasses.fields(TrialConfig)}
SECTIONS = ("data", "model", "training")
_DICT_KNOBS = {"data_options", "model_options"}
METRICS = {"val_loss": "minimize", "val_accuracy": "maximize", "val_f1": "maximize",
           "val_precision": "maximize", "val_recall": "maximize"}


@dataclass(frozen=True)
class Param:
    """One entry of `params`: a distribution to sample, active only when its `when` conditions hold."""

    name: str
    kind: str  # categorical | float | int
    choices: tuple = ()
    low: Any = None
    high: Any = None
    log: bool = False
    step: Any = None
    when: tuple[tuple[str, tuple], ...] = ()  # (param, allowed values) pairs, all must hold

    def active(self, values: Mapping[str, Any]) -> bool:
        return all(values.get(name) in allowed for name, allowed in self.when)

    def suggest(self, trial: Any) -> Any:
        if self.kind == "categorical":
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(self.name, self.low, self.high, step=self.step or 1, log=self.log)
        return trial.suggest_float(self.name, self.low, self.high, step=self.step, log=self.log)

    def grid_size(self) -> int | None:
        """How many values a grid search visits, computed without enumerating; None when continuous."""
        if self.kind == "categorical":
            return len(self.choices)
        if self.kind == "int" and not self.log:
            return (self.high - self.low) // (self.step or 1) + 1
        if self.kind == "float" and self.step and not self.log:
            return int(round((self.high - self.low) / self.step)) + 1
        return None

    def grid(self) -> list:
        """The values a grid search visits (check grid_size first: a range may hold billions)."""
        if self.kind == "categorical":
            return list(self.choices)
        if self.kind == "int":
            return list(range(self.low, self.high + 1, self.step or 1))
        return [self.low + i * self.step for i in range(self.grid_size())]


@dataclass(frozen=True)
class StudySettings:
    name: str
    question: str = ""  # the question the study answers, shown by `study spaces` and the report
    metric: str = "val_loss"  # what is optimised and reported each epoch
    direction: str = "minimize"
    n_trials: int = 20  # finished (complete or pruned) trials to reach
    timeout: float | None = None  # seconds, per run command
    sampler: str = "tpe"
    sampler_seed: int | None = 0
    sampler_options: dict = field(default_factory=dict)
    pruner: str = "median"
    pruner_options: dict = field(default_factory=dict)
    scientific: tuple[str, ...] = ()  # params the report compares fairly; default: every categorical one
    max_initial_failures: int = 5  # stop when each of the first K trials failed
    checkpoint_keep: int = 2  # epoch checkpoints kept per running trial (a retry resumes from the newest)
    checkpoint_keep_best: int = 0  # finished trials whose final weights are kept, best first (best.pt aside)
    max_iters: int = 10**9  # planned iterations a trial may have; raise it to opt in to longer trials


@dataclass(frozen=True)
class StudyConfig:
    source: str  # the YAML file it came from
    study: StudySettings
    defaults: TrialConfig  # sections plus fixed params
    params: dict[str, Param]  # the searched params, in file order
    raw: dict  # the YAML after --set overrides, as stored with the study

    def resolve(self, values: Mapping[str, Any]) -> TrialConfig:
        return dataclasses.replace(self.defaults, **values)

    @property
    def scientific(self) -> tuple[str, ...]:
        return self.study.scientific or tuple(n for n, p in self.params.items() if p.kind == "categorical")

    def grid_space(self) -> dict[str, list]:
        """The grid sampler's search space ({} for other samplers: a range is enumerated only for a grid)."""
        if self.study.sampler != "grid":
            return {}
        return {name: p.grid() for name, p in self.params.items()}


# ---- loading and validating ----

def load_config(space: str = "quick", overrides: list[str] = ()) -> StudyConfig:
    """Read, override, and validate a search space. Raises ConfigError on any problem.

    Pure: it reads the file and runs no user code (preflight.check does, before a run)."""
    path = space_path(space)
    raw = read_space(path)
    overridden = apply_overrides(raw, overrides)
    return _Validator(str(path), path.stem, overridden).config(raw)


def check_study_name(name: Any) -> str:
    """A study name: any Unicode text up to NAME_LIMIT characters, without control characters,
    line separators or lone surrogates (raises ValueError with the problem)."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError("must be a non-empty string")
    if unsafe_characters(name):
        raise ValueError(f"must not contain control characters, line separators or lone surrogates "
                         f"(found {unsafe_characters(name)[0]!r})")
    if len(name) > NAME_LIMIT:
        raise ValueError(f"must be at most {NAME_LIMIT} characters (got {len(name)})")
    return name


def _non_finite(node: Any, key: str = "") -> tuple[str, float] | None:
    """The first NaN or infinity anywhere in a YAML document, with its dotted key."""
    if isinstance(node, float) and not math.isfinite(node):
        return key, node
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for k, v in items:
        found = _non_finite(v, f"{key}[{k}]" if isinstance(k, int) else f"{key}.{k}" if key else str(k))
        if found:
            return found
    return None


class _Validator:
    def __init__(self, source: str, stem: str, overridden: set[str]):
        self.source, self.stem, self.overridden = source, stem, overridden

    def error(self, key: str, value: Any, problem: str) -> ConfigError:
        from_set = any(key == k or key.startswith(k + ".") or k.startswith(key + ".") for k in self.overridden)
        return ConfigError(self.source + (" (with --set)" if from_set else ""), key, value, problem)

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
        try:
            return KNOBS[name].metadata["check"](value)
        except ValueError as exc:
            raise self.error(key, value, str(exc)) from None

    def config(self, raw: dict) -> StudyConfig:
        self.mapping("", raw, ("study", *SECTIONS, "params"))
        bad = _non_finite(raw)
        if bad:
            raise self.error(bad[0], bad[1], "must be a finite number")
        knobs: dict[str, Any] = {}
        for section in SECTIONS:
            keys = {(f.metadata["yaml"] or name): name for name, f in KNOBS.items() if f.metadata["section"] == section}
            for k, v in self.mapping(section, raw.get(section), keys).items():
                knobs[keys[k]] = self.check(f"{section}.{k}", keys[k], v)
        params = self.params(raw.get("params"), knobs)
        defaults = self.trial_config(knobs, "data")
        study = self.study(raw.get("study"), params)
        return StudyConfig(self.source, study, defaults, params, raw)

    def trial_config(self, knobs: dict, key: str) -> TrialConfig:
        cfg = TrialConfig(**knobs)
        if cfg.val_fraction + cfg.test_fraction >= 1:
            raise self.error(f"{key}.val_fraction", cfg.val_fraction,
                             f"val_fraction + test_fraction must be < 1 (test_fraction is {cfg.test_fraction})")
        return cfg

    def params(self, raw: Any, knobs: dict) -> dict[str, Param]:
        params: dict[str, Param] = {}
        searchable = [n for n in KNOBS if n not in _DICT_KNOBS]
        for name, spec in self.mapping("params", raw, searchable).items():
            key = f"params.{name}"
            if isinstance(spec, dict) and spec.keys() & {"type", "choices", "low", "high"}:
                params[name] = self.distribution(key, name, spec, params)
            else:
                knobs[name] = self.check(key, name, spec)  # a fixed value
        return params

    def distribution(self, key: str, name: str, spec: dict, earlier: dict[str, Param]) -> Param:
        self.mapping(key, spec, ("type", "choices", "low", "high", "log", "step", "when"))
        numeric = "int" if KNOBS[name].type in ("int", int) else "float"
        kind = spec.get("type", "categorical" if "choices" in spec else numeric)
        if kind not in ("categorical", "float", "int"):
            raise self.error(f"{key}.type", kind, "must be categorical, float or int")
        when = self.when(f"{key}.when", spec.get("when"), earlier)
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
                step = _int(1)(step) if kind == "int" else _float(0, low_open=True)(step)
            except ValueError as exc:
                raise self.error(f"{key}.step", step, str(exc)) from None
            if log:
                raise self.error(f"{key}.step", step, "step cannot be combined with log: true")
        return Param(name, kind, low=low, high=high, log=log, step=step, when=when)

    def when(self, key: str, raw: Any, earlier: dict[str, Param]) -> tuple:
        conditions = []
        for other, allowed in self.mapping(key, raw, list(earlier)).items():
            allowed = allowed if isinstance(allowed, list) else [allowed]
            if not allowed:
                raise self.error(f"{key}.{other}", allowed, "must list at least one value")
            checked = tuple(self.check(f"{key}.{other}", other, v) for v in allowed)
            conditions.append((other, checked))
        return tuple(conditions)

    def study(self, raw: Any, params: dict[str, Param]) -> StudySettings:
        allowed = ("name", "question", "metric", "direction", "n_trials", "timeout", "sampler", "pruner",
                   "scientific", "max_initial_failures", "checkpoints", "max_iters")
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
        for k, low in (("n_trials", 1), ("max_initial_failures", 1), ("max_iters", 1)):
            if k in s:
                out[k] = self.wrap(f"study.{k}", s[k], _int(low))
        if s.get("timeout") is not None:
            out["timeout"] = self.wrap("study.timeout", s["timeout"], _float(0, low_open=True))
        if "checkpoints" in s:
            ck = self.mapping("study.checkpoints", s["checkpoints"], ("keep", "keep_best"))
            if "keep" in ck:
                out["checkpoint_keep"] = self.wrap("study.checkpoints.keep", ck["keep"], _int(1))
            if "keep_best" in ck:
                out["checkpoint_keep_best"] = self.wrap("study.checkpoints.keep_best", ck["keep_best"], _int(0))
        sampler = s.get("sampler", {})
        sampler = {"name": sampler} if isinstance(sampler, str) else sampler
        sampler = self.mapping("study.sampler", sampler, ("name", "seed", "options"))
        out["sampler"] = self.wrap("study.sampler.name", sampler.get("name", "tpe"), _one_of(SAMPLERS))
        seed = sampler.get("seed", 0)
        out["sampler_seed"] = None if seed is None else self.wrap("study.sampler.seed", seed, _seed)
        out["sampler_options"] = self.wrap("study.sampler.options", sampler.get("options") or {}, _mapping)
        pruner = s.get("pruner", {})
        pruner = {"name": pruner} if isinstance(pruner, str) else pruner
        pruner = self.mapping("study.pruner", pruner, ("name", "options"))
        out["pruner"] = self.wrap("study.pruner.name", pruner.get("name", "median"), _one_of(PRUNERS))
        out["pruner_options"] = self.wrap("study.pruner.options", pruner.get("options") or {}, _mapping)
        scientific = s.get("scientific", [])
        if not isinstance(scientific, list):
            raise self.error("study.scientific", scientific, "must be a list of param names")
        for i, name in enumerate(scientific):
            if name not in params:
                raise self.error(f"study.scientific[{i}]", name, f"must be a searched param: {', '.join(params)}")
        out["scientific"] = tuple(scientific)
        settings = StudySettings(**out)
        self.strategies(settings, params)
        return settings

    def wrap(self, key: str, value: Any, check: Callable[[Any], Any]) -> Any:
        try:
            return check(value)
        except ValueError as exc:
            raise self.error(key, value, str(exc)) from None

    def strategies(self, s: StudySettings, params: dict[str, Param]) -> None:
        """Build the sampler and pruner once, so that bad options fail here and not mid-study."""
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
