"""Constraints on configuration values, as objects that check a value, describe themselves and produce
values that break them (the way scikit-learn's `Interval(Real, 0, 1, closed="neither")` does).

    >>> Interval(int, 1, None)(0)
    Traceback (most recent call last):
    ...
    ValueError: must be an integer >= 1
    >>> Interval(float, 0, 1, closed="neither").invalid()
    ['x', True, -0.5, 0, 1.5, 1, inf, nan]
    >>> OneOf(("xavier", "he"))("he")
    'he'

A constraint returns the normalised value or raises ValueError with the problem; the validator adds the
file, the key and the value. The bad-input tests are generated from `invalid()`.
"""
from __future__ import annotations

import math
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any, Mapping

from study.callables import is_reference, load_callable


def number(v: Any) -> float:
    """A finite number; PyYAML reads "1e-3" (no dot) as a string, accepted as the number meant."""
    if isinstance(v, str):
        try:
            v = float(v)
        except ValueError:
            pass
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError("must be a number")
    try:
        x = float(v)
    except OverflowError:  # an integer too large for a float
        x = math.inf
    if not math.isfinite(x):
        raise ValueError("must be a finite number")
    return x


@dataclass(frozen=True)
class Interval:
    """Numbers of `kind` (int or float) between low and high; `closed` says which ends are included."""

    kind: type
    low: float | None
    high: float | None
    closed: str = "both"  # both | left | right | neither

    def __call__(self, v: Any) -> Any:
        if self.kind is int:
            ok = not isinstance(v, bool) and isinstance(v, int) and self._inside(v)
            if not ok:
                raise ValueError(f"must be {self}")
            return v
        x = number(v)
        if not self._inside(x):
            raise ValueError(f"must be {self}")
        return x

    def _inside(self, x: float) -> bool:
        left, right = self.closed in ("both", "left"), self.closed in ("both", "right")
        above = self.low is None or x > self.low or (left and x == self.low)
        below = self.high is None or x < self.high or (right and x == self.high)
        return above and below

    def __str__(self) -> str:
        what = "an integer" if self.kind is int else "a number"
        left, right = self.closed in ("both", "left"), self.closed in ("both", "right")
        if self.high is None:
            return f"{what} {'>=' if left else '>'} {self.low}"
        return f"{what} in {'[' if left else '('}{self.low}, {self.high}{']' if right else ')'}"

    def invalid(self) -> list:
        bad: list = ["x", True]
        if self.low is not None:
            bad.append(self.low - 1 if self.kind is int else self.low - 0.5)
            if self.closed in ("right", "neither"):
                bad.append(self.low)
        if self.high is not None:
            bad.append(self.high + 1 if self.kind is int else self.high + 0.5)
            if self.closed in ("left", "neither"):
                bad.append(self.high)
        if self.kind is int:
            bad.append(1.5 if self.low is None or self.low < 1.5 else self.low + 0.5)
        else:
            bad += [math.inf, math.nan]
        return bad


def _among(v: Any, names: Any) -> bool:
    """`v in names` for any value a YAML file or --set can give: a list or a mapping is never a name (and
    cannot be looked up in a registry's dict: it is unhashable)."""
    return isinstance(v, Hashable) and v in names


@dataclass(frozen=True)
class OneOf:
    """One of a registry's keys."""

    names: tuple

    def __init__(self, names: Mapping | tuple):
        object.__setattr__(self, "names", tuple(names))

    def __call__(self, v: Any) -> Any:
        if not _among(v, self.names):
            raise ValueError(f"must be one of {', '.join(map(str, self.names))}")
        return v

    def __str__(self) -> str:
        return f"one of {', '.join(map(str, self.names))}"

    def invalid(self) -> list:
        return ["no_such_name", 3, ["a", "list"]]


@dataclass(frozen=True)
class NameOrCallable(OneOf):
    """A registry key, or `package.module:callable` that imports."""

    def __call__(self, v: Any) -> Any:
        if isinstance(v, str) and is_reference(v):
            load_callable(v)  # raises ValueError with the import problem
            return v
        if not _among(v, self.names):
            raise ValueError(f"must be one of {', '.join(self.names)} or package.module:callable")
        return v

    def invalid(self) -> list:
        return ["no_such_name", "no_such_pkg.module:fn", ["a", "list"]]


@dataclass(frozen=True)
class Boolean:
    def __call__(self, v: Any) -> bool:
        if not isinstance(v, bool):
            raise ValueError("must be true or false")
        return v

    def __str__(self) -> str:
        return "true or false"

    def invalid(self) -> list:
        return ["yes please", 1]


@dataclass(frozen=True)
class MappingOf:
    def __call__(self, v: Any) -> dict:
        if not isinstance(v, dict):
            raise ValueError("must be a mapping")
        return v

    def __str__(self) -> str:
        return "a mapping"

    def invalid(self) -> list:
        return [[1, 2], "text"]
