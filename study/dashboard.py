"""optuna-dashboard for a study's storage, on 127.0.0.1 only.

    python -m study dashboard --storage sqlite:///study.db --port 8080

When the artifact folder exists (default ./artifacts), the dashboard shows the artifacts stored there:
the best trials' checkpoints uploaded by `run` and the report's figures uploaded by `report`.
"""
from __future__ import annotations

from pathlib import Path

import optuna

from study import interrupts
from study.ports import HOST


def artifact_store(folder: Path | None, create: bool = False):
    from optuna.artifacts import FileSystemArtifactStore

    if folder is None or (not folder.is_dir() and not create):
        return None
    folder.mkdir(parents=True, exist_ok=True)
    return FileSystemArtifactStore(str(folder))


_POLL_S = 0.1  # how long the server waits for a request before it looks for a stop: a stop takes this long


def serve(storage: optuna.storages.BaseStorage, port: int, artifact_dir: Path | None) -> None:
    """Serve until a stop is asked for (interrupts.handled): it is looked for between answers. Raised where
    the signal landed, in the middle of an answer, it was caught by wsgiref as that request's error, and
    the server served on."""
    from wsgiref.simple_server import make_server

    from optuna_dashboard import wsgi

    app = with_reports(wsgi(storage, artifact_store=artifact_store(artifact_dir)), storage)
    with make_server(HOST, port, app) as server:
        server.timeout = _POLL_S
        while not interrupts.requested():
            server.handle_request()


REPORT_PATH = "/study-report/"  # + <study id>/<file>: what the study's note links to
REPORT_FILES = {"index.html": "text/html; charset=utf-8", "trials.csv": "text/csv; charset=utf-8",
                "verdict.json": "application/json", "best.yaml": "text/plain; charset=utf-8",
                "leader.yaml": "text/plain; charset=utf-8"}


def with_reports(app, storage: optuna.storages.BaseStorage):
    """optuna-dashboard, plus each study's report files at /study-report/<study id>/<file>, so that the
    link in the study's note opens the page (a file:// link is dropped by the dashboard's markdown, and
    refused by browsers from an http page). Only the report's own files are served, by name."""
    from study.records import StudyRecord

    def serve(environ, start_response):
        path = environ.get("PATH_INFO", "")
        if not path.startswith(REPORT_PATH):
            # optuna-dashboard reads this header of a static file's request unguarded: a 500 for `curl`
            environ.setdefault("HTTP_ACCEPT_ENCODING", "identity")
            return app(environ, start_response)
        study_id, _, name = path[len(REPORT_PATH):].partition("/")
        folder = None
        if study_id.isdigit() and name in REPORT_FILES:
            study = next((s for s in storage.get_all_studies() if s._study_id == int(study_id)), None)
            folder = StudyRecord.of(study).report if study is not None else None
        file = Path(folder) / name if folder else None
        if file is None or not file.is_file():
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"no such report file"]
        start_response("200 OK", [("Content-Type", REPORT_FILES[name])])
        return [file.read_bytes()]

    return serve


def upload_checkpoint(study: optuna.Study, best_pt: Path, folder: Path | None) -> str | None:
    """Attach best.pt to the study (a finished trial can no longer take artifacts)."""
    from optuna.artifacts import upload_artifact

    store = artifact_store(folder)
    if store is None or not best_pt.is_file():
        return None
    return upload_artifact(artifact_store=store, file_path=str(best_pt), study_or_trial=study,
                           mimetype="application/octet-stream")
