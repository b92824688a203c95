"""optuna-dashboard on the project's storage, read over HTTP while a study runs."""
import json
import socket
import subprocess
import sys
import time
import urllib.request

from conftest import cli_env, run_cli


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str):
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


def test_dashboard_reads_a_running_study(tmp_path, synth_space):
    # Create the storage with one trial, then read it through the dashboard while two workers add more.
    assert run_cli("run", str(synth_space), "--storage", "sqlite:///s.db", "--trials", "1", "-q", "--no-report",
                   cwd=tmp_path).returncode == 0
    port = free_port()
    dashboard = subprocess.Popen([sys.executable, "-m", "study", "dashboard", "--storage", "sqlite:///s.db",
                                  "--port", str(port)], cwd=tmp_path, env=cli_env(), stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                studies = get(f"{base}/api/studies")["study_summaries"]
                break
            except OSError:
                assert dashboard.poll() is None, dashboard.stdout.read()
                time.sleep(0.1)
        assert [s["study_name"] for s in studies] == ["synth"]
        run = subprocess.Popen([sys.executable, "-m", "study", "run", str(synth_space), "--storage", "sqlite:///s.db",
                                "--trials", "8", "--jobs", "2", "-q", "--no-report"], cwd=tmp_path, env=cli_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        seen = set()
        while run.poll() is None:  # a live reader beside two writers
            detail = get(f"{base}/api/studies/{studies[0]['study_id']}?after=0")
            seen.add(len(detail["trials"]))
            time.sleep(0.2)
        out, err = run.communicate()
        assert run.returncode == 0, err
        assert "database is locked" not in out + err
        detail = get(f"{base}/api/studies/{studies[0]['study_id']}?after=0")
        states = [t["state"] for t in detail["trials"]]
        assert states.count("Complete") == 8
        complete = [t for t in detail["trials"] if t["state"] == "Complete"]
        assert all("history" in {a["key"] for a in t["user_attrs"]} for t in complete)
        assert len(seen) > 1  # it saw the study change while it ran
    finally:
        dashboard.terminate()
        dashboard.wait(timeout=10)
