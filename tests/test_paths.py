import pytest

from study.paths import child, safe_name, study_dir, trial_dir

UID = "0123456789abcdef" * 2


@pytest.mark.parametrize("name", ["../../etc", "a/b", "..", ".", "", "/abs", "x\\y", "é", "a" * 300, "<script>",
                                  "\ud800", "😀"])
def test_untrusted_names_stay_inside_the_root(tmp_path, name):
    path = child(tmp_path, name)
    assert path.parent == tmp_path.resolve()
    assert "/" not in safe_name(name) and safe_name(name) not in ("", ".", "..")


def test_plain_names_are_kept_and_changed_ones_do_not_collide():
    assert safe_name("quick") == "quick"
    assert safe_name("a/b") != safe_name("a_b")


def test_a_study_folder_is_keyed_by_the_study_identity(tmp_path):
    assert study_dir(tmp_path, "quick", UID) == tmp_path.resolve() / "quick-0123456789ab"
    assert study_dir(tmp_path, "quick", UID) != study_dir(tmp_path, "quick", "f" * 32)


@pytest.mark.parametrize("uid", ["../../tmp", "A" * 32, "0" * 31, None, 5])
def test_a_stored_identity_that_is_not_32_hex_digits_never_becomes_a_path(tmp_path, uid):
    with pytest.raises(ValueError, match="not 32 hex digits"):
        study_dir(tmp_path, "quick", uid)


@pytest.mark.parametrize("number", ["../../../etc", "0/../../x", -1, 1.5, True, None])
def test_a_stored_first_number_that_is_not_a_trial_number_never_becomes_a_path(tmp_path, number):
    with pytest.raises(ValueError, match="not a non-negative integer"):
        trial_dir(tmp_path, number)


def test_a_symlinked_study_folder_pointing_outside_is_refused(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "root"
    root.mkdir()
    (root / "quick").symlink_to(outside)
    with pytest.raises(ValueError, match="inside"):
        child(root, "quick")
