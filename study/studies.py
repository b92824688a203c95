"""Creating a study, or joining the one already stored: its identity, and the check that it is the same
experiment.

    >>> from study.config import load_config
    >>> storage = optuna.storages.InMemoryStorage()
    >>> study = create_or_load(load_config("quick"), storage, "memory", worker=0)
    >>> len(study_uid(study))        # 32 hex digits, chosen once by the process that created the study
    32
    >>> study_uid(create_or_load(load_config("quick"), storage, "memory", worker=1)) == study_uid(study)
    True
    >>> create_or_load(load_config("quick", overrides=["model.width=8"]), storage, "memory")
    Traceback (most recent call last):
    ...
    study.errors.ConfigError: memory: study.name: a study of this name with a different search space is
    already stored (model.width is 64 there, 8 here); choose another --study-name (got 'quick')

Exactly one process creates a study (Optuna refuses a second `create_study` of one name); the others load
it and wait for its attributes. Each worker's sampler is seeded apart from the others'.
"""
from __future__ import annotations

import time
import uuid
import warnings

import optuna

from study import records
from study.arms import BalancedArms, PerArm
from study.callables import is_reference
from study.config import StudyConfig
from study.data import fingerprint
from study.errors import ConfigError
from study.paths import is_uid
from study.pruners import PEER_PRUNERS, SharedRead, make_pruner
from study.samplers import make_sampler
from study.storage import shown

CREATE_WAIT_S = 30.0  # how long a worker waits for another to finish creating the study it joins
# The sections whose change makes a stored study a different experiment.
_EXPERIMENT_KEYS = ("data", "model", "training", "params")


def create_or_load(cfg: StudyConfig, storage: optuna.storages.BaseStorage, storage_url: str,
                   worker: int = 0) -> optuna.Study:
    """The study of `cfg` in `storage`: created with a new identity, or loaded and checked to be the same
    experiment. Exactly one process creates it; the others wait for its attributes."""
    s = cfg.study
    experiment = {k: cfg.raw.get(k) for k in _EXPERIMENT_KEYS}
    data = fingerprint(cfg.defaults.dataset, cfg.defaults.data_options)
    pruner = _pruner(cfg)
    try:
        study = optuna.create_study(storage=storage, study_name=s.name, direction=s.direction,
                                    sampler=_sampler(cfg, worker, 0), pruner=pruner)
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=s.name, storage=storage, pruner=pruner)
    else:  # the identity first: a joining worker waits for it, then for the rest
        records.write_study(study, uid=uuid.uuid4().hex)
        with warnings.catch_warnings():  # experimental in Optuna since 3.2, and what the dashboard reads
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([s.metric])  # optuna-dashboard names the objective, not "Objective 0"
        # `experiment` last: a joining worker waits for it, then finds the rest written
        records.write_study(study, space=cfg.raw, source=cfg.source, question=s.question, metric=s.metric,
                            scientific=list(cfg.scientific), dataset=cfg.defaults.dataset,
                            model=cfg.defaults.model, data_digest=data, experiment=experiment)
        if cfg.lr_range is not None:
            records.write_study(study, lr_range=cfg.lr_range)
        return study
    stored = _wait_for_creator(study)
    if stored.experiment and stored.experiment != experiment:
        key, was, now = first_difference(stored.experiment, experiment)
        raise ConfigError(shown(storage_url), "study.name", s.name,
                          f"a study of this name with a different search space is already stored ({key} is "
                          f"{was!r} there, {now!r} here); choose another --study-name")
    if stored.data_digest is not None and data is not None and stored.data_digest != data:
        # Same space, other data: its trials would be compared with trials trained on what the data was.
        unseeded = " (a dataset function must give the same data at each call: seed it)" if is_reference(
            cfg.defaults.dataset) else ""
        raise ConfigError(shown(storage_url), "data", cfg.defaults.data_options or cfg.defaults.dataset,
                          f"the data has changed since study {s.name!r} was made (digest {stored.data_digest} "
                          f"there, {data} here): its trials would be compared with trials of other data; restore "
                          f"the data, or choose another --study-name{unseeded}")
    if stored.data_digest is None and data is not None:  # made before studies kept their data's digest
        records.write_study(study, data_digest=data)
    if stored.uid is None:  # made by a version of study without identities
        records.write_study(study, uid=uuid.uuid4().hex)
    study.sampler = _sampler(cfg, worker, len(study.get_trials(deepcopy=False)))
    return study


_MISSING = "(not set)"


def first_difference(a: object, b: object, key: str = "") -> tuple[str, object, object]:
    """The first dotted key at which two YAML documents differ, with its value in each.

    >>> first_difference({"model": {"width": 64}}, {"model": {"width": 8}})
    ('model.width', 64, 8)
    """
    if isinstance(a, dict) and isinstance(b, dict):
        for k in [*a, *(k for k in b if k not in a)]:
            if a.get(k, _MISSING) != b.get(k, _MISSING):
                return first_difference(a.get(k, _MISSING), b.get(k, _MISSING), f"{key}.{k}" if key else str(k))
    return key, a, b


def _wait_for_creator(study: optuna.Study) -> records.StudyRecord:
    deadline = time.monotonic() + CREATE_WAIT_S
    while True:
        stored = records.StudyRecord.of(study)
        if stored.experiment or time.monotonic() > deadline:
            return stored
        time.sleep(0.1)


def study_uid(study: optuna.Study) -> str:
    uid = records.StudyRecord.of(study).uid
    if not is_uid(uid):  # read back from a storage that others can write: checked before any path uses it
        raise ConfigError("--storage", f"study {study.study_name!r}: user attr uid", uid,
                          "is not a study identity (32 hex digits); the storage was changed by hand")
    return uid


def _sampler(cfg: StudyConfig, worker: int, n_trials_before: int) -> optuna.samplers.BaseSampler:
    """The study's sampler, seeded apart for each worker of a run and each resumption: with the same
    seed, the workers (and a resumed run's random start-up trials) would propose the same params again."""
    s = cfg.study
    seed = None if s.sampler_seed is None else (s.sampler_seed + worker + 7919 * n_trials_before) % 2**32
    sampler = make_sampler(s.sampler, seed, s.sampler_options, cfg.grid_space())
    arms = {p: cfg.params[p].choices for p in cfg.scientific if cfg.params[p].kind == "categorical"}
    if arms and s.balance > 0 and s.sampler != "grid":  # a grid visits every arm by itself
        sampler = BalancedArms(sampler, arms, s.balance)
    return sampler


def _pruner(cfg: StudyConfig) -> optuna.pruners.BasePruner:
    """The study's pruner; with scientific params, one that judges each trial within its own arm. A median
    or percentile pruner reads the finished trials once for all the trials it judges between two tells."""
    s = cfg.study
    pruner = make_pruner(s.pruner, s.pruner_options)
    if s.pruner not in PEER_PRUNERS:
        return pruner
    if cfg.scientific and s.per_arm_pruning:
        return PerArm(pruner, cfg.scientific)
    return SharedRead(pruner)
