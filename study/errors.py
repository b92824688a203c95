"""The project's input error, and how text from users and storages is shown on a terminal.

    >>> print(ConfigError("search_spaces/quick.yaml", "training.lr", ".inf", "must be a finite number"))
    search_spaces/quick.yaml: training.lr: must be a finite number (got '.inf')
    >>> print(printable("my\x1b[31mstudy"))   # escape sequences come out as text, never raw
    my\\x1b[31mstudy
"""
from __future__ import annotations

import unicodedata
from typing import Any


class ConfigError(Exception):
    """Bad input: printed as one line naming where (file or flag), the dotted key and the value."""

    def __init__(self, source: str, key: str, value: Any, problem: str):
        super().__init__(source, key, value, problem)
        self.source, self.key, self.value, self.problem = source, key, value, problem

    def __str__(self) -> str:
        return f"{printable(self.source)}: {printable(self.key)}: {self.problem} (got {_short_repr(self.value)})"


def _short_repr(value: Any, limit: int = 200) -> str:
    text = repr(value)  # repr escapes control characters and lone surrogates
    return text if len(text) <= limit else text[:limit] + "..."


# Categories a terminal may act on or that break a line: controls, surrogates, line/paragraph separators.
UNSAFE_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})


def unsafe_characters(text: str) -> list[str]:
    return [c for c in text if unicodedata.category(c) in UNSAFE_CATEGORIES]


def printable(text: Any) -> str:
    """`text` safe to print on a terminal: unsafe characters escaped as Python would write them."""
    text = str(text)
    if not unsafe_characters(text):
        return text
    return "".join(c.encode("unicode_escape").decode("ascii") if unicodedata.category(c) in UNSAFE_CATEGORIES
                   else c for c in text)
