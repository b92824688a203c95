"""A search-space YAML file -> a validated, frozen `StudyConfig`.

    >>> cfg = load_config("quick", overrides=["study.n_trials=5"])
    >>> cfg.study.n_trials
    5
    >>> cfg.params["optimizer"].kind, cfg.params["optimizer"].choices
    ('categorical', ('sgd', 'sgd_momentum', 'adam'))
    >>> cfg.resolve({"lr": 1e-4}).lr      # a TrialConfig: the space's defaults with one trial's values
    0.0001

The file has five sections: `study` (name, question, direction, sampler, pruner, ...), `data`, `model`
and `training` (fixed settings, each a field of `TrialConfig`), and `params` (the search space: any
`TrialConfig` field as a fixed value or a distribution, optionally conditional on another param with
`when`). Everything is checked before any trial runs; a problem raises `ConfigError` naming the file,
the dotted key and the bad value. Unknown keys are errors.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

from study.budget import LR_SCALINGS, UNITS
from study.constraints import Boolean, Interval, MappingOf, NameOrCallable, OneOf
from study.data import DATASETS, ORDERS, PREPROCESSING
from study.errors import ConfigError, unsafe_characters
from study.inits import INITS
from study.models import ACTIVATIONS, MODELS
from study.optimizers import OPTIMIZERS
from study.schedules import SCHEDULES
from study.spaces import apply_overrides, read_space, shipped_spaces, space_path

__all__ = ["ConfigError", "StudyConfig", "TrialConfig", "load_config", "shipped_spaces", "check_study_name"]

SEED_LIMIT = 2**32  # numpy, scikit-learn and Optuna's samplers take seeds in [0, 2**32)
GRID_LIMIT = 100_000  # points a grid search may enumerate, all params together
NAME_LIMIT = 200  # characters of a study name; every storage's name column holds 512


SEED = Interval(int, 0, SEED_LIMIT - 1)


def _knob(section: str, default: Any, check: Callable[[Any], Any], yaml_key: str | None = None) -> Any:
    return field(default=default, metadata={"section": section, "check": check, "yaml": yaml_key})


@dataclass(frozen=True)
class TrialConfig:
    """Everything one trial trains with. Each field is a key of its YAML section and can be a param."""

    # data
    dataset: str = _knob("data", "digits", NameOrCallable(DATASETS), "name")  # or package.module:callable
    data_options: dict = _knob("data", None, MappingOf(), "options")  # keyword arguments of the dataset function
    val_fraction: float = _knob("data", 0.2, Interval(float, 0, 1, "neither"))  # of all samples
    test_fraction: float = _knob("data", 0.2, Interval(float, 0, 1, "neither"))  # of all samples; never used to choose
    split_seed: int = _knob("data", 0, SEED)  # fixes the split and the `random` order
    preprocess: str = _knob("data", "standardize", OneOf(PREPROCESSING))  # training-split statistics
    order: str = _knob("data", "random", OneOf(ORDERS))  # order of the training split before batching
    shuffle: bool = _knob("data", True, Boolean())  # a new permutation every pass
    # model
    model: str = _knob("model", "mlp", NameOrCallable(MODELS), "name")  # or package.module:callable
    model_options: dict = _knob("model", None, MappingOf(), "options")  # extra keyword arguments of the model
    depth: int = _knob("model", 2, Interval(int, 1, None))  # hidden layers (MLP) or conv blocks (CNN)
    width: int = _knob("model", 64, Interval(int, 1, None))  # units or channels per layer
    activation: str = _knob("model", "relu", OneOf(ACTIVATIONS))
    kernel_size: int = _knob("model", 3, Interval(int, 1, None))  # CNN only
    init: str = _knob("model", "pytorch_default", OneOf(INITS))
    # training
    optimizer: str = _knob("training", "adam", NameOrCallable(OPTIMIZERS))  # or package.module:callable
    lr: float = _knob("training", 1e-3, Interval(float, 0, None, "neither"))  # base learning rate, before batch scaling
    momentum: float = _knob("training", 0.9, Interval(float, 0, 1, "left"))  # sgd_momentum, nesterov, rmsprop
    weight_decay: float = _knob("training", 0.0, Interval(float, 0, None))
    schedule: str = _knob("training", "constant", NameOrCallable(SCHEDULES))  # or package.module:callable
    gamma: float = _knob("training", 0.1, Interval(float, 0, 1, "right"))  # lr factor per step (exponential: whole run)
    step_fraction: float = _knob("training", 0.3, Interval(float, 0, 1, "right"))  # `step`: period, fraction of the run
    warmup: bool = _knob("training", False, Boolean())  # linear warmup in front of the schedule
    warmup_iters: int = _knob("training", 0, Interval(int, 0, None))  # iterations of warmup, when warmup is on
    batch_size: int = _knob("training", 64, Interval(int, 1, None))  # samples per iteration
    budget_unit: str = _knob("training", "epochs", OneOf(UNITS))  # what `budget` counts
    budget: int = _knob("training", 10, Interval(int, 1, None))  # trial length, in budget_unit
    # iterations per "epoch" (validation); 0 = a full pass
    epoch_iters: int = _knob("training", 0, Interval(int, 0, None))
    lr_scaling: str = _knob("training", "none", OneOf(LR_SCALINGS))  # linear: lr * batch / reference_batch
    reference_batch: int = _knob("training", 64, Interval(int, 1, None))
    precision: str = _knob("training", "fp32", OneOf(("fp32", "bf16", "fp16")))  # autocast dtype on CUDA
    seed: int = _knob("training", 0, SEED)  # model init and batch order
    # loss > factor * start: diverged
    divergence_factor: float = _knob("training", 10.0, Interval(float, 1, None, "neither"))

    def __post_init__(self) -> None:
        for name in ("data_options", "model_options"):
            if getattr(self, name) is None:
                object.__setattr__(self, name, {})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


KNOBS: dict[str, dataclasses.Field] = {f.name: f for f in dataclasses.fields(TrialConfig)}
# A user model's or dataset's own keyword arguments can be params too, as `model.options.NAME`.
OPTION_PREFIXES = {"model.options.": "model_options", "data.options.": "data_options"}


def is_option(key: str) -> bool:
    return any(key.startswith(prefix) and len(key) > len(prefix) for prefix in OPTION_PREFIXES)


def option_of(key: str) -> tuple[str, str]:
    """("model_options", "dropout") for "model.options.dropout"."""
    prefix = next(p for p in OPTION_PREFIXES if key.startswith(p))
    return OPTION_PREFIXES[prefix], key[len(prefix):]
SECTIONS = ("data", "model", "training")
DICT_KNOBS = {"data_options", "model_options"}
# The validation metrics every epoch records, in the order they are shown, with the direction each is
# optimised in: the one definition that the validator, the summary and the report read.
METRICS = {"val_loss": "minimize", "val_accuracy": "maximize", "val_precision": "maximize",
           "val_recall": "maximize", "val_f1": "maximize"}
# The values each can take: an interval of its mean over seeds is clipped to them (verdict.interval).
RANGES = {"val_loss": (0.0, math.inf), **{name: (0.0, 1.0) for name in METRICS if name != "val_loss"}}


class Direction(str):
    """"minimize" or "maximize", and what follows from it: the one place that branches on the string.

    >>> d = Direction("maximize")
    >>> d.better(0.9, 0.8), d.agg, d.ascending
    (True, 'max', False)
    """

    def __new__(cls, name: str) -> "Direction":
        if name not in ("minimize", "maximize"):
            raise ValueError(f"not a direction: {name!r}")
        return super().__new__(cls, name)

    @property
    def ascending(self) -> bool:  # the sort order that puts the best first
        return self == "minimize"

    @property
    def agg(self) -> str:  # pandas' name of the aggregation that picks the best
        return "min" if self.ascending else "max"

    def better(self, a: float, b: float) -> bool:
        return a < b if self.ascending else a > b

    def best(self, values: Any) -> Any:
        """The index label of the best of a pandas Series."""
        return values.idxmin() if self.ascending else values.idxmax()

    def running_best(self, values: Any) -> Any:
        return values.cummin() if self.ascending else values.cummax()

    def worst(self, low: float, high: float, margin: float) -> float:
        """A point beyond the worst end of [low, high], where a non-finite value is drawn."""
        return high + margin if self.ascending else low - margin


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
    auto: bool = False  # `range: auto` (lr only): low and high come from the LR range test (lrfind.py)

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
    scientific: tuple[str, ...] = ()  # params the report compares fairly; default: every unconditional categorical one
    max_initial_failures: int = 5  # stop when each of the first K trials failed
    checkpoint_keep: int = 2  # epoch checkpoints kept per running trial (a retry resumes from the newest)
    checkpoint_keep_best: int = 0  # finished trials whose final weights are kept, best first (best.pt aside)
    max_iters: int = 10**9  # planned iterations a trial may have; raise it to opt in to longer trials
    engine: str = "auto"  # auto | sequential | population (trials that share a graph train as one model)
    population: int | None = None  # trials per population; None: chosen per phase and device (engines.py)
    threads: int | None = None  # intra-op threads per worker; None: by the trial's size (threads.py)
    # Fair arms (the combinations of scientific values): each gets at least `balance` of an equal share of
    # the search trials, and the pruner compares a trial only with its own arm's, at equal samples seen.
    balance: float = 1.0
    per_arm_pruning: bool = True
    # Then confirm: each arm's `confirm_top` best configs are retrained with `confirm_seeds` fresh seeds.
    confirm_top: int = 3
    confirm_seeds: int = 5  # 0: no confirmation phase
    confirm_vary_split: bool = False  # the split seed varies with the training seed


@dataclass(frozen=True)
class StudyConfig:
    source: str  # the YAML file it came from
    study: StudySettings
    defaults: TrialConfig  # sections plus fixed params
    params: dict[str, Param]  # the searched params, in file order
    raw: dict  # the YAML after --set overrides, as stored with the study
    lr_range: dict | None = None  # what `range: auto` resolved to (lrfind.py), stored with the study
    overridden: frozenset[str] = frozenset()  # the dotted keys that --set (or a flag) gave

    def source_of(self, key: str) -> str:
        """What an error about `key` names as its source: the file, and `--set` where that gave the key."""
        return source_of(self.source, self.overridden, key)

    def resolve(self, values: Mapping[str, Any]) -> TrialConfig:
        """The defaults with one trial's values; `model.options.NAME` and `data.options.NAME` go into the
        options their callable is given."""
        knobs = {k: v for k, v in values.items() if not is_option(k)}
        cfg = dataclasses.replace(self.defaults, **knobs)
        for key, value in values.items():
            if is_option(key):
                knob, name = option_of(key)
                cfg = dataclasses.replace(cfg, **{knob: {**getattr(cfg, knob), name: value}})
        return cfg

    @property
    def scientific(self) -> tuple[str, ...]:
        # a conditional param is not one: arms are values of every scientific param (validation.py)
        return self.study.scientific or tuple(n for n, p in self.params.items()
                                              if p.kind == "categorical" and not p.when)

    def grid_space(self) -> dict[str, list]:
        """The grid sampler's search space ({} for other samplers: a range is enumerated only for a grid)."""
        if self.study.sampler != "grid":
            return {}
        return {name: p.grid() for name, p in self.params.items()}


# ---- loading and validating ----

def source_of(source: str, overridden: Iterable[str], key: str) -> str:
    """`source`, with ` (with --set)` where an override gave `key`, a key above it or one below it."""
    given = any(key == k or key.startswith(k + ".") or k.startswith(key + ".") for k in overridden)
    return source + (" (with --set)" if given else "")


def load_config(space: str = "quick", overrides: list[str] = ()) -> StudyConfig:
    """Read, override, and validate a search space. Raises ConfigError on any problem.

    Pure: it reads the file and runs no user code (preflight.check does, before a run)."""
    path = space_path(space)
    return validated(read_space(path), str(path), path.stem, overrides)


def stored_config(raw: dict, source: str, overrides: list = ()) -> StudyConfig:
    """The config of a stored study, from the space stored with it (`study confirm` works on it)."""
    return validated(raw, source, str(raw.get("study", {}).get("name", "study")), overrides)


def validated(raw: dict, source: str, stem: str, overrides: list) -> StudyConfig:
    """`raw` with the overrides applied (in place), validated; `stem` names a study that names none."""
    from study.validation import Validator

    return Validator(source, stem, apply_overrides(raw, overrides)).config(raw)


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


def non_finite(node: Any, key: str = "") -> tuple[str, float] | None:
    """The first NaN or infinity anywhere in a YAML document, with its dotted key."""
    if isinstance(node, float) and not math.isfinite(node):
        return key, node
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for k, v in items:
        found = non_finite(v, f"{key}[{k}]" if isinstance(k, int) else f"{key}.{k}" if key else str(k))
        if found:
            return found
    return None
