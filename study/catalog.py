"""What `study list` shows: one line of facts per study in a storage, at a cost that does not grow with
the trials' histories.

    >>> import optuna
    >>> from optuna.trial import TrialState, create_trial
    >>> storage = optuna.storages.InMemoryStorage()
    >>> study = optuna.create_study(storage=storage, study_name="a")
    >>> for value in (0.3, 0.2):
    ...     study.add_trial(create_trial(state=TrialState.COMPLETE, value=value))
    >>> study.add_trial(create_trial(state=TrialState.FAIL, user_attrs={"interrupted": True}))
    >>> study.add_trial(create_trial(state=TrialState.FAIL, user_attrs={"surplus": True}))   # counted nowhere
    >>> summaries(storage)
    [{'name': 'a', 'metric': 'value', 'complete': 2, 'pruned': 0, 'diverged': 0, 'failed': 0, 'interrupted': 1,
      'running': 0, 'waiting': 0, 'best_trial': 1, 'best': 0.2,
      'confirm': {'complete': 0, 'diverged': 0, 'failed': 0, 'interrupted': 0, 'running': 0, 'waiting': 0},
      'gone': 0}]

Search trials and confirmation runs are counted apart, and the best is the search's (records.best_trial):
a confirmation run is a config chosen for being best, retrained with a fresh seed, and the lowest of
those seeds is luck, not a better config. Counting and finding the best trial are queries. Optuna's RDB
storage counts by loading every trial with its attrs (5 s for 10,000 trials on 2 cores), so on an RDB
storage the counts of a phase are two SQL `GROUP BY`s on Optuna's own tables (trials by state, and the
marks a run leaves, diverged, interrupted and surplus, by key) and the best is one ordered query. This
module imports neither torch nor pandas, so that `list` starts fast.
"""
from __future__ import annotations

from collections import Counter
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from study.records import MARKS, StudyRecord, best_of_search, phase_of
from study.records import counts as count_statuses
from study.stale import alive_here


def _confirm_ids(session, study_id: int):
    """The ids of a study's confirmation runs (the trials a `confirm` user attr tags), as a subquery."""
    from optuna.storages._rdb.models import TrialModel, TrialUserAttributeModel

    return (session.query(TrialUserAttributeModel.trial_id)
            .join(TrialModel, TrialModel.trial_id == TrialUserAttributeModel.trial_id)
            .filter(TrialModel.study_id == study_id, TrialUserAttributeModel.key == "confirm",
                    TrialUserAttributeModel.value_json.notin_(["false", "null"])))


def status_counts(storage: optuna.storages.BaseStorage, study_id: int, phase: str = "search") -> Counter:
    """The trials of one phase (search trials or confirmation runs) per status (records.status_of):
    Optuna's state, refined by the marks a run leaves."""
    if not isinstance(storage, optuna.storages.RDBStorage):
        return count_statuses(t for t in storage.get_all_trials(study_id, deepcopy=False) if phase_of(t) == phase)
    from optuna.storages._rdb.models import TrialModel, TrialUserAttributeModel
    from sqlalchemy import func

    session = storage.scoped_session()
    try:
        confirm = _confirm_ids(session, study_id)
        of_phase = TrialModel.trial_id.in_(confirm) if phase == "confirm" else TrialModel.trial_id.notin_(confirm)
        states = dict(session.query(TrialModel.state, func.count()).filter(TrialModel.study_id == study_id, of_phase)
                      .group_by(TrialModel.state).all())
        marked = (session.query(TrialUserAttributeModel.key, TrialModel.state, func.count())
                  .join(TrialModel, TrialModel.trial_id == TrialUserAttributeModel.trial_id)
                  .filter(TrialModel.study_id == study_id, of_phase, TrialUserAttributeModel.key.in_(list(MARKS)),
                          TrialUserAttributeModel.value_json.notin_(["false", "null"]))
                  .group_by(TrialUserAttributeModel.key, TrialModel.state).all())
    finally:
        session.close()
    marks = {key: n for key, state, n in marked if MARKS[key] == state}  # a mark counts on its state only
    # Surplus and interrupted trials are failed ones, diverged ones pruned (records.status_of).
    return Counter({"complete": states.get(TrialState.COMPLETE, 0), "running": states.get(TrialState.RUNNING, 0),
                    "waiting": states.get(TrialState.WAITING, 0),
                    "pruned": states.get(TrialState.PRUNED, 0) - marks.get("diverged", 0),
                    "failed": states.get(TrialState.FAIL, 0) - marks.get("surplus", 0) - marks.get("interrupted", 0),
                    **{mark: marks.get(mark, 0) for mark in MARKS}})


def best_search_trial(storage: optuna.storages.BaseStorage, study_id: int) -> FrozenTrial | None:
    """The search's best complete trial, as records.best_trial finds it: a lucky seed of a confirmation
    run is not a better config. On an RDB storage one query, as Optuna's own get_best_trial."""
    direction = storage.get_study_directions(study_id)[0]
    if not isinstance(storage, optuna.storages.RDBStorage):
        return best_of_search(storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.COMPLETE,)),
                              direction)
    from optuna.storages._rdb.models import TrialModel, TrialValueModel
    from sqlalchemy import case

    kind = TrialValueModel.TrialValueType
    rank = case((TrialValueModel.value_type == kind.INF_NEG, -1), (TrialValueModel.value_type == kind.FINITE, 0),
                (TrialValueModel.value_type == kind.INF_POS, 1))
    minimize = direction == optuna.study.StudyDirection.MINIMIZE
    order = (rank.asc(), TrialValueModel.value.asc()) if minimize else (rank.desc(), TrialValueModel.value.desc())
    session = storage.scoped_session()
    try:
        found = (session.query(TrialModel.trial_id)
                 .filter(TrialModel.study_id == study_id, TrialModel.state == TrialState.COMPLETE,
                         TrialModel.trial_id.notin_(_confirm_ids(session, study_id)))
                 .join(TrialValueModel).filter(TrialValueModel.objective == 0)
                 .order_by(*order).limit(1).one_or_none())
    finally:
        session.close()
    return storage.get_trial(found[0]) if found else None


STATUSES = ("complete", "pruned", "diverged", "failed", "interrupted", "running", "waiting")  # surplus: none


def summaries(storage: optuna.storages.BaseStorage) -> list[dict[str, Any]]:
    """One line of facts per study: its search trials per status and their best value, and its
    confirmation runs per status (the verdict's own numbers are on the report)."""
    rows = []
    for frozen in storage.get_all_studies():
        sid = frozen._study_id
        counts = status_counts(storage, sid)
        confirm = status_counts(storage, sid, "confirm")
        best = best_search_trial(storage, sid)
        running = []
        if counts["running"] or confirm["running"]:  # their workers' records say which were left by dead ones
            running = storage.get_all_trials(sid, deepcopy=False, states=(TrialState.RUNNING,))
        rows.append({"name": frozen.study_name, "metric": StudyRecord.of(frozen).metric,
                     **{status: counts[status] for status in STATUSES},
                     "best_trial": best.number if best else None, "best": best.value if best else None,
                     "confirm": {status: confirm[status] for status in STATUSES if status != "pruned"},
                     "gone": sum(alive_here(t) is False for t in running)})  # the next run retries them
    return rows
