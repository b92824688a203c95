"""The verdict: which arms the confirmation runs separate, with each arm's mean, 95% confidence interval
and n, and the warnings that qualify it. Data first (a dict, stored with the study and written to
verdict.json), the sentence from the data.

    >>> arms = {"xavier": [0.068, 0.05, 0.09, 0.07, 0.061], "he": [0.076, 0.09, 0.06, 0.08, 0.07],
    ...         "small": [2.30, 2.31, 2.30, 2.29, 2.30]}
    >>> v = compare(arms, "minimize")
    >>> [(a["label"], a["group"]) for a in v["arms"]]
    [('xavier', 1), ('he', 1), ('small', 2)]
    >>> print(v["sentence"])
    xavier leads (0.0678 [0.0496, 0.086]), not separated from he (0.0752 [0.0613, 0.0891], p = 0.4);
    both ahead of small (2.3 [2.29, 2.31], every p <= 4.6e-13).

Each arm is represented by its candidate's confirmed runs; where it had several (confirm top > 1), by the
verification runs of the one whose first runs gave the best mean (confirm.py): fresh seeds, which do not
flatter it as the seeds that chose it would. Every pair of arms is compared with Welch's t-test (scipy),
the p-values corrected for the number of pairs by Holm's method, at alpha = 0.05. The arm with the best
mean leads; group 1 is the leader and every arm the tests do not separate from it, group 2 the arms it
is ahead of, group 3 the arms that fail. The sentence claims only what a test separates: "both ahead
of" where every arm of group 1 is separated from that arm, else the leader alone is named; then every
other separated pair, as "A also ahead of B".
"""
from __future__ import annotations

import math
from itertools import combinations
from typing import Any, Callable, Sequence

from optuna.distributions import FloatDistribution
from optuna.trial import FrozenTrial

from study.budget import scaled_lr
from study.config import RANGES, Direction
from study.confirm import arm_of, best_reported, choose, confirmed_runs, finite_values
from study.records import TrialRecord, status_of

ALPHA = 0.05
CONFIDENCE = 0.95
CHANCE_MARGIN = 1.5  # final accuracy below 1.5x chance (1/classes) counts as not learning
UNBOUNDED = (-math.inf, math.inf)  # the values of a metric without a range in config.RANGES
EDGE = 0.1  # a best value in the outer 10% of a log range says the range may be cutting the optimum off
# An arm whose seeds spread 5x as widely as the other arms' trains chaotically: at a high lr, a 1e-7
# difference grows into a new result within an epoch. It must be that wide, and its F-test significant.
SPREAD = 5.0
SPREAD_ALPHA = 0.01


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down correction of p-values for multiple comparisons (NaN stays NaN).

    >>> [round(p, 6) for p in holm([0.01, 0.04, 0.03])]
    [0.03, 0.06, 0.06]
    """
    order = sorted((p, i) for i, p in enumerate(pvalues) if not math.isnan(p))
    out = [math.nan] * len(pvalues)
    running = 0.0
    for rank, (p, i) in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * p))
        out[i] = running
    return out


def interval(values: Sequence[float], bounds: tuple[float, float] = UNBOUNDED) -> tuple[float, float, float]:
    """Mean and the t-based 95% confidence interval of the mean (NaN bounds below 2 values), clipped to
    the values the metric can take: the mean lies within them, so the clipped interval covers it as
    often, and a loss is not said to lie below 0.

    >>> [round(x, 3) for x in interval([0.05, 0.3], bounds=(0.0, math.inf))]   # t with 1 df: [-1.41, 1.76]
    [0.175, 0.0, 1.763]
    """
    import numpy as np
    from scipy import stats

    mean = float(np.mean(values)) if len(values) else math.nan
    if len(values) < 2:
        return mean, math.nan, math.nan
    if max(values) == min(values):  # no spread (scipy's sem would warn of precision loss)
        return mean, mean, mean
    sem = float(stats.sem(values))
    low, high = stats.t.interval(CONFIDENCE, len(values) - 1, loc=mean, scale=sem)
    return mean, max(float(low), bounds[0]), min(float(high), bounds[1])


def welch(a: Sequence[float], b: Sequence[float]) -> float:
    from scipy import stats

    if len(a) < 2 or len(b) < 2:
        return math.nan
    flat_a, flat_b = max(a) == min(a), max(b) == min(b)
    if flat_a and flat_b:  # no spread at all: equal means tie, others separate
        return 1.0 if a[0] == b[0] else 0.0
    if flat_a or flat_b:  # one variance 0: Welch's test is the other arm's one-sample t-test against that
        # value (t and df, n - 1, reduce to it exactly), which scipy computes without a precision warning
        constant, other = (a[0], b) if flat_a else (b[0], a)
        return float(stats.ttest_1samp(other, constant).pvalue)
    return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def _g(x: float) -> str:
    return "nan" if math.isnan(x) else f"{x:.3g}"


def _p(p: float) -> str:
    return "nan" if math.isnan(p) else f"{p:.2g}"


def _describe(arm: dict) -> str:
    return f"{_g(arm['mean'])} [{_g(arm['low'])}, {_g(arm['high'])}]"


def compare(arms: dict[str, list[float]], direction: str, failed: dict[str, str] | None = None,
            bounds: tuple[float, float] = UNBOUNDED) -> dict[str, Any]:
    """Arms' confirmed values (label -> one value per seed) -> the verdict's data and sentence.
    `failed` maps an arm that did not learn to why ("chance on 5 of 5 seeds"): it is ranked last.
    `bounds`: the values the metric can take (config.RANGES), which clip the intervals."""
    d, failed = Direction(direction), failed or {}
    rows = [{"label": label, **_stats(values, failed.get(label), bounds)} for label, values in arms.items()]
    sign = 1 if d.ascending else -1
    rows.sort(key=lambda r: (r["fails"] is not None, math.isnan(r["mean"]), sign * r["mean"]
                             if not math.isnan(r["mean"]) else 0))
    pairs = [{"a": a["label"], "b": b["label"], "difference": b["mean"] - a["mean"],
              "p": welch(a["values"], b["values"])} for a, b in combinations(rows, 2)]
    for pair, adjusted in zip(pairs, holm([p["p"] for p in pairs]), strict=True):
        pair["p_holm"] = adjusted
        pair["separated"] = bool(adjusted < ALPHA)
    by_arms = {frozenset((p["a"], p["b"])): p for p in pairs}

    def pair(a: dict, b: dict) -> dict:
        return by_arms[frozenset((a["label"], b["label"]))]

    leader = next((r for r in rows if not r["fails"]), None)
    for r in rows:
        r["group"] = 3 if r["fails"] else 1 if r is leader or not pair(leader, r)["separated"] else 2
    by_mean = list(rows)
    rows.sort(key=lambda r: r["group"])  # stable: by mean within a group
    return {"direction": str(d), "alpha": ALPHA, "confidence": CONFIDENCE,
            "test": "Welch's t-test, Holm-corrected over all pairs", "arms": rows, "pairs": pairs,
            "sentence": _sentence(rows, pair, by_mean)}


def _ps(pairs: list[dict], bound: str) -> str:
    """One claim's p, or the weakest of several: every p >= the least (not separated) or <= the most. An arm
    of one seed has no test (NaN): the warnings say so."""
    ps = [p["p_holm"] for p in pairs if not math.isnan(p["p_holm"])] or [math.nan]
    if len(ps) == 1:
        return f"p = {_p(ps[0])}"
    return f"every p {bound} {_p(min(ps) if bound == '>=' else max(ps))}"


def _names(rows: list[dict]) -> str:
    names = [r["label"] for r in rows]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + f" and {names[-1]}"


def _describe_all(rows: list[dict]) -> str:
    return ", ".join(_describe(r) for r in rows)


def _sentence(rows: list[dict], pair: Callable[[dict, dict], dict], by_mean: list[dict]) -> str:
    if not rows:
        return "No confirmation run has finished yet."
    working = [r for r in rows if not r["fails"]]
    parts = []
    if len(working) == 1:
        parts.append(f"{working[0]['label']}: {_describe(working[0])} (n = {working[0]['n']})")
    elif working:
        lead, *level = [r for r in working if r["group"] == 1]
        behind = [r for r in working if r["group"] == 2]
        if level:
            parts.append(f"{lead['label']} leads ({_describe(lead)}), not separated from {_names(level)} "
                         f"({_describe_all(level)}, {_ps([pair(lead, r) for r in level], '>=')})")
        else:
            parts.append(f"{lead['label']} wins ({_describe(lead)})")
        top = [lead, *level]
        # "both ahead of" only where every arm of group 1 is separated from that arm; else the leader alone
        every = [b for b in behind if all(pair(t, b)["separated"] for t in top)]
        alone = [b for b in behind if b not in every]
        if every:
            who = "" if not level else "both " if len(top) == 2 else f"all {len(top)} "
            parts.append(f"{who}ahead of {_names(every)} ({_describe_all(every)}, "
                         f"{_ps([pair(t, b) for t in top for b in every], '<=')})")
        if alone:
            parts.append(f"{lead['label']}{' also' if every else ''} ahead of {_names(alone)} "
                         f"({_describe_all(alone)}, {_ps([pair(lead, b) for b in alone], '<=')})")
        # the separations not said yet, between arms that are not the leader (each arm's figures are above)
        said = {frozenset((t["label"], b["label"])) for t in top for b in every}
        said |= {frozenset((lead["label"], b["label"])) for b in alone}
        ahead: dict[str, list[dict]] = {}  # each arm behind (in mean order) -> the arms ahead of it
        for a, b in combinations([r for r in by_mean if not r["fails"]], 2):  # a has the better mean
            if pair(a, b)["separated"] and frozenset((a["label"], b["label"])) not in said:
                ahead.setdefault(b["label"], []).append(a)
        claims: dict[tuple, tuple[list[dict], list[dict]]] = {}  # arms behind the same arms: one claim
        for b in by_mean:
            if b["label"] in ahead:
                aa = ahead[b["label"]]
                claims.setdefault(tuple(a["label"] for a in aa), (aa, []))[1].append(b)
        parts += [f"{_names(aa)} also ahead of {_names(bs)} ({_ps([pair(a, b) for a in aa for b in bs], '<=')})"
                  for aa, bs in claims.values()]
    parts += [f"{r['label']} fails ({r['fails']})" for r in rows if r["fails"]]
    return "; ".join(parts) + "."


def confirmed(verdict: dict | None, number: int) -> str | None:
    """What the confirmation runs of trial `number` gave, where it was confirmed (an arm's candidate or not:
    `--confirm-top 3` confirms three per arm): the search's best is one lucky seed, and its seeds may
    disagree with it.

    >>> v = {"confirmed": [{"trial": 7, **_stats([0.1, 0.12, 0.11], "chance on 2 of 3 seeds")}]}
    >>> confirmed(v, 7)
    '0.11 [0.0852, 0.135] over 3 seeds; it fails (chance on 2 of 3 seeds)'

    Where it is the candidate of an arm whose seeds are a lottery (`lotteries`), that is said too: the
    search crowned it on one seed that its others do not bear out.
    """
    row = next((row for row in (verdict or {}).get("confirmed", []) if row["trial"] == number), None)
    if row is None:
        return None
    lottery = any(arm.get("lottery") and arm["candidate"] == number for arm in verdict.get("arms", []))
    return over_seeds(row) + ("; a lottery: its seeds disagree far more than the other arms' (see the warnings)"
                              if lottery else "")


def over_seeds(row: dict) -> str:
    """An arm's or a confirmed trial's figures: "0.11 [0.0852, 0.135] over 3 seeds", and why it fails."""
    return (f"{_describe(row)} over {row['n']} seed{'s' * (row['n'] != 1)}"
            + (f"; it fails ({row['fails']})" if row["fails"] else ""))


def _stats(values: Sequence[float], fails: str | None, bounds: tuple[float, float] = UNBOUNDED) -> dict[str, Any]:
    """One arm's or trial's confirmed values: mean, 95% interval, n, and why it fails (None: it learns)."""
    mean, low, high = interval(values, bounds)
    return {"mean": mean, "low": low, "high": high, "n": len(values), "values": list(values), "fails": fails}


def leader(verdict: dict | None) -> dict | None:
    """The arm that leads the verdict, with its candidate trial; None without a verdict or where every arm
    fails (the arms are in group order, the leader first).

    >>> leader(compare({"a": [0.3, 0.31], "b": [0.1, 0.12]}, "minimize"))["label"]
    'b'
    """
    arms = (verdict or {}).get("arms", [])
    return arms[0] if arms and not arms[0]["fails"] else None


def _failure(trials: list[FrozenTrial]) -> str | None:
    """Why an arm's confirmation runs say it does not learn: most seeds diverged or stayed at chance."""
    diverged = sum(status_of(t) == "diverged" for t in trials)
    chance = 0
    for t in trials:
        record = TrialRecord.of(t)
        classes = record.budget.get("n_classes")
        accuracy = record.final.get("val_accuracy")
        if classes and accuracy is not None and status_of(t) == "complete" and accuracy < CHANCE_MARGIN / classes:
            chance += 1
    n = len(trials)
    if diverged + chance <= n / 2:
        return None
    return " and ".join(x for x in (f"diverged on {diverged} of {n} seeds" if diverged else "",
                                    f"chance on {chance} of {n} seeds" if chance else "") if x)


def label(arm: tuple, scientific: Sequence[str], candidate: int | None = None) -> str:
    """"adam" for one scientific param whose values are names, "shuffle=True" for other values, and
    "he/tanh" for several params (the sentence then starts with "init/activation: "). A space without
    scientific params has one arm, its best config: named by the trial it confirms, `candidate`."""
    if not scientific:
        return "the best config" + (f" (trial {candidate})" if candidate is not None else "")
    if len(scientific) > 1:
        return "/".join(map(str, arm))
    return arm[0] if isinstance(arm[0], str) else f"{scientific[0]}={arm[0]}"


def decide(trials: Sequence[FrozenTrial], scientific: Sequence[str], direction: str,
           metric: str | None = None) -> dict[str, Any] | None:
    """The study's verdict on `metric` (the study's; None: an unbounded one) from its finished
    confirmation runs, or None when it has none."""
    by_number = {t.number: t for t in trials}
    first, verify = confirmed_runs(trials)
    if not first:
        return None
    bounds = RANGES.get(metric, UNBOUNDED)
    # every confirmed trial's own figures, from its first runs: the arms' candidates and the others (top > 1)
    own = {of: _stats(finite_values(group), _failure(group), bounds) for of, group in first.items()}
    arms = choose(first, {of: arm_of(by_number[of], scientific) for of in first}, direction)
    # An arm is judged by its chosen candidate's verification runs where it chose among several (the first
    # runs chose it, so they would flatter it), else by its one candidate's first runs.
    judged = {label(arm, scientific, ofs[0]): (ofs[0], len(ofs), verify.get(ofs[0]) if len(ofs) > 1 else None)
              for arm, ofs in arms.items()}
    groups = {name: v or first[of] for name, (of, _, v) in judged.items()}
    values = {name: finite_values(group) for name, group in groups.items()}
    # an arm judged by its first runs fails as its candidate does (own), without a second look
    fails = {name: _failure(v) if v else own[of]["fails"] for name, (of, _, v) in judged.items()}
    failed = {name: why for name, why in fails.items() if why}
    out = compare(values, direction, failed, bounds)
    out["confirmed"] = [{"trial": of, **stats} for of, stats in own.items()]
    if len(scientific) > 1:
        out["sentence"] = f"{'/'.join(scientific)}: {out['sentence']}"
    if not scientific and not out["arms"][0]["fails"]:  # one arm: what its seeds say against the search's one
        of = judged[out["arms"][0]["label"]][0]
        searched = _g(best_reported(by_number[of], direction))
        out["sentence"] = (f"{out['sentence'].removesuffix('.')}, against {searched} from the one search seed that "
                           "chose it, which is optimistic.")
    for row in out["arms"]:
        of, among, verified = judged[row["label"]]
        row.update(candidate=of, search_value=by_number[of].value, chosen_from=among, verified=bool(verified),
                   diverged=sum(status_of(t) == "diverged" for t in groups[row["label"]]),
                   arm=dict(zip(scientific, arm_of(by_number[of], scientific), strict=True)))
    candidates = [by_number[r["candidate"]] for r in out["arms"]]
    out["warnings"] = boundary_warnings(candidates, scientific)
    trained = [t for t in trials if status_of(t) in ("complete", "pruned", "diverged")
               and not TrialRecord.of(t).confirm]
    out["warnings"] += coverage_warnings(trained, candidates, scientific)
    out["warnings"] += [f"{r['label']}: only {r['n']} confirmed seed(s), too few for an interval"
                        for r in out["arms"] if r["n"] < 2 and not r["fails"]]
    chaotic = lotteries(out["arms"])
    out["warnings"] += _spread_lines(out["arms"], chaotic)
    for row in out["arms"]:
        row["lottery"] = row["label"] in chaotic  # for verdict.json's readers, and confirmed()
    out["warnings"] += [f"{r['label']}: chosen among {r['chosen_from']} candidates by their own seeds and not yet "
                        "retrained with fresh ones (its verification runs), so its interval flatters it"
                        for r in out["arms"] if r["chosen_from"] > 1 and not r["verified"]]
    return out


def spread_warnings(arms: Sequence[dict]) -> list[str]:
    """A line for each arm of `lotteries`, with its spread and the test.

    >>> arms = [("he", [0.2, 0.21, 0.19]), ("xavier", [0.18, 0.2, 0.22]), ("orth", [0.18, 0.25, 2.88])]
    >>> print(*spread_warnings([{"label": a, "values": v, "fails": None} for a, v in arms]))
    orth: its seeds' relative spread is 19x the other arms' (values 0.18 to 2.88, F-test p = 8.9e-05):
    its result depends on the seed, as where training is chaotic, more than on the arm
    """
    return _spread_lines(arms, lotteries(arms))


def _spread_lines(arms: Sequence[dict], found: dict[str, tuple[float, float, bool]]) -> list[str]:
    out = []
    for r in arms:
        if r["label"] in found:
            ratio, p, relative = found[r["label"]]
            out.append(f"{r['label']}: its seeds' {'relative ' * relative}spread is {ratio:.0f}x the other arms' "
                       f"(values {_g(min(r['values']))} to {_g(max(r['values']))}, F-test p = {_p(p)}): its result "
                       "depends on the seed, as where training is chaotic, more than on the arm")
    return out


def lotteries(arms: Sequence[dict]) -> dict[str, tuple[float, float, bool]]:
    """The arms whose seeds disagree far more than the other arms' do, each with (how many times the others'
    sd its sd is, the test's p, whether on the log scale): its result depends on the seed more than on the
    arm, so its mean describes a lottery. Far more: its sd is `SPREAD` times the others' pooled sd, and an
    F-test of its variance against theirs gives p < SPREAD_ALPHA, Bonferroni-corrected over the arms.
    Positive values are compared on a log scale (relative spread): an arm at a loss of 0.8 spreads more than
    one at 0.1 without being chaotic. Arms that fail have their own line and are left out."""
    import numpy as np
    from scipy import stats

    rows = [r for r in arms if len(r["values"]) >= 2 and not r["fails"]]
    positive = all(v > 0 for r in rows for v in r["values"])
    var = {r["label"]: float(np.var(np.log(r["values"]) if positive else r["values"], ddof=1)) for r in rows}
    out = {}
    for r in rows:
        others = [(var[o["label"]], len(o["values"]) - 1) for o in rows if o is not r]
        df = sum(d for _, d in others)
        pooled = sum(v * d for v, d in others) / df if len(others) >= 2 else 0.0
        if pooled <= 0:
            continue
        ratio = var[r["label"]] / pooled
        p = min(1.0, float(stats.f.sf(ratio, len(r["values"]) - 1, df)) * len(rows))
        if ratio > SPREAD ** 2 and p < SPREAD_ALPHA:
            out[r["label"]] = (math.sqrt(ratio), p, positive)
    return out


def _log_floats(t: FrozenTrial) -> list[tuple[str, FloatDistribution]]:
    """The log-scale float params (lr, weight decay) t drew, with their distributions."""
    return [(name, d) for name, d in t.distributions.items()
            if isinstance(d, FloatDistribution) and d.log and name in t.params]


def boundary_warnings(best: Sequence[FrozenTrial], scientific: Sequence[str]) -> list[str]:
    """A best config's log-scale float (lr, weight decay) in the outer 10% of its range: widen it there."""
    out = []
    for t in best:
        for name, dist in _log_floats(t):
            at = (math.log(t.params[name]) - math.log(dist.low)) / (math.log(dist.high) - math.log(dist.low))
            if at < EDGE or at > 1 - EDGE:
                side, bound = ("lower", dist.low) if at < EDGE else ("upper", dist.high)
                out.append(f"{label(arm_of(t, scientific), scientific, t.number)}: "
                           f"{name} = {t.params[name]:.3g} lies in the {side} 10% of its range "
                           f"[{dist.low:g}, {dist.high:g}]; widen the range {'down' if side == 'lower' else 'up'}"
                           f"ward past {bound:g}, the optimum may lie beyond it")
    return out


def coverage_warnings(search: Sequence[FrozenTrial], best: Sequence[FrozenTrial],
                      scientific: Sequence[str]) -> list[str]:
    """An arm whose search never trained with a log-scale float (lr, weight decay) where every other arm (two
    at least) found its best: its value may say more about how it was tuned than about the arm. `best`: each
    arm's confirmed candidate; `search`: the search's trials that trained, whose params each arm tried."""
    arms = [arm_of(t, scientific) for t in best]
    tried_by: dict[tuple, list[FrozenTrial]] = {}
    for t in search:
        tried_by.setdefault(arm_of(t, scientific), []).append(t)
    out = []
    for t, arm in zip(best, arms, strict=True):
        for name, _ in _log_floats(t):
            if name in scientific:
                continue
            tried = [_trained_with(s, name) for s in tried_by.get(arm, []) if name in s.params]
            others = [_trained_with(b, name) for b, a in zip(best, arms, strict=True) if a != arm and name in b.params]
            if not tried or len(others) < 2:
                continue
            side = "above" if min(others) > max(tried) else "below" if max(others) < min(tried) else None
            if side:
                n = f"{len(tried)} trial{'s' * (len(tried) != 1)}"
                out.append(f"{label(arm, scientific)}: its search trained with {name} only from {min(tried):.2g} to "
                           f"{max(tried):.2g} ({n}), and every other arm found its best {side} that "
                           f"({min(others):.2g} to {max(others):.2g}): its result may say more about its tuning "
                           "than about the arm")
    return out


def _trained_with(t: FrozenTrial, name: str) -> float:
    """The value of param `name` that t trained with: its lr after the batch-size scaling (`lr_scaling`),
    which arms of different batch sizes do not share."""
    if name != "lr":
        return t.params[name]
    c = TrialRecord.of(t).config
    return scaled_lr(t.params[name], c.get("batch_size", 1), c.get("lr_scaling", "none"), c.get("reference_batch", 1))
