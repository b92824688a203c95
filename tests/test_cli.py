"""The command line as a user meets it: real processes, a real SQLite storage, tiny synthetic data."""
import re
import signal
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import optuna
import pytest

from conftest import ROOT, SYNTH_SPACE, call_cli, cli_env, make_study, run_cli
from study.cli import main
from study.records import FIELDS, STUDY_FIELDS, StudyRecord, TrialRecord, status_of


def load(db: Path, name: str = "synth") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{db}")


def test_run_end_to_end_then_resume(tmp_path, synth_space):
    db = tmp_path / "s.db"
    first = run_cli("run", str(synth_space), "--storage", f"sqlite:///{db}", "--device", "cpu", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "study 'synth': 3 complete, 0 pruned, 0 diverged, 0 failed" in first.stdout
    assert f"dashboard: optuna-dashboard sqlite:///{db}" in first.stdout
    assert "best trial" in first.stdout and "val_f1=" in first.stdout
    lines = [line for line in first.stdout.splitlines() if line.startswith("trial ")]
    assert len(lines) == 3 and all(" complete " in line for line in lines)  # one line per finished trial
    assert "\r" not in first.stderr and "3/3" not in first.stderr  # a log gets no progress bar
    # The file alone holds the study: a copy of s.db, sent or committed without s.db-wal, loses nothing.
    (tmp_path / "copy").mkdir()
    (tmp_path / "copy" / "s.db").write_bytes(db.read_bytes())
    assert len(load(tmp_path / "copy" / "s.db").get_trials()) == 3
    study = load(db)
    trials = study.get_trials()
    assert [t.number for t in trials] == [0, 1, 2]
    assert set(study.user_attrs) <= set(STUDY_FIELDS)  # every attr a run stores is in the schema
    assert study.metric_names == ["val_loss"]  # what optuna-dashboard calls the objective
    for t in trials:
        assert set(t.user_attrs) <= set(FIELDS)
        assert len(TrialRecord.of(t).history) == 3 and TrialRecord.of(t).config["dataset"] == "synthetic"
        assert TrialRecord.of(t).provenance["torch"] and sorted(t.intermediate_values) == [0, 1, 2]
    assert [p.relative_to(tmp_path).parts[-1] for p in (tmp_path / "checkpoints").rglob("*") if p.is_file()] == \
        ["best.pt"]  # finished trials keep no epoch checkpoints
    report = tmp_path / "reports" / "synth" / "index.html"
    assert f"report: {report}" in first.stdout and (report.parent / "trials.csv").is_file()
    test = StudyRecord.of(study).test  # the best trial, evaluated on the test split at the end of the run
    assert test["trial"] == study.best_trial.number and len(test["confusion"]) == 3
    assert "Best trial on the test split" in report.read_text()

    # The same command with a larger target adds only what is missing.
    again = run_cli("run", str(synth_space), "--storage", f"sqlite:///{db}", "--trials", "5", "-q", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert [t.number for t in load(db).get_trials()] == [0, 1, 2, 3, 4]
    assert again.stderr == "" and not again.stdout.startswith("trial ")  # -q silences bar and trial lines
    same = call_cli("run", str(synth_space), "--storage", f"sqlite:///{db}", "--trials", "5", "-q", cwd=tmp_path)
    assert same.returncode == 0 and len(load(db).get_trials()) == 5


def test_a_resumed_random_search_does_not_repeat_itself(tmp_path, synth_space):
    db = tmp_path / "r.db"
    for trials in ("3", "6"):
        assert main(["run", str(synth_space), "--storage", f"sqlite:///{db}", "--trials", trials, "-q",
                     "--no-report", "--checkpoint-dir", str(tmp_path)]) == 0
    params = [tuple(sorted(t.params.items())) for t in load(db).get_trials()]
    assert len(params) == 6 and len(set(params)) == 6


def test_default_storage_is_an_embedded_file_in_the_current_directory(tmp_path, synth_space):
    result = call_cli("run", str(synth_space), "--trials", "1", "-q", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "study.db").is_file()
    assert len(load(tmp_path / "study.db").get_trials()) == 1


def test_seed_makes_runs_reproducible(tmp_path, synth_space):
    values = []
    for i in range(2):
        db = tmp_path / f"{i}.db"
        assert main(["run", str(synth_space), "--storage", f"sqlite:///{db}", "--seed", "7", "-q",
                     "--no-report", "--checkpoint-dir", str(tmp_path / f"ck{i}")]) == 0
        values.append([(t.params, t.value) for t in load(db).get_trials()])
    assert values[0] == values[1]


def test_diverging_trials_are_pruned_with_a_reason_and_the_study_goes_on(tmp_path, write_space):
    path = write_space(SYNTH_SPACE.replace("low: 1.0e-3, high: 1.0e-1", "low: 1.0e+4, high: 1.0e+5")
                       .replace("choices: [sgd_momentum, adam]", "choices: [sgd_momentum]"))
    db = tmp_path / "d.db"
    assert main(["run", str(path), "--storage", f"sqlite:///{db}", "-q", "--no-report",
                 "--checkpoint-dir", str(tmp_path)]) == 0
    trials = load(db).get_trials()
    assert len(trials) == 3
    for t in trials:
        assert t.state == optuna.trial.TrialState.PRUNED
        assert TrialRecord.of(t).diverged["step"] > 0 and TrialRecord.of(t).diverged["reason"]
        assert set(t.user_attrs) <= set(FIELDS) and status_of(t) == "diverged"


def test_user_dataset_and_model_callables(tmp_path, write_space):
    pkg = tmp_path / "userpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "code.py").write_text(
        "import numpy as np, torch\n"
        "def blobs(n=90):\n"
        "    rng = np.random.default_rng(0)\n"
        "    y = np.arange(n) % 3\n"
        "    return rng.normal(size=(n, 5)) + 3 * np.eye(3, 5)[y], y\n"
        "def net(input_shape, n_classes, width):\n"
        "    return torch.nn.Sequential(torch.nn.Linear(input_shape[0], width), torch.nn.ReLU(),\n"
        "                               torch.nn.Linear(width, n_classes))\n")
    path = write_space(SYNTH_SPACE.replace("name: synthetic", "name: userpkg.code:blobs")
                       .replace("options: {n_samples: 160, n_features: 8, n_classes: 3}", "options: {n: 120}")
                       .replace("name: mlp", "name: userpkg.code:net"))
    db = tmp_path / "u.db"
    result = call_cli("run", str(path), "--storage", f"sqlite:///{db}", "-q", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    trials = load(db).get_trials()
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert TrialRecord.of(trials[0]).config["model"] == "userpkg.code:net"


def test_the_study_script_finds_a_user_callable_in_the_current_folder(tmp_path, write_space):
    """The installed console script, not `python -m`: nothing but the current folder makes `mine` importable."""
    import sysconfig

    script = Path(sysconfig.get_path("scripts")) / "study"
    assert script.is_file(), "pip install puts the study script here"
    (tmp_path / "mine.py").write_text(
        "import torch\n"
        "def net(input_shape, n_classes):\n    return torch.nn.Linear(input_shape[0], n_classes)\n")
    path = write_space(SYNTH_SPACE.replace("name: mlp", "name: mine:net"))
    result = subprocess.run([str(script), "run", str(path), "--storage", "sqlite:///m.db", "--trials", "1", "-q",
                             "--no-report"], cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr
    assert TrialRecord.of(load(tmp_path / "m.db").trials[0]).config["model"] == "mine:net"


def test_failing_trials_store_the_error_and_stop_the_run(tmp_path, write_space):
    (tmp_path / "broken.py").write_text(  # builds and predicts (the pre-flight check), fails to train
        "import torch\n"
        "class Broken(torch.nn.Linear):\n"
        "    def forward(self, x):\n"
        "        if torch.is_grad_enabled():\n"
        "            raise RuntimeError('CUDA out of memory (simulated)')\n"
        "        return super().forward(x)\n"
        "def net(input_shape, n_classes):\n    return Broken(input_shape[0], n_classes)\n")
    path = write_space(SYNTH_SPACE.replace("name: mlp", "name: broken:net")
                       .replace("pruner: {name: none}", "pruner: {name: none}\n  max_initial_failures: 2"))
    db = tmp_path / "f.db"
    result = run_cli("run", str(path), "--storage", f"sqlite:///{db}", cwd=tmp_path, PYTHONPATH=str(tmp_path))
    assert result.returncode == 1
    stopped = "stopped: 2 trials in a row failed; last error: RuntimeError: CUDA out of memory (simulated)"
    assert stopped in result.stdout
    assert "Traceback" not in result.stderr
    trials = load(db).get_trials()
    assert len(trials) == 2
    assert TrialRecord.of(trials[0]).error == "RuntimeError: CUDA out of memory (simulated)"


def test_report_and_list_read_the_storage_alone(tmp_path, synth_space, capsys):
    db = tmp_path / "r.db"
    assert main(["run", str(synth_space), "--storage", f"sqlite:///{db}", "-q", "--no-report",
                 "--checkpoint-dir", str(tmp_path / "ck")]) == 0
    assert not (tmp_path / "reports").exists()
    capsys.readouterr()
    assert main(["list", "--storage", f"sqlite:///{db}"]) == 0
    assert main(["report", "--list", "--storage", f"sqlite:///{db}"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert len(listed) == 2 and listed[0] == listed[1] and listed[0].startswith("synth ")
    assert "3 complete, 0 pruned, 0 diverged, 0 failed; best val_loss=" in listed[0]
    assert main(["report", "--storage", f"sqlite:///{db}", "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "synth" / "index.html").is_file()


@pytest.mark.parametrize("argv,fragment", [
    (["report", "--storage", "sqlite:///{tmp}/none.db"], "no such storage"),
    (["list", "--storage", "{tmp}/none.log"], "no such storage"),
    (["report", "--storage", "sqlite:///{tmp}/r.db", "--study-name", "other"], "no such study"),
])
def test_report_bad_input(tmp_path, synth_space, capsys, argv, fragment):
    db = tmp_path / "r.db"
    assert main(["run", str(synth_space), "--storage", f"sqlite:///{db}", "-q", "--no-report", "--trials", "1",
                 "--checkpoint-dir", str(tmp_path / "ck")]) == 0
    capsys.readouterr()
    assert main([a.replace("{tmp}", str(tmp_path)) for a in argv]) == 2
    assert fragment in capsys.readouterr().err
    assert not (tmp_path / "none.db").exists()


def test_spaces_lists_every_shipped_space_with_its_question(tmp_path):
    result = run_cli("spaces", cwd=tmp_path)
    assert result.returncode == 0
    names = [line.split()[0] for line in result.stdout.splitlines()]
    assert names == sorted(p.stem for p in (ROOT / "search_spaces").glob("*.yaml"))
    assert all(len(line.split()) > 3 for line in result.stdout.splitlines())


# (argv after `run`, a fragment of the one-line message)
BAD_ARGS = [
    (["no-such-space"], "no shipped space or YAML file of that name"),
    (["{dir}/missing.yaml"], "SPACE: no such file"),
    (["{dir}"], "SPACE: is a folder, not a YAML file"),
    (["{space}", "--set", "training.lr"], "expected dotted.key=value"),
    (["{space}", "--set", "training.batch_size=0"], "training.batch_size: must be an integer >= 1"),
    (["{space}", "--set", "model.init=zeros"], "model.init: must be one of"),
    (["{space}", "--device", "tpu"], "--device: device: unknown device"),
    (["{space}", "--device", "cuda:7"], "--device: device:"),
    (["{space}", "--set", "data.name=nosuchpkg.mod:load"], "cannot import module 'nosuchpkg.mod'"),
    (["{space}", "--set", "training.lr=.inf"], "training.lr: must be a finite number (got inf)"),
    (["{space}", "--set", "params.lr.high=.nan"], "params.lr.high: must be a finite number (got nan)"),
    (["{space}", "--set", "training.seed=4294967296"], "training.seed: must be an integer in [0, 4294967295]"),
    (["{space}", "--set", "training={lr: 1, lr: 2}"], "--set: training: duplicate key"),
    (["{space}", "--study-name", "evil\x1b[2Jname"], "--study-name: study-name: must not contain control characters"),
    (["{space}", "--study-name", "nul\x00name"], "must not contain control characters"),
    (["{space}", "--study-name", "lone\udcffsurrogate"], "lone surrogates"),
    (["{space}", "--study-name", "n" * 600], "must be at most 200 characters"),
]


@pytest.mark.parametrize("argv,fragment", BAD_ARGS)
def test_bad_input_exits_2_with_one_line_and_creates_nothing(tmp_path, synth_space, capsys, argv, fragment):
    db = tmp_path / "never.db"
    argv = [a.replace("{space}", str(synth_space)).replace("{dir}", str(tmp_path)) for a in argv]
    code = main(["run", *argv, "--storage", f"sqlite:///{db}", "--checkpoint-dir", str(tmp_path / "ck")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and fragment in err
    assert not db.exists() and not (tmp_path / "ck").exists()


@pytest.mark.parametrize("storage", ["foo://bar", "postgresql://nobody@127.0.0.1:1/none"])
def test_an_unreachable_or_unknown_storage_is_an_input_error(tmp_path, synth_space, capsys, storage):
    assert main(["run", str(synth_space), "--storage", storage, "--checkpoint-dir", str(tmp_path / "ck")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --storage: storage: cannot open the storage: ") and err.count("\n") == 1
    assert repr(storage) in err and not (tmp_path / "ck").exists()


@pytest.mark.parametrize("flag,value", [("--trials", "0"), ("--trials", "x"), ("--timeout", "-1"), ("--seed", "-2"),
                                        ("--seed", "4294967296"), ("--seed", str(2**64))])
def test_bad_flag_values_are_refused_by_the_parser(capsys, flag, value):
    with pytest.raises(SystemExit) as info:
        main(["run", flag, value])
    assert info.value.code == 2 and repr(value) in capsys.readouterr().err


def test_bad_input_as_a_real_process_has_no_traceback(tmp_path, write_space):
    path = write_space(SYNTH_SPACE.replace("budget: 3", "budget: 0"))
    result = run_cli("run", str(path), "--storage", f"sqlite:///{tmp_path / 'x.db'}", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == f"error: {path}: training.budget: must be an integer >= 1 (got 0)\n"
    assert not (tmp_path / "x.db").exists()


def test_report_as_a_real_process_prints_where_the_page_is_and_no_log_lines(tmp_path):
    """Importance is fitted on an in-memory Optuna study, whose creation Optuna logs at INFO."""
    make_study(12, storage=f"sqlite:///{tmp_path / 's.db'}")
    result = run_cli("report", "--storage", "sqlite:///s.db", "--out", "out", cwd=tmp_path)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert result.stdout.splitlines()[0] == f"report: {tmp_path / 'out' / 'made' / 'index.html'}"


def test_ctrl_c_while_a_report_is_made_is_one_line_and_exit_130_and_writes_nothing(tmp_path):
    """The stop is checked between the report's sections, before anything is written; a signal during
    the imports (seconds: torch, seaborn) waits for the first of them."""
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 's.db'}")
    make_study(300, storage=storage)

    def stored():  # where optuna-dashboard keeps the note that links the report
        return storage.get_study_system_attrs(storage.get_study_id_from_name("made"))

    before = stored()
    run = subprocess.Popen([sys.executable, "-m", "study", "report", "--storage", "sqlite:///s.db", "--out", "out"],
                           cwd=tmp_path, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1.5)
    run.send_signal(signal.SIGINT)
    out, err = run.communicate(timeout=120)
    assert run.returncode == 130, err
    assert err == "\ninterrupted: the report was not written\n" and out == ""
    assert not (tmp_path / "out").exists()
    assert stored() == before


def test_a_changed_space_does_not_silently_join_an_existing_study(tmp_path, synth_space, capsys):
    db = tmp_path / "c.db"
    assert main(["run", str(synth_space), "--storage", f"sqlite:///{db}", "--trials", "1", "-q",
                 "--no-report", "--checkpoint-dir", str(tmp_path)]) == 0
    code = main(["run", str(synth_space), "--storage", f"sqlite:///{db}", "--set", "training.budget=4", "-q",
                 "--checkpoint-dir", str(tmp_path)])
    assert code == 2 and "different search space is already stored (training.budget is 3 there, 4 here)" in \
        capsys.readouterr().err
    assert len(load(db).get_trials()) == 1


def _installed_non_editable() -> bool:
    try:
        dist = metadata.distribution("study")
    except metadata.PackageNotFoundError:
        return False
    direct = dist.read_text("direct_url.json") or ""
    return '"editable": true' not in direct.replace(" ", "").replace('"editable":true', '"editable": true')


@pytest.mark.skipif(not _installed_non_editable(), reason="needs `pip install .` (CI does it)")
def test_installed_package_ships_its_spaces_and_runs_from_anywhere(tmp_path):
    # No PYTHONPATH: the installed package, run from a folder that is not the checkout.
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    spaces = subprocess.run([sys.executable, "-m", "study", "spaces"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)
    assert spaces.returncode == 0, spaces.stderr
    assert "quick" in spaces.stdout and "lecture" in spaces.stdout
    script = Path(sys.executable).parent / "study"  # the console script pip installed beside python
    listed = subprocess.run([str(script), "spaces"], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=120)
    assert listed.returncode == 0 and listed.stdout == spaces.stdout
    run = subprocess.run([sys.executable, "-m", "study", "run", "quick", "--trials", "1", "-q",
                          "--set", "training.budget=1"], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=240)
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "study.db").is_file()


def test_the_largest_seed_works_and_so_does_every_resume(tmp_path, synth_space):
    db = f"sqlite:///{tmp_path / 's.db'}"
    for n in ("1", "2", "3"):  # the workers' and resumptions' sampler seeds stay inside [0, 2**32)
        assert main(["run", str(synth_space), "--seed", "4294967295", "--trials", n, "--storage", db, "-q",
                     "--no-report", "--checkpoint-dir", str(tmp_path)]) == 0
    assert len(load(tmp_path / "s.db").get_trials()) == 3


def test_list_prints_names_with_escape_sequences_safely(tmp_path, capsys):
    """A name written into a shared storage by anyone (here: Optuna's own API) reaches the terminal escaped."""
    url = f"sqlite:///{tmp_path / 's.db'}"
    optuna.create_study(study_name="evil\x1b]0;owned\x07\x1b[2J\nname", storage=url)
    assert main(["list", "--storage", url]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out and out.count("\n") == 1
    assert "evil\\x1b]0;owned\\x07\\x1b[2J\\nname" in out
    assert main(["report", "--storage", url, "--study-name", "x", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "\x1b" not in err and "stored: evil\\x1b" in err


def test_version_names_what_a_bug_report_needs(tmp_path):
    import torch

    result = call_cli("--version", cwd=tmp_path)
    assert result.returncode == 0 and result.stderr == ""
    assert re.fullmatch(r"study \S+( \(git \w+\))?; python \S+, torch \S+, optuna \S+, numpy \S+, scikit-learn \S+\n",
                        result.stdout), result.stdout
    assert f"torch {torch.__version__}," in result.stdout


def test_a_terminal_that_cannot_encode_a_study_name_gets_it_escaped(tmp_path):
    """`study list` on a non-ASCII name, under PYTHONIOENCODING=ascii, ended in a UnicodeEncodeError."""
    from conftest import run_cli

    optuna.create_study(study_name="naïve ✓", storage=f"sqlite:///{tmp_path / 's.db'}")
    result = run_cli("list", "--storage", "sqlite:///s.db", cwd=tmp_path, PYTHONIOENCODING="ascii")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("na\\xefve \\u2713 ") and result.stderr == ""


def test_run_piped_into_head_exits_quietly_and_still_writes_the_report(tmp_path, synth_space):
    from conftest import cli_env

    run = subprocess.Popen([sys.executable, "-m", "study", "run", str(synth_space), "--storage", "sqlite:///s.db",
                            "--trials", "4"], cwd=tmp_path, env=cli_env(), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    assert run.stdout.readline().startswith("search: ")  # which engine, and why
    assert run.stdout.readline().startswith("trial ")
    run.stdout.close()  # what `| head -2` does after its lines
    err = run.stderr.read()
    assert run.wait(timeout=240) == 0, err
    assert "Traceback" not in err and "BrokenPipe" not in err
    assert (tmp_path / "reports" / "synth" / "index.html").is_file()
    assert len(load(tmp_path / "s.db").get_trials()) == 4


def test_the_progress_bar_is_drawn_on_a_terminal(tmp_path, synth_space):
    """The same run in a pseudo-terminal, as a user at a shell sees it: the bar, redrawn with \\r."""
    import fcntl
    import os
    import pty
    import struct
    import termios

    from conftest import cli_env

    pid, fd = pty.fork()
    if pid == 0:  # the child: the command on an 80-column terminal (a new pty has none, so no bar fits)
        fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
        os.chdir(tmp_path)
        os.execve(sys.executable, [sys.executable, "-m", "study", "run", str(synth_space), "--storage",
                                   "sqlite:///t.db", "--no-report"], cli_env())
    out = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # the terminal closed: the command ended
            break
        if not chunk:
            break
        out += chunk
    _, status = os.waitpid(pid, 0)
    text = out.decode(errors="replace")
    assert os.waitstatus_to_exitcode(status) == 0, text
    assert "3/3" in text and "trial    0 " in text


def test_the_commands_a_run_prints_survive_a_shell_where_paths_hold_spaces_and_quotes(tmp_path, synth_space):
    """Copied into a shell (or, for load_best, into Python), each printed command names the very file."""
    import ast
    import html
    import re
    import shlex

    folder = tmp_path / 'my "studies", Bob\'s'
    folder.mkdir()
    url = f"sqlite:///{folder / 'it s.db'}"
    result = call_cli("run", str(synth_space), "--storage", url, "--trials", "2", "-q", cwd=folder)
    assert result.returncode == 0, result.stderr
    said = dict(line.split(": ", 1) for line in result.stdout.splitlines() if ": " in line and line[0] != " ")
    assert shlex.split(said["dashboard"]) == ["optuna-dashboard", url]
    command = shlex.split(said["reproduce the best trial"])
    assert command[:4] == ["python", "-m", "study", "run"] and Path(command[4]).is_file() and len(command) == 5
    page = Path(said["report"])
    code = html.unescape(re.search(r"(from study\.reproduce import load_best.*?)</code>", page.read_text(),
                                   re.S).group(1))
    call = next(n for n in ast.walk(ast.parse(code)) if isinstance(n, ast.Call) and getattr(n.func, "id", "") ==
                "load_best")
    assert Path(call.args[0].value).is_file() and "Bob's" in call.args[0].value
