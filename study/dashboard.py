"""optuna-dashboard for a study's storage, on 127.0.0.1 only.

    python -m study dashboard --storage sqlite:///study.db --port 8080

When the artifact folder exists (default ./artifacts), the dashboard shows the artifacts stored there:
the best trials' checkpoints uploaded by `run` and the report's figures uploaded by `report`.
"""
from __future__ import annotations

from pathlib import Path

import optuna

from study.ports import HOST


def artifact_store(folder: Path | None, create: bool = False):
    from optuna.artifacts import FileSystemArtifactStore

    if folder is None or (not folder.is_dir() and not create):
        return None
    folder.mkdir(parents=True, exist_ok=True)
    return FileSystemArtifactStore(str(folder))


def serve(storage: optuna.storages.BaseStorage, port: int, artifact_dir: Path | None) -> None:
    from optuna_dashboard import run_server

    run_server(storage, host=HOST, port=port, artifact_store=artifact_store(artifact_dir))


def upload_checkpoint(study: optuna.Study, best_pt: Path, folder: Path | None) -> str | None:
    """Attach best.pt to the study (a finished trial can no longer take artifacts)."""
    from optuna.artifacts import upload_artifact

    store = artifact_store(folder)
    if store is None or not best_pt.is_file():
        return None
    return upload_artifact(artifact_store=store, file_path=str(best_pt), study_or_trial=study,
                           mimetype="application/octet-stream")
