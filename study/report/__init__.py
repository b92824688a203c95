"""The HTML comparison report of a study: compute (tables.py), draw (figures.py), lay out (page.py).

    from study.report import build_report
    build_report(study, Path("reports"))   # -> reports/<study>/index.html and trials.csv
"""
from study.report.page import build_report

__all__ = ["build_report"]
