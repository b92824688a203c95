"""Fair budgets between arms: trials spread over the arms by design, and pruning within an arm at equal
samples seen."""
from collections import Counter

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial

from study import records
from study.arms import BalancedArms, PerArm, samples_at

OPTS = ["a", "b", "c"]


def _objective(trial):
    lr = trial.suggest_float("lr", 1e-4, 1, log=True)
    return 10.0 if trial.suggest_categorical("opt", OPTS) == "c" else lr  # "c" looks hopeless


def test_every_arm_gets_its_share_even_one_the_sampler_would_starve():
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    balanced = optuna.create_study(sampler=BalancedArms(optuna.samplers.TPESampler(seed=0, n_startup_trials=3),
                                                        {"opt": OPTS}))
    balanced.optimize(_objective, n_trials=15)
    assert Counter(t.params["opt"] for t in balanced.trials) == {"a": 5, "b": 5, "c": 5}
    half = optuna.create_study(sampler=BalancedArms(optuna.samplers.TPESampler(seed=0, n_startup_trials=3),
                                                    {"opt": OPTS}, balance=0.5))
    half.optimize(_objective, n_trials=30)
    assert min(Counter(t.params["opt"] for t in half.trials).values()) >= 0.5 * 30 / 3 - 1


def _trial(opt, values, batch, state=TrialState.COMPLETE):
    """A trial of `len(values)` epochs of one iteration each, at `batch` samples per iteration."""
    n = len(values)
    return create_trial(state=state, value=values[-1] if state == TrialState.COMPLETE else None,
                        params={"opt": opt, "lr": 0.01},
                        distributions={"opt": CategoricalDistribution(OPTS),
                                       "lr": FloatDistribution(1e-4, 1, log=True)},
                        intermediate_values=dict(enumerate(values)),
                        user_attrs=records.attrs(config={"opt": opt, "batch_size": batch},
                                                 budget={"total_iters": n, "iters_per_epoch": 1,
                                                         "samples_seen": n * batch}))


def test_a_trial_is_judged_against_its_own_arm_at_equal_samples_seen():
    study = optuna.create_study()
    study.add_trial(_trial("a", [1.0, 0.6, 0.4, 0.2], batch=128))  # 128 samples per epoch
    study.add_trial(_trial("b", [0.01] * 4, batch=128))  # another arm, far better: not this trial's peer
    small = _trial("a", [1.2, 1.1, 1.05, 0.5], batch=32, state=TrialState.PRUNED)  # 32 samples per epoch
    assert samples_at(small, 3) == 128 == samples_at(study.trials[0], 0)

    median = optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0)
    assert median.prune(study, small)  # by epoch index: 0.5 at epoch 3 is worse than 0.2 (and 0.01)
    assert not PerArm(median, ["opt"]).prune(study, small)  # at 128 samples its arm's peer was at 1.0
    worse = _trial("a", [1.2, 1.1, 1.05, 1.5], batch=32, state=TrialState.PRUNED)
    assert PerArm(median, ["opt"]).prune(study, worse)  # 1.05 at best, against 1.0 at the same samples


def test_trials_judged_in_turn_share_one_read_of_the_storage_until_a_trial_is_told():
    """A population's members are judged in turn, epoch after epoch. Each read of the finished trials
    re-reads every running one, so the members share one read until this worker tells a trial; the next
    judgment then reads again and judges against the trial just told."""
    study = optuna.create_study()
    study.add_trial(_trial("a", [1.0, 0.6, 0.4, 0.2], batch=128))
    reads = []
    real = study.get_trials
    study.get_trials = lambda *a, **kw: reads.append(1) or real(*a, **kw)
    pruner = PerArm(optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0), ["opt"])
    members = [_trial("a", [1.0, 0.5, 0.4, 0.3], batch=128, state=TrialState.RUNNING) for _ in range(3)]
    for i, m in enumerate(members):
        m.number = 10 + i
    for epoch in range(1, 4):
        for m in members:
            m.intermediate_values = dict(enumerate([1.0, 0.5, 0.4, 0.3][:epoch]))
            assert not pruner.prune(study, m)  # no worse than its one peer at any epoch
    assert len(reads) == 1
    for _ in range(2):  # told by another worker: unseen until REFRESH_S
        study.add_trial(_trial("a", [0.9, 0.4, 0.3, 0.1], batch=128))
    assert not pruner.prune(study, members[0]) and len(reads) == 1
    pruner.told()  # as if this worker had told them
    assert pruner.prune(study, members[0]) and len(reads) == 2  # 0.4 at epoch 2, against the median 0.3
