"""What a run stores beside Optuna's own fields: the user attrs of each trial and of the study, written
and read here only, and a trial's outcome as study names it.

Optuna keeps a trial's params, state, value and intermediate values. study adds the resolved config,
the per-epoch history, the budget, provenance and the marks a run leaves (diverged, interrupted,
surplus, ...). `TrialRecord` is that schema; `write` is the only writer and `TrialRecord.of` the only
reader, so the runner, the summary, the report and the tests cannot drift apart.

    >>> from optuna.trial import TrialState, create_trial
    >>> t = create_trial(state=TrialState.PRUNED, intermediate_values={0: 2.3},
    ...                  user_attrs=attrs(history=[{"epoch": 0, "val_loss": 2.3}],
    ...                                   diverged={"reason": "non-finite loss", "step": 12}))
    >>> status_of(t), TrialRecord.of(t).final["val_loss"]
    ('diverged', 2.3)
    >>> attrs(colour="red")
    Traceback (most recent call last):
    ...
    KeyError: "not a trial record field: 'colour'"

Statuses: complete | pruned | diverged | failed | interrupted | surplus | running | waiting. `surplus`
trials (losers of the race for a study's last slots) never trained and count nowhere.
"""
from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Union

import optuna
from optuna.trial import FrozenTrial, TrialState

from study.paths import is_trial_number

AnyTrial = Union[optuna.Trial, FrozenTrial]


@dataclass(frozen=True)
class TrialRecord:
    """A trial's user attrs; every field is optional in the storage (a trial that never started has none)."""

    first_number: int | None = None  # the number of this trial's first attempt; its retries inherit it
    config: dict[str, Any] = field(default_factory=dict)  # the resolved TrialConfig, as a dict
    provenance: dict[str, Any] = field(default_factory=dict)  # versions, git revision, device
    budget: dict[str, Any] = field(default_factory=dict)  # total_iters, iters_per_epoch, samples_seen, n_classes
    history: list[dict[str, Any]] = field(default_factory=list)  # one record per epoch, written once at the end
    diverged: dict[str, Any] | None = None  # {"reason", "step"}
    resumed: dict[str, Any] | None = None  # {"from_trial", "from_epoch"}
    error: str | None = None  # "ExceptionType: message" of a failed trial
    surplus: bool = False  # lost the race for the study's last slots; never trained
    interrupted: bool = False  # stopped by Ctrl-C or SIGTERM; a retry was queued
    stale: bool = False  # left running by a dead worker (the heartbeat, --retry-stale): interrupted, or given up
    worker: dict[str, Any] | None = None  # host, boot, pid namespace, pid, process start time of its worker
    checkpoint_warnings: list[str] = field(default_factory=list)  # damaged or foreign checkpoints skipped
    engine: dict[str, Any] | None = None  # how it trained: {"name": "population", "population": id, "size": K}
    confirm: dict[str, Any] | None = None  # a confirmation run: {"of": trial number, "seed", "split_seed"}

    @classmethod
    def of(cls, trial: AnyTrial) -> TrialRecord:
        stored = {**_bulky_of(trial), **trial.user_attrs}
        return cls(**{f.name: stored[f.name] for f in dataclasses.fields(cls)
                      if stored.get(f.name) is not None})

    @property
    def phase(self) -> str:
        return "confirm" if self.confirm else "search"

    @property
    def final(self) -> dict[str, Any]:
        """The last epoch's record, or {} before the first epoch."""
        return self.history[-1] if self.history else {}

    @property
    def threads(self) -> int | None:
        """The intra-op threads it trained on, where a CPU trained it on one count (a chaotic config's
        result depends on it); None on another device, where a resumed trial's epochs differ, or where its
        history does not say (recorded since 2026-12-07)."""
        counts = {epoch.get("threads") for epoch in self.history}
        on_cpu = str(self.provenance.get("device", "cpu")).startswith("cpu")
        return counts.pop() if on_cpu and len(counts) == 1 and None not in counts else None


FIELDS = tuple(f.name for f in dataclasses.fields(TrialRecord))


def phase_of(trial: AnyTrial) -> str:
    """TrialRecord.of(trial).phase, from the user attrs alone: a worker asks it of every trial, often."""
    return "confirm" if trial.user_attrs.get("confirm") else "search"


def run_key(run: dict[str, Any] | None) -> tuple | None:
    """A confirmation run's identity, from its `confirm` record: (candidate, seed, verification or not).
    None for a search trial. Two trials with one key are one planned run, queued twice."""
    return (run["of"], run["seed"], bool(run.get("verify"))) if run else None


def attrs(**fields: Any) -> dict[str, Any]:
    """The user attrs that store these record fields: what `write` sets, and what a test's fake trial holds."""
    for name in fields:
        if name not in FIELDS:
            raise KeyError(f"not a trial record field: {name!r}")
    return dict(fields)


# Long JSON fields are kept as system attrs, which optuna-dashboard does not show: as user attrs, each was one
# unwrapped line of the dashboard's trial page (8,000 px wide). The page keeps the short ones and the curves.
BULKY = ("config", "provenance", "history", "checkpoint_warnings")
_PREFIX = "study:"


def _bulky_of(trial: AnyTrial) -> dict[str, Any]:
    system = (trial.system_attrs if isinstance(trial, FrozenTrial)
              else trial.storage.get_trial_system_attrs(trial._trial_id))
    return {k.removeprefix(_PREFIX): v for k, v in system.items() if k.startswith(_PREFIX)}


def write(trial: optuna.Trial, **fields: Any) -> None:
    for key, value in attrs(**fields).items():
        if key in BULKY:
            trial.storage.set_trial_system_attr(trial._trial_id, _PREFIX + key, value)
        else:  # through the Trial, not its storage: the pruner reads the Trial's cached copy (the budget)
            trial.set_user_attr(key, value)


def write_stored(study: optuna.Study, trial: FrozenTrial, **fields: Any) -> None:
    """`write` for a trial this process does not hold (another worker's), through Optuna's storage API."""
    for key, value in attrs(**fields).items():
        if key in BULKY:
            study._storage.set_trial_system_attr(trial._trial_id, _PREFIX + key, value)
        else:
            study._storage.set_trial_user_attr(trial._trial_id, key, value)


def error_of(trial: FrozenTrial) -> str:
    """Why a trial failed: the error the run recorded, else Optuna's own reason (a dead worker), else ''."""
    return TrialRecord.of(trial).error or str(trial.system_attrs.get("fail_reason", ""))


def first_number(trial: AnyTrial) -> int:
    """The number of this trial's first attempt. Read back from the storage, it is trusted only as a
    number <= this trial's own (it names a checkpoint folder)."""
    first = trial.user_attrs.get("first_number", trial.number)
    return first if is_trial_number(first) and first <= trial.number else trial.number


def queue_retry(study: optuna.Study, trial: AnyTrial) -> None:
    """Queue `trial` again with its params; the retry keeps its first attempt's number, hence its checkpoints,
    and its phase."""
    kept = {"confirm": TrialRecord.of(trial).confirm} if TrialRecord.of(trial).confirm else {}
    study.enqueue_trial(trial.params, user_attrs=attrs(first_number=first_number(trial), **kept))


# Marks in the order they take precedence over Optuna's state, each on the state it refines: a trial marked
# dead by another worker whose own worker was only late, and told it, is what it was told.
MARKS = {"surplus": TrialState.FAIL, "interrupted": TrialState.FAIL, "diverged": TrialState.PRUNED}
_STATES = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned", TrialState.FAIL: "failed",
           TrialState.RUNNING: "running", TrialState.WAITING: "waiting"}
# The statuses of a trial that ran to an end the study counts: its target, the report's comparisons.
FINISHED = ("complete", "pruned", "diverged")
# The same, as the Optuna states a storage can filter on (marked trials are failed, except diverged: pruned).
FINISHED_STATES = (TrialState.COMPLETE, TrialState.PRUNED)
# What holds a slot of the target: finished, or running or queued and so about to be.
TAKEN_STATES = (*FINISHED_STATES, TrialState.RUNNING, TrialState.WAITING)


def status_of(trial: FrozenTrial) -> str:
    for mark, state in MARKS.items():
        if trial.state == state and trial.user_attrs.get(mark):
            return mark
    return _STATES[trial.state]


def counts(trials: Iterable[FrozenTrial]) -> Counter:
    return Counter(status_of(t) for t in trials)


def trials(study: optuna.Study) -> list[FrozenTrial]:
    """Every trial of the study, read once and not copied: callers only read them."""
    return study.get_trials(deepcopy=False)


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    """The search's best complete trial, or None before the first one. Confirmation runs are left out: a
    lucky seed of a confirmed config is not a better config (the verdict reports them as means)."""
    try:
        best = study.best_trial
    except ValueError:
        return None
    if not TrialRecord.of(best).confirm:
        return best
    return best_of_search(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), study.direction)


def best_of_search(complete: Iterable[FrozenTrial], direction) -> FrozenTrial | None:
    """The best of these complete trials, confirmation runs left out (best_trial's rule)."""
    search = [t for t in complete if phase_of(t) == "search" and t.value is not None]
    pick = min if direction == optuna.study.StudyDirection.MINIMIZE else max
    return pick(search, key=lambda t: t.value, default=None)


@dataclass(frozen=True)
class StudyRecord:
    """A study's user attrs: set once by the process that creates it (`test` by each run's end)."""

    uid: str | None = None  # the study's identity; names its checkpoint folder once checked
    space: dict[str, Any] = field(default_factory=dict)  # the search space as loaded
    source: str = ""  # the file it came from
    question: str = ""
    metric: str = "value"  # a study not made by `study run` names no metric: its objective value
    scientific: list[str] = field(default_factory=list)  # the params whose effect the study asks about
    dataset: str = "?"
    model: str = "?"
    experiment: dict[str, Any] = field(default_factory=dict)  # what must match for a rerun to join it
    data_digest: str | None = None  # the user's data as the study was made with it (data.fingerprint)
    checkpoint_dir: str = ""
    test: dict[str, Any] | None = None  # the best trial on the test split (evaluation.py)
    confirm_plan: list[dict[str, Any]] | None = None  # the confirmation runs, planned once (confirm.py)
    verdict: dict[str, Any] | None = None  # the answer from the confirmation runs (verdict.py)
    diagnostics: dict[str, Any] = field(default_factory=dict)  # {"gradients": rows}, computed once per run
    lr_range: dict[str, Any] | None = None  # what an lr's `range: auto` became (lrfind.py)
    report: str | None = None  # the folder of the study's latest report, which `study dashboard` serves
    figures: dict[str, str] = field(default_factory=dict)  # figure artifacts uploaded: name -> digest

    @classmethod
    def of(cls, study: optuna.Study | optuna.study.FrozenStudy) -> StudyRecord:
        stored = study.user_attrs  # a FrozenStudy, from storage.get_all_studies(), has them too
        return cls(**{f.name: stored[f.name] for f in dataclasses.fields(cls) if stored.get(f.name) is not None})


STUDY_FIELDS = tuple(f.name for f in dataclasses.fields(StudyRecord))


def write_study(study: optuna.Study, **fields: Any) -> None:
    for key, value in fields.items():
        if key not in STUDY_FIELDS:
            raise KeyError(f"not a study record field: {key!r}")
        study.set_user_attr(key, value)
