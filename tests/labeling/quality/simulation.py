"""A simulated labeling project: careful raters plus known bad behaviours, with gold items and repeats.

Used by the tests, by the figures quoted in labeling/quality/report.py (`flag_rates`; run this module
to print the figures) and, through `large_frame`, by the report's timing on a million judgments. Truth per
comparison is drawn from TRUTH_SHARES; a careful rater gives the truth with probability `careful_accuracy` and
otherwise one of the three other outcomes at random, independently on a repeat (the hardest case for
self-consistency).
"""

import numpy as np

OUTCOMES = ("a", "b", "tie", "both_bad")
TRUTH_SHARES = (0.4, 0.4, 0.12, 0.08)


def simulate(
    *,
    seed: int,
    careful: int = 8,
    bad: tuple[str, ...] = ("random", "always_left", "adversarial", "speeder"),
    careful_judgments: int = 150,
    bad_judgments: int | None = None,
    overlap: int = 3,
    gold_rate: float = 0.05,
    repeat_rate: float = 0.05,
    careful_accuracy: float = 0.75,
    random_outcomes: tuple[float, ...] = (0.25, 0.25, 0.25, 0.25),
) -> tuple[list[dict], dict[int, str], dict[str, str]]:
    """Returns (records, gold answers, rater -> behaviour). Rater names are "careful-0", "random", ...

    Everyone judges at the same pace (bad_judgments defaults to careful_judgments), as in
    benchmarks/rater_quality.py: each comparison goes to `overlap` raters drawn in proportion to the judgments
    they have left, so who judges alongside whom is random."""
    rng = np.random.default_rng(seed)
    bad_judgments = careful_judgments if bad_judgments is None else bad_judgments
    raters = [f"careful-{i}" for i in range(careful)] + list(bad)
    behaviour = {name: ("careful" if name.startswith("careful") else name) for name in raters}
    quota = {name: careful_judgments if behaviour[name] == "careful" else bad_judgments for name in raters}
    repeats = {name: int(round(repeat_rate * quota[name])) for name in raters}
    remaining = np.array([quota[name] - repeats[name] for name in raters], dtype=float)

    truth, gold, events = [], {}, []  # events: (time, rater, comparison, repeat_of_event or None)
    while (remaining > 0).sum() >= overlap:
        comparison = len(truth)
        is_gold = rng.random() < gold_rate
        label = rng.choice(2) if is_gold else rng.choice(4, p=TRUTH_SHARES)
        truth.append(int(label))
        if is_gold:
            gold[comparison] = OUTCOMES[label]
        chosen = rng.choice(len(raters), size=overlap, replace=False, p=remaining / remaining.sum())
        for i in chosen:
            remaining[i] -= 1
            events.append((comparison + rng.random(), raters[i], comparison, None))
    first_events = list(range(len(events)))
    for name in raters:
        own = [e for e in first_events if events[e][1] == name]
        for e in rng.choice(own, size=min(repeats[name], len(own)), replace=False):
            when = events[e][0] + rng.random() * (len(truth) - events[e][0])
            events.append((when, name, events[e][2], int(e)))

    order = sorted(range(len(events)), key=lambda e: events[e][0])
    judgment_id = {e: i + 1 for i, e in enumerate(order)}
    left_of = {}
    records = []
    for e in order:
        _, name, comparison, repeat_of = events[e]
        left = ("b" if left_of[repeat_of] == "a" else "a") if repeat_of is not None else OUTCOMES[rng.choice(2)]
        left_of[e] = left
        outcome = _answer(rng, behaviour[name], truth[comparison], left, careful_accuracy, random_outcomes)
        fast = behaviour[name] == "speeder"
        records.append(
            {
                "id": judgment_id[e],
                "rater": name,
                "comparison": comparison,
                "outcome": outcome,
                "left": left,
                "time_ms": int(rng.lognormal(np.log(1200 if fast else 20000), 0.5)),
                "criteria": {"helpfulness": outcome if outcome in ("a", "b", "tie") else "tie"},
                "is_repeat_of": judgment_id[repeat_of] if repeat_of is not None else None,
            }
        )
    return records, gold, behaviour


def _answer(rng, behaviour, truth, left, careful_accuracy, random_outcomes):
    if behaviour == "careful":
        if rng.random() < careful_accuracy:
            return OUTCOMES[truth]
        return OUTCOMES[rng.choice([o for o in range(4) if o != truth])]
    if behaviour == "always_left":
        return left
    if behaviour == "adversarial":
        return {0: "b", 1: "a"}.get(truth) or OUTCOMES[rng.choice(2)]
    return OUTCOMES[rng.choice(4, p=random_outcomes)]  # random clicker and speeder


def flag_rates(*, seeds: range, **scenario) -> dict[str, dict[str, float]]:
    """Share of simulated raters of each behaviour flagged, overall ("any") and per flag kind; for careful
    raters also "project": the share of projects with at least one careful rater flagged."""
    from labeling.quality.report import QualitySettings, build_report

    flagged: dict[str, dict[str, int]] = {}
    raters: dict[str, int] = {}
    careful_projects = 0
    for seed in seeds:
        records, gold, behaviour = simulate(seed=seed, **scenario)
        report = build_report(records, gold, QualitySettings(min_time_ms=3000), n_bootstrap=20, seed=seed)
        careful_flagged = False
        for q in report.raters:
            kind = behaviour[q.rater]
            raters[kind] = raters.get(kind, 0) + 1
            counts = flagged.setdefault(kind, {})
            if q.flags:
                for name in {"any"} | {f.kind for f in q.flags}:
                    counts[name] = counts.get(name, 0) + 1
            careful_flagged |= kind == "careful" and bool(q.flags)
        careful_projects += careful_flagged
    rates = {kind: {name: n / raters[kind] for name, n in flagged.get(kind, {}).items()} for kind in raters}
    rates["careful"]["project"] = careful_projects / len(seeds)
    return rates


if __name__ == "__main__":  # python -m tests.labeling.quality.simulation: the figures in report.py
    import json
    import sys

    scenarios = {
        "default": {},
        "everyone at 50 judgments": {"careful_judgments": 50},
        "careful at 65%": {"careful_accuracy": 0.65},
        "random clicks a/b only": {"random_outcomes": (0.5, 0.5, 0.0, 0.0)},
        "careful at 65%, everyone at 50": {"careful_accuracy": 0.65, "careful_judgments": 50},
        "bad raters at 30 judgments": {"bad_judgments": 30},
        "overlap 2": {"overlap": 2},
    }
    projects = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    for title, scenario in scenarios.items():
        rates = flag_rates(seeds=range(projects), **scenario)
        print(title, json.dumps({k: {f: round(v, 3) for f, v in sorted(r.items())} for k, r in rates.items()}))


def large_frame(*, judgments: int, raters: int = 300, seed: int = 0):
    """A big synthetic project as a DataFrame (vectorised): overlap 3, 5% gold, 5% repeats, two criteria.

    For timing the report; behaviour is careful raters only (the cost does not depend on it)."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    n_first = int(judgments / 1.05)
    n_comparisons = n_first // 3
    comparison = np.repeat(np.arange(n_comparisons), 3)
    n_first = len(comparison)
    # three distinct raters per comparison: a random start and two random non-zero offsets
    start = rng.integers(0, raters, n_comparisons)
    offsets = np.stack([np.zeros(n_comparisons, int), rng.integers(1, raters // 2, n_comparisons)], axis=1)
    offsets = np.concatenate([offsets, offsets[:, 1:] + rng.integers(1, raters // 2, (n_comparisons, 1))], axis=1)
    rater = ((start[:, None] + offsets) % raters).ravel()
    truth = rng.choice(4, n_comparisons, p=TRUTH_SHARES)
    outcome = np.where(rng.random(n_first) < 0.75, truth[comparison], rng.integers(0, 4, n_first))
    n_repeat = judgments - n_first
    original = rng.choice(n_first, n_repeat, replace=False)
    left = rng.integers(0, 2, n_first)
    ids = np.arange(1, judgments + 1)
    frame = pd.DataFrame(
        {
            "id": ids,
            "rater": np.char.add("rater-", np.concatenate([rater, rater[original]]).astype(str)),
            "comparison": np.concatenate([comparison, comparison[original]]),
            "outcome": np.array(OUTCOMES)[np.concatenate([outcome, truth[comparison[original]]])],
            "left": np.array(["a", "b"])[np.concatenate([left, 1 - left[original]])],
            "time_ms": rng.lognormal(np.log(20000), 0.6, judgments).astype(int),
            "is_repeat_of": np.concatenate([np.full(n_first, np.nan), ids[original]]),
        }
    )
    criterion = np.array(["a", "b", "tie"])[np.minimum(frame["outcome"].map(OUTCOMES.index).to_numpy(), 2)]
    frame["criteria"] = [{"helpfulness": c, "honesty": c} for c in criterion]
    gold = {int(c): OUTCOMES[truth[c]] for c in np.flatnonzero((rng.random(n_comparisons) < 0.05) & (truth <= 1))}
    return frame, gold
