"""Finding a search space, reading its YAML safely, and applying `--set` overrides.

    >>> path = space_path("quick")                  # a shipped space, or a path to a YAML file
    >>> raw = read_space(path)                      # a dict; duplicate keys and alias bombs are input errors
    >>> apply_overrides(raw, ["study.n_trials=5"])  # in place; returns the keys it set
    {'study.n_trials'}
    >>> raw["study"]["n_trials"]
    5

YAML is read with a SafeLoader that refuses duplicate keys in a mapping (the second would silently win)
and documents whose aliases would expand to more than MAX_NODES nodes, counted before anything is
expanded, so that a few hundred bytes cannot allocate the machine away.
"""
from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import yaml

from study.errors import ConfigError

MAX_NODES = 100_000  # a large search space has a few hundred


class _YamlProblem(Exception):
    def __init__(self, where: str, value: Any, problem: str):
        super().__init__(where, value, problem)
        self.where, self.value, self.problem = where, value, problem


class _Loader(yaml.SafeLoader):
    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` merges; later keys may override it
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
            except TypeError:  # an unhashable key; the base constructor says so
                break
            if duplicate:
                raise _YamlProblem(_mark(key_node), key, "duplicate key in one mapping")
            seen.add(key)
        return super().construct_mapping(node, deep)


def _mark(node: yaml.Node) -> str:
    return f"line {node.start_mark.line + 1}, column {node.start_mark.column + 1}"


def _expanded_size(root: yaml.Node) -> int:
    """Nodes the document would hold with every alias expanded, computed on the graph (linear time)."""
    sizes: dict[int, int] = {}
    busy: set[int] = set()

    def size(node: yaml.Node) -> int:
        if id(node) in sizes:
            return sizes[id(node)]
        if id(node) in busy:
            raise _YamlProblem(_mark(node), "alias", "an alias refers to a node that contains it")
        busy.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            n = 1 + sum(size(child) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            n = 1 + sum(size(k) + size(v) for k, v in node.value)
        else:
            n = 1
        busy.discard(id(node))
        sizes[id(node)] = n = min(n, MAX_NODES + 1)
        return n

    return size(root)


def parse_yaml(text: str) -> Any:
    """yaml.safe_load, bounded and strict; raises _YamlProblem or yaml.YAMLError."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_size(node) > MAX_NODES:
            raise _YamlProblem("(document)", f"more than {MAX_NODES} nodes",
                               "aliases expand to too large a document")
        return loader.construct_document(node)
    except RecursionError:
        raise _YamlProblem("(document)", "nesting", "nested too deeply") from None
    finally:
        loader.dispose()


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
            problem = "is a folder, not a YAML file" if path.is_dir() else "no such file"
            raise ConfigError(space, "SPACE", space, problem)
        return path
    hint = difflib.get_close_matches(space, shipped, n=1)
    raise ConfigError("search space", "SPACE", space,
                      f"no shipped space or YAML file of that name"
                      f"{f' (did you mean {hint[0]!r}?)' if hint else ''}; shipped: {', '.join(shipped)}")


def read_space(path: Path) -> dict:
    """The YAML mapping in `path` ({} for an empty file)."""
    try:
        raw = parse_yaml(path.read_text(encoding="utf-8"))
    except _YamlProblem as exc:
        raise ConfigError(str(path), exc.where, exc.value, exc.problem) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(document)"
        raise ConfigError(str(path), where, getattr(exc, "problem", None) or str(exc), "YAML syntax error") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(str(path), "SPACE", str(path), f"not UTF-8 text: {exc.reason}") from None
    except OSError as exc:
        raise ConfigError(str(path), "SPACE", str(path), f"cannot read: {exc.strerror}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(str(path), "(top level)", raw, "must be a mapping of sections")
    return raw


def apply_overrides(raw: dict, overrides: list[str | tuple[str, Any]]) -> set[str]:
    """Apply `dotted.key=value` strings (values parsed as YAML) or (dotted.key, value) pairs (taken as
    they are) in place; return the keys set."""
    keys = set()
    for item in overrides:
        if isinstance(item, tuple):
            key, value = item
        else:
            key, value = _parse_override(item)
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


def _parse_override(item: str) -> tuple[str, Any]:
    key, eq, text = item.partition("=")
    if not eq or not key or any(not part for part in key.split(".")):
        raise ConfigError("--set", item, item, "expected dotted.key=value, e.g. training.lr=1e-3")
    try:
        return key, parse_yaml(text)
    except _YamlProblem as exc:
        raise ConfigError("--set", key, text, exc.problem) from None
    except yaml.YAMLError:
        raise ConfigError("--set", key, text, "value is not valid YAML") from None
