"""Search, then confirm: after the search, each arm's best configs are retrained with fresh seeds, so that
the verdict compares arms by what holds across seeds and not by one lucky run each.

An arm is one combination of the study's scientific params' values (`init=he, activation=tanh`); a space
without scientific params is one arm, `()`, whose candidates are the search's best configs. Its
candidates are its `top` best search trials, pruned ones included, ranked by the best value they
reported (a trial the pruner stopped early may still be the arm's best config). Each candidate is
retrained `seeds` times: confirmation runs are ordinary trials of the same storage, queued with the
candidate's params and tagged with the trial they confirm and their seed. They are never pruned, and a
retry resumes them like any trial.

    >>> from optuna.trial import create_trial
    >>> study = optuna.create_study()
    >>> for value, opt in [(0.3, "adam"), (0.2, "adam"), (0.5, "sgd")]:
    ...     study.add_trial(create_trial(state=TrialState.COMPLETE, value=value, params={"opt": opt},
    ...                                  distributions={"opt": CategoricalDistribution(["adam", "sgd"])}))
    >>> [(c["of"], c["seed"]) for c in plan(records.trials(study), ["opt"], "minimize", top=1, seeds=2)]
    [(1, 1001000), (1, 1001001), (2, 1002000), (2, 1002001)]

Seeds differ between candidates, so that two arms' seed noise is independent, as the tests assume.

Where an arm has several candidates (`top` > 1), the one whose runs gave the best mean is its choice;
chosen by those seeds, it would be judged by them too, and look better than it is. So the chosen one is
retrained with `seeds` more fresh seeds (`verify` runs), and the verdict judges the arm by those alone.
"""
from __future__ import annotations

import math
from collections import Counter
from typing import Any, Sequence

import optuna
from optuna.distributions import CategoricalDistribution  # noqa: F401 (the example's)
from optuna.trial import FrozenTrial, TrialState

from study import records
from study.config import SEED_LIMIT, Direction
from study.records import StudyRecord, TrialRecord, status_of


def arm_of(trial: FrozenTrial, scientific: Sequence[str], record: TrialRecord | None = None) -> tuple:
    """The trial's values of the scientific params, as it trained (its resolved config, else its params);
    `record`: the trial's record, when the caller has read it already."""
    config = (record or TrialRecord.of(trial)).config
    return tuple(config.get(p, trial.params.get(p)) for p in scientific)


def best_reported(trial: FrozenTrial, direction: str) -> float:
    """The best value a trial reached: its value if complete, else the best epoch it reported."""
    values = [trial.value] if trial.value is not None else list(trial.intermediate_values.values())
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return math.nan
    return min(values) if Direction(direction).ascending else max(values)


def candidates(trials: Sequence[FrozenTrial], scientific: Sequence[str], direction: str,
               top: int) -> list[FrozenTrial]:
    """Each arm's `top` best configs, by their best search trial, complete or pruned (not diverged), best
    arm first. A config trained twice (a grid point run again, a repeat) is one candidate: confirmed
    twice, its seeds would count twice."""
    arms: dict[tuple, list[tuple[float, FrozenTrial]]] = {}
    for t in trials:
        if status_of(t) in ("complete", "pruned") and not TrialRecord.of(t).confirm:
            value = best_reported(t, direction)
            if not math.isnan(value):
                arms.setdefault(arm_of(t, scientific), []).append((value, t))
    sign = 1 if Direction(direction).ascending else -1
    ranked = [_distinct(sorted(group, key=lambda vt: (sign * vt[0], vt[1].number)))[:top] for group in arms.values()]
    ranked.sort(key=lambda group: (sign * group[0][0], group[0][1].number))
    return [t for group in ranked for _, t in group]


def _distinct(ranked: list[tuple[float, FrozenTrial]]) -> list[tuple[float, FrozenTrial]]:
    """The first (best) trial of each config in `ranked`."""
    seen, out = set(), []
    for value, t in ranked:
        if (params := tuple(sorted(t.params.items()))) not in seen:
            seen.add(params)
            out.append((value, t))
    return out


def seed_for(of: int, k: int, base: int = 0) -> int:
    """The k-th fresh seed of the candidate trial `of`: not the search's seed (`base`, the space's
    training.seed), different for every candidate, and different again under another base (--seed)."""
    return (1_000_000 + 7_919_000 * base + 1000 * of + k) % SEED_LIMIT


def plan(trials: Sequence[FrozenTrial], scientific: Sequence[str], direction: str, top: int, seeds: int,
         vary_split: bool = False, base: int = 0) -> list[dict[str, Any]]:
    """The confirmation runs: one per candidate and seed, in the order they are queued."""
    out = []
    for t in candidates(trials, scientific, direction, top):
        for k in range(seeds):
            run: dict[str, Any] = {"of": t.number, "seed": seed_for(t.number, k, base)}
            if vary_split:
                run["split_seed"] = run["seed"]
            out.append(run)
    return out


VERIFY_SEEDS = 500  # a verification run's seed is the candidate's (500 + k)-th: apart from its first runs'


def is_verification(run: dict[str, Any] | None) -> bool:
    return bool(run and run.get("verify"))


def confirmed_runs(trials: Sequence[FrozenTrial]) -> tuple[dict[int, list[FrozenTrial]], dict[int, list[FrozenTrial]]]:
    """The finished (complete or diverged) confirmation runs by the candidate they confirm: the first
    runs, and the verification runs of a candidate chosen among several. A run is counted once: two
    processes that queue the same plan at the same instant can both run it (see queue)."""
    numbers = {t.number for t in trials}
    first: dict[int, list[FrozenTrial]] = {}
    verify: dict[int, list[FrozenTrial]] = {}
    seen = set()
    for t in trials:
        run = TrialRecord.of(t).confirm
        if run and status_of(t) in ("complete", "diverged") and run["of"] in numbers and (
                key := records.run_key(run)) not in seen:
            seen.add(key)
            (verify if is_verification(run) else first).setdefault(run["of"], []).append(t)
    return first, verify


def finite_values(runs: Sequence[FrozenTrial]) -> list[float]:
    """The runs' finite values: a diverged run's NaN or inf has no place in a mean."""
    return [t.value for t in runs if t.value is not None and math.isfinite(t.value)]


def choose(first: dict[int, list[FrozenTrial]], arm_of_candidate: dict[int, tuple],
           direction: str) -> dict[tuple, list[int]]:
    """Each arm's confirmed candidates, the one whose first runs gave the best mean first (NaN means, of
    runs with no finite value, last; ties by trial number)."""
    d, by_arm = Direction(direction), {}
    for of in sorted(first):
        by_arm.setdefault(arm_of_candidate[of], []).append(of)

    def key(of: int) -> tuple:
        values = finite_values(first[of])
        mean = sum(values) / len(values) if values else math.nan
        return (math.isnan(mean), 0.0 if math.isnan(mean) else (mean if d.ascending else -mean), of)

    return {arm: sorted(ofs, key=key) for arm, ofs in by_arm.items()}


def verification(trials: Sequence[FrozenTrial], scientific: Sequence[str], direction: str, runs: list[dict],
                 seeds: int, vary_split: bool = False, base: int = 0) -> list[dict[str, Any]]:
    """The verification runs, once every first run of the plan `runs` has finished: `seeds` fresh seeds (and
    splits, with vary_split) for each arm's chosen candidate, where the arm had several; none before, and
    none for an arm of one."""
    first, _ = confirmed_runs(trials)
    finished = {records.run_key(c) for t in trials if (c := TrialRecord.of(t).confirm)
                and status_of(t) in ("complete", "diverged", "failed")}
    if any(records.run_key(r) not in finished for r in runs if not is_verification(r)):
        return []
    by_number = {t.number: t for t in trials}
    arms = choose(first, {of: arm_of(by_number[of], scientific) for of in first}, direction)
    out = []
    for ofs in arms.values():
        for k in range(seeds if len(ofs) > 1 else 0):
            run: dict[str, Any] = {"of": ofs[0], "seed": seed_for(ofs[0], VERIFY_SEEDS + k, base), "verify": True}
            if vary_split:
                run["split_seed"] = run["seed"]
            out.append(run)
    return out


def varies_split(runs: list[dict[str, Any]] | None) -> bool | None:
    """Whether a stored plan's runs draw their own splits (vary_split); None before any plan."""
    return any("split_seed" in r for r in runs) if runs else None


def queue(study: optuna.Study, top: int, seeds: int, vary_split: bool, base: int = 0) -> list[dict[str, Any]]:
    """The study's confirmation runs, planned once (the plan is stored with the study) and queued once:
    a rerun queues only the runs of the plan that no trial holds yet. A rerun that asks for more (a larger
    `top` or `seeds`, as `study confirm --top 3` after a run with top 1, or the candidates of a search that
    --trials extended) adds its runs to the plan; a planned run is never dropped. Two processes that finish
    the same search at the same instant may both queue a run; the worker then runs one copy and fails the
    others as surplus (worker._runs). A study's runs all share one split mode: the stored plan's, whatever
    `vary_split` says later."""
    stored = StudyRecord.of(study)
    trials = records.trials(study)
    direction = study.direction.name.lower()
    runs = list(stored.confirm_plan or [])
    planned = {records.run_key(r) for r in runs}
    if runs:  # a planned study keeps its split mode, so that no arm mixes runs on one split and on their own
        vary_split = varies_split(runs)
    extra = [r for r in plan(trials, stored.scientific, direction, top, seeds, vary_split, base)
             if records.run_key(r) not in planned]
    if not extra:  # the first runs are planned: once they have finished, the chosen candidates' verification
        extra = [r for r in verification(trials, stored.scientific, direction, runs, seeds, vary_split, base)
                 if records.run_key(r) not in planned]
    if extra or stored.confirm_plan is None:
        runs += extra
        records.write_study(study, confirm_plan=runs)
    held = {records.run_key(c) for t in trials if (c := TrialRecord.of(t).confirm)}
    by_number = {t.number: t for t in trials}
    for run in runs:
        if records.run_key(run) not in held:
            study.enqueue_trial(by_number[run["of"]].params, user_attrs=records.attrs(confirm=run))
    return runs


def fewer_than_planned(study: optuna.Study, runs: list[dict[str, Any]], top: int, seeds: int) -> list[str]:
    """Warnings where the plan `runs` holds more candidates per arm than `top`, or more seeds per candidate
    than `seeds` asks for (`confirm --seeds 2` after a run with 5): none is dropped, and the verdict reads
    them all."""
    first = [r for r in runs if not is_verification(r)]
    if not first:
        return []
    by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
    scientific = StudyRecord.of(study).scientific
    per_candidate = Counter(r["of"] for r in first)
    per_arm = Counter(arm_of(by_number[of], scientific) for of in per_candidate)
    planned = {"top": (top, "candidates per arm", max(per_arm.values())),
               "seeds": (seeds, "seeds per candidate", max(per_candidate.values()))}
    return [f"study.confirm.{key} is {asked}, and this study's plan already holds {most} {what}: a planned run "
            f"is never dropped, so the verdict reads all {most}"
            for key, (asked, what, most) in planned.items() if most > asked]


def is_ready(study: optuna.Study, target: int) -> bool:
    """Whether the search has met its target, so that its candidates are final."""
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    return sum(not TrialRecord.of(t).confirm for t in done) >= target
