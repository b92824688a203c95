"""Laying the report out: tables and figures into one self-contained HTML page, plus trials.csv.

    >>> path = build_report(optuna.create_study(study_name="a/b"), Path("reports"))
    >>> path.parts[-3:], sorted(p.name for p in path.parent.iterdir())   # a safe folder name, never a path
    (('reports', 'a_b-...', 'index.html'), ['index.html', 'trials.csv'])

Images are embedded as PNG data URIs; the page loads nothing from the network. Every piece of user
text goes through Jinja's autoescaping or pandas' escaping.
"""
from __future__ import annotations

import base64
import json
import math
from pathlib import Path

import jinja2
import optuna

from study import records
from study.files import atomic_write_text
from study.paths import child
from study.report import tables as T
from study.report.context import ReportContext, Section
from study.report.sections import build_sections
from study.storage import failure

_ENV = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent), autoescape=True)


def build_report(study: optuna.Study, out_root: Path, artifact_dir: Path | None = None) -> Path:
    """Write <out_root>/<safe study name>/index.html, trials.csv, best.yaml (the best trial, every setting
    fixed) and (after confirmation runs) verdict.json, and leader.yaml where the verdict's leader is another
    trial; return the page's path.

    The study gets an optuna-dashboard note linking the page and, with `artifact_dir`, the figures
    as artifacts."""
    folder = child(Path(out_root), study.study_name)
    raw = records.trials(study)  # the storage, read once
    trials = T.trials_frame(raw)  # for the page and for trials.csv
    ctx = ReportContext.of(study, trials, raw)
    sections, verdict = build_sections(ctx)
    html = render(name=study.study_name, question=records.StudyRecord.of(study).question, verdict=verdict,
                  sections=sections)
    folder.mkdir(parents=True, exist_ok=True)  # once all is computed: a stopped report leaves nothing
    atomic_write_text(folder / "index.html", html)
    atomic_write_text(folder / "trials.csv", trials.to_csv(index=False))
    write_verdict(ctx.verdict, folder)
    from study.reproduce import write_best, write_leader

    best = records.best_trial(study)  # once, for both files
    write_best(study, folder, best)
    write_leader(study, folder, ctx.verdict, best, raw)
    try:
        attach_to_dashboard(study, folder / "index.html", sections, verdict, artifact_dir)
    except Exception as exc:
        if (said := failure(exc)) is None:
            raise
        raise NoteNotSaved(folder / "index.html", said) from None
    return folder / "index.html"


class NoteNotSaved(Exception):
    """The report's files are written, but the storage took no note for the dashboard: it may only be read
    here (another user's file, a read-only mount), or it failed."""

    def __init__(self, page: Path, why: str):
        super().__init__(why)
        self.page = page


def render(**page) -> str:
    return _ENV.get_template("template.html.j2").render(**page)


def write_verdict(found: dict | None, folder: Path) -> None:
    """verdict.json beside the page, for other tools: the arms' means, intervals, n and groups, the
    pairwise tests, the warnings (NaN, where an interval needs more seeds, is null); `found` is
    verdict.decide's, None before confirmation runs."""
    path = folder / "verdict.json"
    if found is None:
        path.unlink(missing_ok=True)  # an earlier report's verdict is not this one's
        return
    atomic_write_text(path, json.dumps(_nulls(found), indent=1, allow_nan=False) + "\n")


def _nulls(node):
    if isinstance(node, float) and not math.isfinite(node):
        return None
    if isinstance(node, dict):
        return {k: _nulls(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_nulls(v) for v in node]
    return node


def attach_to_dashboard(study: optuna.Study, page: Path, sections: list[Section], verdict: str,
                        artifact_dir: Path | None) -> None:
    import tempfile

    from optuna_dashboard import save_note

    from study.dashboard import REPORT_PATH

    records.write_study(study, report=str(page.resolve().parent))
    save_note(study, f"## Report\n\n{verdict or 'No complete trial yet.'}\n\n[Open the HTML comparison report]"
                     f"({REPORT_PATH}{study._study_id}/index.html) (served by `study dashboard`; the file is "
                     f"{page.resolve()})\n")
    if artifact_dir is None:
        return
    from optuna.artifacts import upload_artifact

    from study.dashboard import artifact_store

    import hashlib

    store = artifact_store(artifact_dir, create=True)
    uploaded = dict(records.StudyRecord.of(study).figures)  # figure name -> digest of its last upload
    with tempfile.TemporaryDirectory() as tmp:
        for name, png in figures_of(sections):
            digest = hashlib.sha256(png).hexdigest()[:16]
            if uploaded.get(name) == digest:
                continue  # unchanged since the last report: uploading it again would only add a duplicate
            path = Path(tmp) / name
            path.write_bytes(png)
            upload_artifact(artifact_store=store, file_path=str(path), study_or_trial=study, mimetype="image/png")
            uploaded[name] = digest
    records.write_study(study, figures=uploaded)


def figures_of(sections: list[Section]) -> list[tuple[str, bytes]]:
    return [(f"{s.id}-{i}.png", base64.b64decode(f.png)) for s in sections for i, f in enumerate(s.figures)]
