"""`package.module:callable` references, the way a search space points at the user's own code."""
from __future__ import annotations

import importlib
import inspect
from typing import Any, Callable


def is_reference(name: str) -> bool:
    return ":" in name


def load_callable(reference: str) -> Callable[..., Any]:
    """Import `package.module:attr`; ValueError (with the reason) when it is not a callable there."""
    module_name, _, attr = reference.partition(":")
    if not module_name or not attr:
        raise ValueError("expected package.module:callable")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # any import-time failure of user code is the user's to see
        raise ValueError(f"cannot import module {module_name!r}: {type(exc).__name__}: {exc}") from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"{reference} is not callable")
    return obj


def accepts(fn: Callable[..., Any], name: str) -> bool:
    """Whether fn's signature takes the keyword argument `name` (any, if it takes **kwargs)."""
    params = inspect.signature(fn).parameters
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def call_with_accepted(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call fn with the keyword arguments its signature accepts (all of them if it takes **kwargs)."""
    return fn(*args, **{k: v for k, v in kwargs.items() if accepts(fn, k)})
