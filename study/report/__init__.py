"""The HTML comparison report of a study: compute (tables.py), draw (figures.py), lay out (page.py).

    >>> import optuna
    >>> from pathlib import Path
    >>> from study.report import build_report
    >>> build_report(optuna.create_study(study_name="empty"), Path("reports")).parts[-3:]   # and trials.csv
    ('reports', 'empty', 'index.html')
"""
from study.report.page import build_report

__all__ = ["build_report"]
