"""Reading search-space YAML: strict, bounded, and every problem one ConfigError naming file, place, value."""
import pytest

from study.errors import ConfigError
from study.spaces import MAX_NODES, apply_overrides, read_space

ALIAS_BOMB = """\
a: &a [x, x, x, x, x, x, x, x, x]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]
"""


@pytest.mark.parametrize("text, where, problem", [
    ("training:\n  lr: 0.1\n  lr: 0.2\n", "line 3, column 3", "duplicate key"),
    ("training: {}\ntraining: {}\n", "line 2, column 1", "duplicate key"),
    (ALIAS_BOMB, "(document)", "aliases expand to too large a document"),
    ("a: &a [*a]\n", "line 1", "refers to a node that contains it"),
    ("a: [1, 2\n", "line 2", "YAML syntax error"),
    ("- 1\n- 2\n", "(top level)", "must be a mapping"),
    ("a: !!python/object:os.system {}\n", "line 1", "YAML syntax error"),
])
def test_bad_yaml_is_one_error_naming_the_file_the_place_and_the_value(tmp_path, text, where, problem):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        read_space(path)
    assert info.value.source == str(path) and where in info.value.key and problem in info.value.problem


def test_the_alias_bomb_is_refused_before_it_is_expanded(tmp_path):
    import resource
    import time

    path = tmp_path / "bomb.yaml"
    path.write_text(ALIAS_BOMB)  # 9**9 = 387 million strings if expanded
    before, start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.perf_counter()
    with pytest.raises(ConfigError):
        read_space(path)
    assert time.perf_counter() - start < 5 and resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100_000


def test_anchors_and_merge_keys_that_stay_small_are_fine(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text("base: &b {lr: 0.1, momentum: 0.9}\nrun: {<<: *b, lr: 0.2}\nlist: [*b, *b]\n")
    raw = read_space(path)
    assert raw["run"] == {"lr": 0.2, "momentum": 0.9} and raw["list"] == [raw["base"], raw["base"]]
    assert MAX_NODES >= 10_000


def test_set_values_are_read_by_the_same_strict_loader():
    with pytest.raises(ConfigError, match="duplicate key"):
        apply_overrides({}, ["training={lr: 1, lr: 2}"])
    raw = {}
    assert apply_overrides(raw, ["training.lr=3e-4", ("study.name", "名前 😀")]) == {"training.lr", "study.name"}
    assert raw == {"training": {"lr": "3e-4"}, "study": {"name": "名前 😀"}}
