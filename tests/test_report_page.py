"""The page: sections that apply, escaping, safe folder names, edge cases, and a real headless browser."""
import csv
import os
import re
import shutil

import optuna
import pytest

from conftest import make_study
from study import records
from study.report import build_report

SECTION = re.compile(r'<section id="([^"]+)">')


def sections(html: str) -> list[str]:
    return SECTION.findall(html)


def test_full_study_has_every_section_and_a_csv(tmp_path):
    study = make_study(30, statuses=("complete", "complete", "pruned", "diverged", "failed"),
                       test={"trial": None})
    path = build_report(study, tmp_path)
    html = path.read_text()
    assert path == tmp_path.resolve() / "made" / "index.html"
    assert sections(html) == ["summary", "verdict", "history", "learning-rate", "compare-optimizer",
                              "compare-batch_size", "pair-optimizer-batch_size", "curves", "batch", "schedules",
                              "parallel", "importance", "trials"]
    assert "No confirmation runs yet" in html and "not confirmed" in html
    assert "Best: trial" in html and "made-up question" in html
    assert "<script src" not in html and "http://" not in html and "https://" not in html  # nothing to fetch
    rows = list(csv.DictReader((path.parent / "trials.csv").read_text().splitlines()))
    assert len(rows) == 30 and rows[0]["number"] == "0"


def test_sections_that_do_not_apply_are_left_out(tmp_path):
    study = optuna.create_study(study_name="flat")
    study.set_user_attr("metric", "val_loss")
    html = build_report(study, tmp_path).read_text()
    assert sections(html) == ["summary"]
    assert "No trial has completed yet" in html and "<img" not in html


@pytest.mark.parametrize("statuses", [("pruned",), ("failed",), ("pruned", "failed", "diverged")])
def test_no_complete_trial_says_so(tmp_path, statuses):
    html = build_report(make_study(6, statuses=statuses), tmp_path).read_text()
    assert "No trial has completed yet" in html
    assert "Best: trial" not in html


def test_surplus_trials_count_nowhere_and_interrupted_ones_are_named(tmp_path):
    from optuna.trial import TrialState

    from study.catalog import summaries

    storage = optuna.storages.InMemoryStorage()
    study = make_study(4, storage=storage)
    dists = study.trials[0].distributions
    for mark in ("surplus", "interrupted"):
        study.add_trial(optuna.trial.create_trial(state=TrialState.FAIL, params=study.trials[0].params,
                                                  distributions=dists, user_attrs=records.attrs(**{mark: True})))
    html = build_report(study, tmp_path).read_text()
    assert "4 complete, 0 pruned, 0 diverged, 0 failed, 1 interrupted" in html
    rows = (tmp_path / "made" / "trials.csv").read_text().splitlines()
    assert len(rows) == 1 + 5  # header, four complete, the interrupted one; no surplus
    assert summaries(storage)[0]["failed"] == 0


def test_one_trial(tmp_path):
    html = build_report(make_study(1), tmp_path).read_text()
    assert "Best: trial 0" in html and "needs at least 8 complete trials" in html


def test_user_text_is_escaped_and_the_name_is_not_a_path(tmp_path):
    name = "../../<script>alert(1)</script>"
    study = make_study(6, name=name, statuses=("complete", "failed"), question="<img src=x onerror=alert(2)>")
    path = build_report(study, tmp_path / "out")
    html = path.read_text()
    assert path.parent.parent == (tmp_path / "out").resolve()
    assert "<script>alert(1)" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<img src=x" not in html and "&lt;img src=x onerror=alert(2)&gt;" in html
    assert "<b>boom</b>" not in html and "&lt;b&gt;boom&lt;/b&gt;" in html


def test_a_thousand_trials(tmp_path):
    study = make_study(1000, statuses=("complete", "pruned", "complete", "diverged", "failed"), epochs=6)
    html = build_report(study, tmp_path).read_text()
    table = html[html.index('<section id="trials">'):]
    body = table[table.index("<tbody>"):table.index("</tbody>")]
    assert [int(n) for n in re.findall(r"<tr>\s*<td>(\d+)</td>", body)] == list(range(1000))  # every trial, once
    assert "400 complete, 200 pruned, 200 diverged, 200 failed" in html


def test_the_dashboard_note_links_the_report(tmp_path):
    from optuna_dashboard import get_note

    study = make_study(3)
    path = build_report(study, tmp_path)
    note = get_note(study)
    assert str(path.resolve()) in note and f"](/study-report/{study._study_id}/index.html)" in note
    assert "file://" not in note  # optuna-dashboard's markdown drops such an href, leaving it empty


def _chromium() -> str | None:
    return shutil.which("chromium") and shutil.which("chromedriver")


@pytest.mark.skipif(not _chromium() and not os.environ.get("CI"), reason="needs Debian's chromium and chromedriver")
def test_page_loads_in_headless_chromium_with_every_image_rendered(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    study = make_study(20, statuses=("complete", "pruned", "diverged"), name="browser <test>")
    path = build_report(study, tmp_path)
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,4000"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    try:
        driver.get(path.as_uri())
        widths = driver.execute_script(
            "return Array.from(document.images).map(i => i.complete ? i.naturalWidth : 0)")
        errors = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
        driver.save_screenshot(str(tmp_path / "report.png"))  # kept as the test's artifact
        title = driver.title
        # The trials table sorts by a clicked header, numbers as numbers (inline script, nothing fetched).
        column = "#trials thead th:nth-child(1)"
        numbers = "return Array.from(document.querySelectorAll('#trials tbody tr td:first-child'))" \
                  ".map(td => Number(td.textContent))"
        driver.find_element("css selector", column).click()
        ascending = driver.execute_script(numbers)
        driver.find_element("css selector", column).click()
        descending = driver.execute_script(numbers)
        errors += [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
    finally:
        driver.quit()
    assert len(widths) >= 8 and all(w > 0 for w in widths), widths
    assert errors == []
    assert ascending == sorted(ascending) and descending == sorted(ascending, reverse=True) and len(ascending) == 20
    assert title == "study report: browser <test>"
    assert (tmp_path / "report.png").stat().st_size > 10_000


def test_report_artifacts_are_uploaded_once_and_again_only_when_they_change(tmp_path):
    from optuna.artifacts import get_all_artifact_meta

    study = make_study(12, storage=f"sqlite:///{tmp_path / 's.db'}")
    build_report(study, tmp_path / "reports", artifact_dir=tmp_path / "artifacts")
    first = len(get_all_artifact_meta(study))
    build_report(study, tmp_path / "reports", artifact_dir=tmp_path / "artifacts")
    assert first >= 4 and len(get_all_artifact_meta(study)) == first  # nothing changed, nothing added
    assert len(list((tmp_path / "artifacts").iterdir())) == first
