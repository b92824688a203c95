"""What `study list` shows: one line of facts per study in a storage, at a cost that does not grow with
the trials' histories.

    >>> import optuna
    >>> from optuna.trial import TrialState, create_trial
    >>> storage = optuna.storages.InMemoryStorage()
    >>> study = optuna.create_study(storage=storage, study_name="a")
    >>> for value in (0.3, 0.2):
    ...     study.add_trial(create_trial(state=TrialState.COMPLETE, value=value))
    >>> study.add_trial(create_trial(state=TrialState.FAIL, user_attrs={"surplus": True}))
    >>> summaries(storage)
    [{'name': 'a', 'metric': 'val_loss', 'complete': 2, 'pruned': 0, 'failed': 0, 'best_trial': 1, 'best': 0.2}]

Counting by state and finding the best trial are queries; only failed trials are read, to leave out the
marked ones (surplus, interrupted). Optuna's RDB storage counts by loading every trial with its attrs (5 s
for 10,000 trials on 2 cores), so on an RDB storage the counts are one SQL `GROUP BY` on Optuna's own
trial table instead. This module imports neither torch nor pandas, so that `list` starts fast.
"""
from __future__ import annotations

from collections import Counter
from typing import Any

import optuna
from optuna.trial import TrialState

from study.records import StudyRecord
from study.records import counts as count_statuses


def state_counts(storage: optuna.storages.BaseStorage, study_id: int) -> Counter:
    """Trials per Optuna state."""
    rdb = getattr(storage, "scoped_session", None)
    if isinstance(storage, optuna.storages.RDBStorage) and rdb is not None:
        from optuna.storages._rdb.models import TrialModel
        from sqlalchemy import func

        session = rdb()
        try:
            rows = (session.query(TrialModel.state, func.count()).filter(TrialModel.study_id == study_id)
                    .group_by(TrialModel.state).all())
        finally:
            session.close()
        return Counter({state: n for state, n in rows})
    return Counter(t.state for t in storage.get_all_trials(study_id, deepcopy=False))


def summaries(storage: optuna.storages.BaseStorage) -> list[dict[str, Any]]:
    """One line of facts per study: counts by status (diverged trials among the pruned) and the best value."""
    rows = []
    for frozen in storage.get_all_studies():
        sid = frozen._study_id
        states = state_counts(storage, sid)
        failed = storage.get_all_trials(sid, deepcopy=False, states=(TrialState.FAIL,)) \
            if states[TrialState.FAIL] else []
        try:
            best = storage.get_best_trial(sid)
        except ValueError:  # no complete trial yet
            best = None
        rows.append({"name": frozen.study_name, "metric": StudyRecord.of(frozen).metric,
                     "complete": states[TrialState.COMPLETE], "pruned": states[TrialState.PRUNED],
                     "failed": count_statuses(failed)["failed"],
                     "best_trial": best.number if best else None, "best": best.value if best else None})
    return rows
