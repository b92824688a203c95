"""Module docstrings: their usage examples run as doctests, so that they cannot rot."""
import doctest
import importlib
import pkgutil

import pytest

import study

# Not imported here: __main__ runs the command line; preloaded freezes the importing process's heap (it is
# the forkserver's last import).
MODULES = sorted(m.name for m in pkgutil.walk_packages(study.__path__, "study.")
                 if m.name not in ("study.__main__", "study.preloaded"))


@pytest.mark.parametrize("name", MODULES)
def test_module_docstring_examples_run(name, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # an example that writes files writes them here
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0


def test_every_module_that_shows_python_usage_shows_it_as_a_doctest():
    """An example that is not a doctest is not run, and rots: only shell commands may be shown as text."""
    plain = []
    for name in MODULES:
        doc = importlib.import_module(name).__doc__ or ""
        code = [line for line in doc.splitlines() if line.startswith("    ") and "(" in line
                and not line.lstrip().startswith((">>>", "...", "python ", "study "))]
        if code and ">>>" not in doc:
            plain.append(name)
    assert plain == []
