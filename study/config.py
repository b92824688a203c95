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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import yaml

from study.budget import LR_SCALINGS, UNITS
from study.callables import is_reference, load_callable
from study.data import DATASETS, ORDERS, PREPROCESSING, load_dataset
from study.inits import INITS
from study.models import ACTIVATIONS, MODELS
from study.optimizers import OPTIMIZERS
from study.pruners import PRUNERS
from study.samplers import SAMPLERS
from study.schedules import SCHEDULES


class ConfigError(Exception):
    """Bad input: printed as one line naming where (file or flag), the dotted key and the value."""

    def __init__(self, source: str, key: str, value: Any, problem: str):
        super().__init__(source, key, value, problem)
        self.source, self.key, self.value, self.problem = source, key, value, problem

    def __str__(self) -> str:
        return f"{self.source}: {self.key}: {self.problem} (got {self.value!r})"


# ---- value checks: each returns the normalised value or raises ValueError(problem) ----

def _number(v: Any) -> float:
    # PyYAML reads "1e-3" (no dot) as a string; accept it as the number the user meant.
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            pass
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError("must be a number")
    return float(v)


def _int(low: int) -> Callable[[Any], int]:
    def check(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise ValueError(f"must be an integer >= {low}")
        return v
    return check


def _float(low: float, high: float | None = None, low_open: bool = False, high_open: bool = False
           ) -> Callable[[Any], float]:
    lo, hi = ("(" if low_open else "["), (")" if high_open else "]")
    where = f"in {lo}{low}, {high}{hi}" if high is not None else (f"> {low}" if low_open else f">= {low}")

    def check(v: Any) -> float:
        x = _number(v)
        too_low = x < low or (low_open and x == low)
        too_high = high is not None and (x > high or (high_open and x == high))
        if x != x or too_low or too_high:
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
    split_seed: int = _knob("data", 0, _int(0))  # fixes the split and the `random` order
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
    seed: int = _knob("training", 0, _int(0))  # model init and batch order
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

    def grid(self) -> list | None:
        """The values a grid search visits, or None when the distribution is continuous."""
        if self.kind == "categorical":
            return list(self.choices)
        if self.kind == "int" and not self.log:
            return list(range(self.low, self.high + 1, self.step or 1))
        if self.kind == "float" and self.step and not self.log:
            n = int(round((self.high - self.low) / self.step))
            return [self.low + i * self.step for i in range(n + 1)]
        return None


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
    checkpoint_keep: int = 2  # epoch checkpoints kept per trial


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
        return {name: p.grid() for name, p in self.params.items()}


# ---- locating files ----

def spaces_dir() -> Path:
    """The shipped search spaces: package data when installed, ../search_spaces in a checkout."""
    here = Path(__file__).resolve().parent
    packaged = here / "search_spaces"
    return packaged if packaged.is_dir() else here.parent / "search_spaces"


def shipped_spaces() -> dict[str, Path]:
    return {p.stem: p for p in sorted(spaces_dir().glob("*.yaml"))}


def space_path(space: str) -> Path:
    shipped = shipped_spaces()
    if space in shipped:
        return shipped[space]
    path = Path(space)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ConfigError(space, "SPACE", space, "no such file")
        return path
    hint = difflib.get_close_matches(space, shipped, n=1)
    raise ConfigError("search space", "SPACE", space,
                      f"no shipped space or YAML file of that name"
                      f"{f' (did you mean {hint[0]!r}?)' if hint else ''}; shipped: {', '.join(shipped)}")


# ---- loading and validating ----

def load_config(space: str = "quick", overrides: list[str] = (), probe_data: bool = True) -> StudyConfig:
    """Read, override, and validate a search space. Raises ConfigError on any problem."""
    path = space_path(space)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(document)"
        raise ConfigError(str(path), where, getattr(exc, "problem", str(exc)), "YAML syntax error") from None
    except OSError as exc:
        raise ConfigError(str(path), "SPACE", space, f"cannot read: {exc.strerror}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(str(path), "(top level)", raw, "must be a mapping of sections")
    overridden = apply_overrides(raw, overrides)
    return _Validator(str(path), path.stem, overridden, probe_data).config(raw)


def apply_overrides(raw: dict, overrides: list[str]) -> set[str]:
    """Apply `dotted.key=value` strings in place (values parsed as YAML); return the keys set."""
    keys = set()
    for item in overrides:
        key, eq, text = item.partition("=")
        if not eq or not key or any(not part for part in key.split(".")):
            raise ConfigError("--set", item, item, "expected dotted.key=value, e.g. training.lr=1e-3")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            raise ConfigError("--set", key, text, "value is not valid YAML") from None
        node = raw
        parts = key.split(".")
        for i, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError("--set", ".".join(parts[: i + 1]), child, "is not a mapping, cannot set a key in it")
            node = child
        node[parts[-1]] = value
        keys.add(key)
    return keys


class _Validator:
    def __init__(self, source: str, stem: str, overridden: set[str], probe_data: bool):
        self.source, self.stem, self.overridden, self.probe_data = source, stem, overridden, probe_data

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
        knobs: dict[str, Any] = {}
        for section in SECTIONS:
            keys = {(f.metadata["yaml"] or name): name for name, f in KNOBS.items() if f.metadata["section"] == section}
            for k, v in self.mapping(section, raw.get(section), keys).items():
                knobs[keys[k]] = self.check(f"{section}.{k}", keys[k], v)
        params = self.params(raw.get("params"), knobs)
        defaults = self.trial_config(knobs, "data")
        study = self.study(raw.get("study"), params)
        if self.probe_data:
            self.probe(defaults)
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
                   "scientific", "max_initial_failures", "checkpoints")
        s = self.mapping("study", raw, allowed)
        out: dict[str, Any] = {"name": s.get("name", self.stem)}
        if not isinstance(out["name"], str) or not out["name"].strip():
            raise self.error("study.name", out["name"], "must be a non-empty string")
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
        for k, low in (("n_trials", 1), ("max_initial_failures", 1)):
            if k in s:
                out[k] = self.wrap(f"study.{k}", s[k], _int(low))
        if s.get("timeout") is not None:
            out["timeout"] = self.wrap("study.timeout", s["timeout"], _float(0, low_open=True))
        if "checkpoints" in s:
            ck = self.mapping("study.checkpoints", s["checkpoints"], ("keep",))
            if "keep" in ck:
                out["checkpoint_keep"] = self.wrap("study.checkpoints.keep", ck["keep"], _int(1))
        sampler = s.get("sampler", {})
        sampler = {"name": sampler} if isinstance(sampler, str) else sampler
        sampler = self.mapping("study.sampler", sampler, ("name", "seed", "options"))
        out["sampler"] = self.wrap("study.sampler.name", sampler.get("name", "tpe"), _one_of(SAMPLERS))
        seed = sampler.get("seed", 0)
        out["sampler_seed"] = None if seed is None else self.wrap("study.sampler.seed", seed, _int(0))
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

        if s.sampler == "grid":
            for name, p in params.items():
                if p.grid() is None:
                    raise self.error(f"params.{name}", p.kind, "grid search needs categorical, int, or float with step")
        try:
            make_sampler(s.sampler, s.sampler_seed, s.sampler_options, {n: p.grid() for n, p in params.items()})
        except (TypeError, ValueError) as exc:
            raise self.error("study.sampler.options", s.sampler_options, str(exc)) from None
        try:
            make_pruner(s.pruner, s.pruner_options)
        except (TypeError, ValueError) as exc:
            raise self.error("study.pruner.options", s.pruner_options, str(exc)) from None

    def probe(self, cfg: TrialConfig) -> None:
        """Load the dataset once: a user function that fails, or bad options, are input errors."""
        try:
            load_dataset(cfg.dataset, cfg.data_options)
        except Exception as exc:  # user code may raise anything
            key = "data.options" if cfg.data_options else "data.name"
            raise self.error(key, cfg.data_options or cfg.dataset,
                             f"loading the dataset failed: {type(exc).__name__}: {exc}") from None
