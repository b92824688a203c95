"""Study names are any Unicode text: a property over random names, on every storage kind. Each name is
either refused (exit 2, one line, nothing stored) or stored exactly and read back, and every file it
causes lies inside its root."""
import contextlib
import io
import unicodedata

import optuna
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from study.cli import main
from study.storage import open_storage

SPACE = """\
study: {name: placeholder, n_trials: 1, sampler: random, pruner: none}
data: {name: synthetic, options: {n_samples: 60, n_features: 4, n_classes: 2}}
model: {depth: 1, width: 4}
training: {batch_size: 36, budget: 1}
"""

SPECIAL = ["../../etc/passwd", "a/b\\c", "..", ".", " ", "", "😀", "名前 / 이름", "\x00", "nul\x00inside",
           "\x1b[31mred", "tab\tname", "line\nbreak", "a\u2028b", "\ud800", "zero\u200dwidth", "\u202eright-to-left",
           "n" * 200, "n" * 201, "😀" * 200, "%s%n", "'; DROP TABLE studies; --", "<script>alert(1)</script>",
           "CON", "nul"]

names = st.one_of(
    st.sampled_from(SPECIAL),
    st.text(st.characters(codec=None, exclude_categories=()), max_size=12),  # every plane, surrogates too
    st.text(st.characters(min_codepoint=0x10000), min_size=190, max_size=210),  # long, 4-byte UTF-8 each
    st.text(st.sampled_from("/\\.:-_ \x7f\x85\u2029~"), max_size=8),  # separators and controls
)


def _refusable(name: str) -> bool:
    """Independent of the code under test: empty, too long, or holding a control/surrogate/line separator."""
    return (not name.strip() or len(name) > 200
            or any(unicodedata.category(c) in ("Cc", "Cs", "Zl", "Zp") for c in name))


@pytest.fixture(params=["sqlite", "journal", pytest.param("postgresql", marks=pytest.mark.postgres)])
def storage_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'names.db'}"
    if request.param == "journal":
        return str(tmp_path / "names.log")
    return request.getfixturevalue("pg_url")


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=names)
@example(name="😀 study").via("emoji: a traceback before")
@example(name="😀" * 200).via("the longest name, 800 bytes of UTF-8")
@example(name="n" * 600).via("a PostgreSQL traceback before")
@example(name="nul\x00inside").via("a PostgreSQL traceback before")
@example(name="../../etc/passwd").via("a path")
@example(name="--").via("argparse dropped it: refused with 'got []'")
def test_every_study_name_is_refused_or_stored_and_round_tripped(tmp_path, storage_url, name):
    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    root = tmp_path / "ck"
    before = set(optuna.get_all_study_names(open_storage(storage_url))) if _exists(storage_url) else set()
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        # `--study-name=NAME`: a name may begin with a dash
        code = main(["run", str(space), f"--study-name={name}", "--storage", storage_url, "--checkpoint-dir",
                     str(root), "--trials", "1", "-q", "--no-report"])
    if code == 2:
        assert _refusable(name), err.getvalue()
        assert err.getvalue().startswith("error: --study-name: ") and err.getvalue().count("\n") == 1
        assert "Traceback" not in err.getvalue()
        stored = set(optuna.get_all_study_names(open_storage(storage_url))) if _exists(storage_url) else set()
        assert stored == before  # nothing stored
        return
    assert code == 0, err.getvalue()
    assert not _refusable(name)
    storage = open_storage(storage_url)
    assert name in optuna.get_all_study_names(storage)
    study = optuna.load_study(study_name=name, storage=storage)
    assert study.study_name == name and len(study.get_trials()) == 1
    for path in root.rglob("*"):  # every file inside the checkpoint root, never through a link
        assert path.resolve().is_relative_to(root.resolve()) and not path.is_symlink()


def _exists(url: str) -> bool:
    from study.storage import existing_storage

    return existing_storage(url) is not None
