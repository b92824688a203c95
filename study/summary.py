"""What a run prints: one line per finished trial, and the summary at its end.

    >>> from optuna.distributions import FloatDistribution
    >>> study = optuna.create_study()
    >>> study.add_trial(optuna.trial.create_trial(state=TrialState.COMPLETE, value=0.0712, params={"lr": 0.0182},
    ...                                           distributions={"lr": FloatDistribution(1e-4, 1, log=True)}))
    >>> print(trial_line(study.trials[0], "val_loss"))
    trial    0 complete    val_loss=0.0712  lr=0.0182

`RunSummary(study, cfg, url, study_dir).text()` is the summary (runner.py's example runs it).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from study.config import METRICS, StudyConfig
from study.records import StudyRecord, TrialRecord, best_trial, error_of, status_of
from study.records import counts as count_statuses
from study.storage import dashboard_command
from study.verdict import confirmed


def trial_line(trial: optuna.trial.FrozenTrial, metric: str) -> str:
    params = " ".join(f"{k}={_fmt(v)}" for k, v in trial.params.items())
    state, record = status_of(trial), TrialRecord.of(trial)
    value = f"{metric}={_metric(trial.value)}" if trial.value is not None else ""
    if trial.state == TrialState.PRUNED:
        last = record.final.get(metric)
        value = f"{metric}={_metric(last)} at epoch {record.final.get('epoch')}" if last is not None else ""
    if state == "failed":
        value = error_of(trial)[:200]
    resumed = record.resumed
    if resumed:
        value += f" (resumed trial {resumed['from_trial']} at epoch {resumed['from_epoch']})"
    if record.confirm:  # its params are those of the trial it confirms
        verb = "verifies" if record.confirm.get("verify") else "confirms"
        params = f"{verb} trial {record.confirm['of']} with seed {record.confirm['seed']}"
    return f"trial {trial.number:>4} {state:<11} {value}  {params}".rstrip()


def _metric(v: float) -> str:
    """Four decimals, as a loss or an accuracy reads; four significant digits where those would hide the
    value (a loss of 3e-05 read 0.0000) or bury it (a diverged one read 88297824256.0000)."""
    return f"{v:.4f}" if v == 0 or not math.isfinite(v) or 1e-3 <= abs(v) < 1e5 else f"{v:.4g}"


def _fmt(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


@dataclass
class RunSummary:
    study: optuna.Study
    cfg: StudyConfig
    storage_url: str
    study_dir: Path
    stopped: str | None = None
    warnings: tuple[str, ...] = ()

    def counts(self, phase: str = "search") -> dict[str, int]:
        c = count_statuses(t for t in self.study.get_trials(deepcopy=False) if TrialRecord.of(t).phase == phase)
        return {k: c[k] for k in ("complete", "pruned", "diverged", "failed", "interrupted")}

    def text(self) -> str:
        c = self.counts()
        lines = [f"study {self.cfg.study.name!r}: {c['complete']} complete, {c['pruned']} pruned, "
                 f"{c['diverged']} diverged, {c['failed']} failed"
                 + (f", {c['interrupted']} interrupted" if c["interrupted"] else "")]
        verdict = StudyRecord.of(self.study).verdict  # one read of the study's attrs from its storage
        best = best_trial(self.study)
        if best is None:
            lines.append("no complete trial yet")
        else:
            final = TrialRecord.of(best).final
            metrics = ", ".join(f"{k}={_metric(final[k])}" for k in METRICS if k in final)
            optimistic = " (search, one seed: optimistic)" if verdict else ""
            lines.append(f"best trial {best.number}{optimistic}: {metrics}")
            lines.append("  params: " + (", ".join(f"{k}={_fmt(v)}" for k, v in best.params.items()) or "(none)"))
            if seeds := confirmed(verdict, best.number):
                lines.append(f"  confirmed: {seeds}")
        runs = self.counts("confirm")
        if any(runs.values()):
            lines.append(f"confirmation runs: {runs['complete']} complete, {runs['diverged']} diverged, "
                         f"{runs['failed']} failed" + (f", {runs['interrupted']} interrupted"
                                                       if runs["interrupted"] else ""))
        if verdict:
            lines.append(f"verdict (mean [95% interval] over seeds): {verdict['sentence']}")
            lines += [f"warning: {w}" for w in verdict.get("warnings", [])]
        lines += [f"warning: {w}" for w in self.warnings]
        if self.stopped:
            lines.append(f"stopped: {self.stopped}")
        lines.append(f"checkpoints: {self.study_dir}")
        lines.append(f"dashboard: {dashboard_command(self.storage_url)}")
        return "\n".join(lines)

