"""optuna-dashboard on the project's storage, read over HTTP while a study runs."""
import json
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from conftest import OnTerminal, call_cli, cli_env, run_cli, trials
from study.records import TrialRecord


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str):
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


def start_dashboard(cwd, port: int) -> tuple[subprocess.Popen, list]:
    """`study dashboard` on cwd's s.db, once it answers, with the studies it lists."""
    dashboard = subprocess.Popen([sys.executable, "-m", "study", "dashboard", "--storage", "sqlite:///s.db",
                                  "--port", str(port)], cwd=cwd, env=cli_env(), stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True)
    return dashboard, answered(port, dashboard)


def answered(port: int, dashboard) -> list:
    """The studies that the dashboard at `port` lists, once it answers; it must not exit meanwhile."""
    end = time.monotonic() + 90  # its imports take seconds, more on a loaded machine
    while True:
        try:
            return get(f"http://127.0.0.1:{port}/api/studies")["study_summaries"]
        except OSError:
            assert dashboard.poll() is None, dashboard.communicate()[0]
            assert time.monotonic() < end, "the dashboard never answered"
            time.sleep(0.1)


def test_dashboard_reads_a_running_study(tmp_path, slow_space):
    # Create the storage with one trial, then read it through the dashboard while two workers add more
    # (slow ones: each trial takes about a second, so the reader sees the study grow).
    assert call_cli("run", str(slow_space), "--storage", "sqlite:///s.db", "--trials", "1", "-q", "--no-report",
                    cwd=tmp_path).returncode == 0
    port = free_port()
    dashboard, studies = start_dashboard(tmp_path, port)
    try:
        base = f"http://127.0.0.1:{port}"
        assert [s["study_name"] for s in studies] == ["synth"]
        run = subprocess.Popen([sys.executable, "-m", "study", "run", str(slow_space), "--storage", "sqlite:///s.db",
                                "--trials", "4", "--jobs", "2", "-q", "--no-report"],
                               cwd=tmp_path, env=cli_env(PYTHONPATH=str(tmp_path)),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        seen = set()
        while run.poll() is None:  # a live reader beside two writers
            detail = get(f"{base}/api/studies/{studies[0]['study_id']}?after=0")
            seen.add(len(detail["trials"]))
            time.sleep(0.2)
        out, err = run.communicate()
        assert run.returncode == 0, err
        assert "database is locked" not in out + err
        # optuna-dashboard keeps a small study's trials for 2 s (its get_trials cache): its view may lag the
        # run's end by that much.
        for _ in range(50):
            detail = get(f"{base}/api/studies/{studies[0]['study_id']}?after=0")
            states = [t["state"] for t in detail["trials"]]
            if states.count("Complete") == 4:
                break
            time.sleep(0.2)
        assert states.count("Complete") == 4, states
        complete = [t for t in detail["trials"] if t["state"] == "Complete"]
        for t in complete:  # curves through intermediate values; no long JSON to widen the trial page
            assert len(t["intermediate_values"]) == len(TrialRecord.of(trials(tmp_path)[t["number"]]).history)
            assert max(len(a["value"]) for a in t["user_attrs"]) < 200, t["user_attrs"]
        assert seen & {2, 3}, seen  # it saw the study part-way, while it ran
    finally:
        dashboard.terminate()
        dashboard.wait(timeout=10)


def test_a_dashboard_stopped_by_sigterm_closes_the_storage_and_restarts_on_its_port(tmp_path, synth_space):
    """SIGTERM's default ended the server without the interpreter's exit, which left the study's writes in
    s.db-wal (a copy of s.db alone held none of them). And the port it left in TIME_WAIT was refused for a
    minute by the check before a restart, though the server itself would bind it."""
    # a process of its own, which closes the file as it exits (call_cli's would hold it open in this one)
    assert run_cli("run", str(synth_space), "--storage", "sqlite:///s.db", "--trials", "2", "-q", "--no-report",
                   cwd=tmp_path).returncode == 0
    port = free_port()
    for _ in range(2):
        dashboard, studies = start_dashboard(tmp_path, port)
        assert [s["study_name"] for s in studies] == ["synth"]
        assert (tmp_path / "s.db-wal").exists()  # SQLite's, while a connection is open
        dashboard.terminate()
        assert dashboard.wait(timeout=30) == 0
        assert "Traceback" not in dashboard.stdout.read()
        assert not (tmp_path / "s.db-wal").exists()

def test_a_dashboard_stopped_while_it_answers_stops_after_that_answer(tmp_path, synth_space):
    """SIGTERM raised KeyboardInterrupt where it landed: in the middle of an answer, wsgiref's handler caught it
    as the request's error, logged it, and served on (seen in the full suite on a busy machine)."""
    assert run_cli("run", str(synth_space), "--storage", "sqlite:///s.db", "--trials", "1", "-q", "--no-report",
                   cwd=tmp_path).returncode == 0
    port = free_port()
    dashboard, _ = start_dashboard(tmp_path, port)
    try:
        with socket.socket() as reader:  # asks for the 6 MB bundle and reads none of it: the answer blocks
            reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            reader.connect(("127.0.0.1", port))
            reader.sendall(b"GET /static/bundle.js HTTP/1.0\r\nAccept-Encoding: identity\r\n\r\n")
            assert reader.recv(64).startswith(b"HTTP/1.0 200")
            time.sleep(0.5)  # well into the answer's sendall
            dashboard.terminate()
            time.sleep(0.5)
        assert dashboard.wait(timeout=30) == 0
    finally:
        dashboard.kill()
    assert "Traceback" not in dashboard.stdout.read()



def test_a_dashboard_whose_terminal_hangs_up_closes_the_storage(tmp_path, synth_space):
    """SIGHUP's default ended it without the interpreter's exit, as SIGTERM's did: the WAL stayed."""
    assert run_cli("run", str(synth_space), "--storage", "sqlite:///s.db", "--trials", "1", "-q", "--no-report",
                   cwd=tmp_path).returncode == 0
    port = free_port()
    dashboard = OnTerminal(tmp_path, "dashboard", "--storage", "sqlite:///s.db", "--port", str(port))
    answered(port, dashboard)  # a request: a log line to the terminal, which hangs up
    assert (tmp_path / "s.db-wal").exists()
    dashboard.hang_up()
    assert dashboard.wait(timeout=30) == 0
    assert not (tmp_path / "s.db-wal").exists()


@pytest.mark.parametrize("port", ["0", "65536", "-1", "http"])
def test_a_port_outside_1_to_65535_is_refused(tmp_path, port):
    result = run_cli("dashboard", "--port", port, cwd=tmp_path)
    assert result.returncode == 2 and f"--port: must be a port number in [1, 65535] (got '{port}')" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_port_in_use_is_refused_with_one_line(tmp_path, synth_space):
    import socket

    assert call_cli("run", str(synth_space), "--trials", "1", "-q", "--no-report", cwd=tmp_path).returncode == 0
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("dashboard", "--port", str(port), cwd=tmp_path, timeout=60)
    assert result.returncode == 2, result.stderr
    expected = f"error: --port: port: cannot listen on 127.0.0.1:{port}: Address already in use (got {port})\n"
    assert result.stderr == expected


def _call(app, path: str) -> tuple[str, bytes]:
    from wsgiref.util import setup_testing_defaults

    environ, answer = {"PATH_INFO": path}, {}
    setup_testing_defaults(environ)
    body = b"".join(app(environ, lambda status, headers, exc_info=None: answer.update(status=status)))
    return answer["status"], body


def test_a_static_file_is_served_to_a_client_that_names_no_encoding():
    """optuna-dashboard reads the Accept-Encoding header of a static file's request unguarded: `curl` of the
    favicon or the bundle, which sends none, got a 500 and a traceback in the dashboard's terminal."""
    import optuna
    from optuna_dashboard import wsgi

    from study.dashboard import with_reports

    storage = optuna.storages.InMemoryStorage()
    app = with_reports(wsgi(storage), storage)
    for path in ("/favicon.ico", "/static/bundle.js"):
        assert _call(app, path)[0] == "200 OK", path


def test_the_note_s_link_opens_the_report_through_study_dashboard(tmp_path):
    import re

    from optuna_dashboard import get_note, wsgi

    from conftest import make_study
    from study.dashboard import with_reports
    from study.report import build_report

    study = make_study(3, storage=f"sqlite:///{tmp_path / 's.db'}")
    page = build_report(study, tmp_path / "reports")
    link = re.search(r"\]\((/study-report/\d+/index\.html)\)", get_note(study)).group(1)
    app = with_reports(wsgi(study._storage), study._storage)
    assert _call(app, link) == ("200 OK", page.read_bytes())
    assert _call(app, link.replace("index.html", "trials.csv"))[0] == "200 OK"
    for other in ("../../s.db", "s.db", "%2e%2e/s.db", ""):  # only the report's own files, by name
        assert _call(app, link.replace("index.html", other))[0] == "404 Not Found", other
    assert _call(app, "/study-report/999/index.html")[0] == "404 Not Found"
    assert _call(app, "/api/studies")[0] == "200 OK"  # everything else is optuna-dashboard's
