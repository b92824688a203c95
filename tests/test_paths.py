import pytest

from study.paths import child, safe_name


@pytest.mark.parametrize("name", ["../../etc", "a/b", "..", ".", "", "/abs", "x\\y", "é", "a" * 300, "<script>"])
def test_untrusted_names_stay_inside_the_root(tmp_path, name):
    path = child(tmp_path, name)
    assert path.parent == tmp_path.resolve()
    assert "/" not in safe_name(name) and safe_name(name) not in ("", ".", "..")


def test_plain_names_are_kept_and_changed_ones_do_not_collide():
    assert safe_name("quick") == "quick"
    assert safe_name("a/b") != safe_name("a_b")
