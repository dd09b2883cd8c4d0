"""Rater quality and project agreement: judgment records in, a report out. No Django, no database.

Input. `build_report(records, gold, settings)` takes judgment records (mappings or a pandas DataFrame) with:
  id (int), rater (str), comparison (int), outcome ("a", "b", "tie", "both_bad"), left ("a"/"b": which response
  was shown on the left), time_ms (int), criteria (optional dict name -> "a"/"b"/"tie"), is_repeat_of
  (optional: id of the same rater's first judgment of this comparison, shown again with sides swapped) and
  created_at (optional, any orderable value: only passed through to the over-time windows);
plus gold answers (comparison -> "a"/"b", comparisons whose decisive answer is known) and QualitySettings.

Votes. Only first judgments are votes: agreement, the reference used by the chance test, Krippendorff's
alpha, the worker model and `comparison_labels` never see a repeat. Repeats serve self-consistency only.
Behaviour figures (time, too-fast share, tie / both-bad rates, position bias) use every judgment, since each
one is a separate act of clicking. Outcomes are compared in A/B terms, which do not depend on the side shown.

Per rater (`RaterQuality`), each proportion with its 95% Wilson interval:
- gold_accuracy: correct / decisive answers on gold comparisons (a tie or both-bad on a gold item is left
  out here and shows in tie_rate), with the one-sided binomial p-value against chance (0.5).
- agreement: how often the rater's outcome equals the leave-one-out majority of the OTHER raters of the
  comparison, over the comparisons where those others have a strict majority (more than half of their votes
  on one outcome). Outcomes are four nominal categories: a tie agrees only with a tie majority, both-bad only
  with a both-bad majority.
- reference_match: the evidence the chance test uses (below): matches with the reference answer, which is
  the gold answer on gold comparisons and the others' strict majority elsewhere; chance_match is the match
  rate expected from a rater answering independently of the content (Σ over outcomes of the rater's share
  times the reference's share, over the same comparisons, as in Cohen's kappa).
- position_bias: share of decisive answers (a/b) that went to the side shown on the left, with the two-sided
  binomial p-value against 0.5.
- tie_rate, both_bad_rate, too_fast_share (time_ms < settings.min_time_ms), self_consistency (repeats whose
  outcome equals the first judgment's).
- reliability: MACE's competence (crowd-kit, Hovy et al. 2013): the estimated probability that an answer is
  given from knowing the item rather than by a rater-specific guessing distribution. Chosen over
  Dawid–Skene's accuracy because it is 0 for every kind of spammer (random, always-left, always-"a") and for
  an adversary (flipped answers are not "knowing" answers), so it works directly as a vote weight, and it
  does not hinge on the share of ties. Fitted on first judgments over the four outcomes.

Flags. Each is a test per rater, and p-values of one kind are adjusted together across the raters who have
enough evidence for it, with Benjamini–Hochberg at a false discovery rate of 5% (q is the adjusted p-value):
- chance, "answers not above chance": one-sided exact binomial test of reference matches against the
  rater's chance_match, over gold and majority checks pooled. Gold alone cannot do this in time: at a 5% gold
  rate a rater has 2–3 gold answers after 50 judgments, and a careful rater (75% accurate) needs about 50
  decisive gold answers (1,000 judgments) before "not significantly above 0.5" stops misfiring more than 1 in
  40 times. Here BH certifies raters as above chance and the flag goes to those with at least
  MIN_REFERENCE_CHECKS checks who are not certified; the minimum is what keeps careful raters clear of it.
- position_bias: two-sided binomial test of the left share against 0.5; flagged when q < 5% and the share
  is outside 50% ± POSITION_BIAS_MIN_EFFECT (a 52% left share over 5,000 answers is real but harmless).
- self_inconsistency: one-sided binomial test that self-consistency is below SELF_CONSISTENCY_EXPECTED.
- speed: one-sided binomial test that the too-fast share is above TOO_FAST_TOLERANCE.
- low_reliability: not a frequentist test (MACE gives no p-value): reliability below RELIABILITY_FLOOR once
  the rater has MIN_RELIABILITY_COMPARISONS first judgments.

Tuning (tests/labeling/quality/simulation.py, 200 simulated projects: 8 careful raters at 75% accuracy with
150 judgments each and one each of random clicker, always-left, adversarial and speeder with 50 judgments,
overlap 3, 5% gold, 5% repeats): SIMULATION_FIGURES.

Project level (`ProjectQuality`): Krippendorff's alpha (nominal, on outcome; krippendorff package) with a
percentile bootstrap interval over comparisons, alpha per criterion likewise, pairwise agreement (share of
agreeing rater pairs on the same comparison) with a bootstrap interval over comparisons rather than a Wilson
interval over pairs, since the three pairs of one comparison are not independent, and `over_time`: the same
two figures in consecutive windows. Windows split the first judgments, in id order, into up to `windows`
equal blocks of at least MIN_WINDOW_JUDGMENTS; a comparison belongs to the window of its first judgment, so
its votes are never split.

Performance: PERFORMANCE_FIGURE.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
from crowdkit.aggregation import MACE

from labeling.quality.stats import (
    FDR,
    MIN_N,
    Interval,
    bh_adjust,
    binomial_p,
    bootstrap_interval,
    nominal_alpha,
    pattern_alpha,
    pattern_pairwise_agreement,
    wilson,
)

OUTCOMES = ("a", "b", "tie", "both_bad")
CRITERION_OUTCOMES = ("a", "b", "tie")
A, B, TIE, BOTH_BAD = range(4)

MIN_REFERENCE_CHECKS = 30
POSITION_BIAS_MIN_EFFECT = 0.10
SELF_CONSISTENCY_EXPECTED = 0.5
TOO_FAST_TOLERANCE = 0.10
RELIABILITY_FLOOR = 0.2
MIN_RELIABILITY_COMPARISONS = 30
MIN_WINDOW_JUDGMENTS = 200
# crowd-kit 1.4.2 starts every MACE restart from the same seeded point, so one restart loses nothing.
MACE_ITERATIONS = 30


@dataclass(frozen=True)
class QualitySettings:
    min_time_ms: int  # answers faster than this are "too fast" (the project's setting)


@dataclass(frozen=True)
class Flag:
    kind: str  # "chance", "position_bias", "self_inconsistency", "speed" or "low_reliability"
    reason: str  # plain words with the numbers, for the page


@dataclass(frozen=True)
class RaterQuality:
    rater: str
    judgments: int  # all judgments, repeats included
    comparisons: int  # first judgments (distinct comparisons)
    active_time_ms: int
    median_time_ms: float | None
    p10_time_ms: float | None
    gold_accuracy: Interval | None
    agreement: Interval | None
    reference_match: Interval | None
    chance_match: float | None
    gold_checks: int  # reference checks that were gold answers (the rest are majorities of other raters)
    position_bias: Interval | None
    tie_rate: Interval | None
    both_bad_rate: Interval | None
    self_consistency: Interval | None
    too_fast_share: Interval | None
    reliability: float | None
    flags: list[Flag] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            key: value.as_dict() if isinstance(value, Interval) else value
            for key, value in ((f, getattr(self, f)) for f in self.__dataclass_fields__)
            if key != "flags"
        } | {"flags": [asdict(flag) for flag in self.flags]}


@dataclass(frozen=True)
class Window:
    first_judgment_id: int
    last_judgment_id: int
    judgments: int  # first judgments of the window's comparisons
    comparisons: int
    alpha: Interval | None
    pairwise_agreement: Interval | None
    start: object = None  # earliest created_at in the window, when records carry it
    end: object = None

    def as_dict(self) -> dict:
        return _interval_dict(self)


@dataclass(frozen=True)
class ProjectQuality:
    judgments: int
    comparisons: int
    raters: int
    alpha: Interval | None
    criteria_alpha: dict[str, Interval | None]
    pairwise_agreement: Interval | None
    over_time: list[Window]

    def as_dict(self) -> dict:
        data = _interval_dict(self)
        data["criteria_alpha"] = {k: v.as_dict() if v else None for k, v in self.criteria_alpha.items()}
        data["over_time"] = [w.as_dict() for w in self.over_time]
        return data


@dataclass(frozen=True)
class QualityReport:
    raters: list[RaterQuality]  # sorted by rater
    project: ProjectQuality

    def as_dict(self) -> dict:
        return {"raters": [r.as_dict() for r in self.raters], "project": self.project.as_dict()}


@dataclass(frozen=True)
class ComparisonLabel:
    label: str | None  # weighted majority outcome; None without weight or when the top two are level
    margin: float  # (top weight - runner-up weight) / total weight, in [0, 1]
    weight: float  # total weight of the votes
    votes: int  # first judgments


def _interval_dict(obj) -> dict:
    return {
        f: (v.as_dict() if isinstance(v, Interval) else v) for f, v in ((f, getattr(obj, f)) for f in obj.__dataclass_fields__)
    }


def build_report(
    records: Iterable[Mapping] | pd.DataFrame,
    gold: Mapping[int, str],
    settings: QualitySettings,
    *,
    n_bootstrap: int = 1000,
    seed: int = 0,
    windows: int = 20,
) -> QualityReport:
    """Per-rater quality with flags and project-level agreement (see the module docstring)."""
    frame = judgment_frame(records)
    if frame.empty:
        return QualityReport(raters=[], project=ProjectQuality(0, 0, 0, None, {}, None, []))
    raters = pd.Index(sorted(frame["rater"].unique()))
    r = raters.get_indexer(frame["rater"])
    first = frame["is_repeat_of"].isna().to_numpy()
    comparisons, c = np.unique(frame["comparison"].to_numpy(), return_inverse=True)
    gold_code = _gold_codes(gold, comparisons)
    votes = _vote_counts(c[first], frame["outcome"].to_numpy()[first], len(comparisons))

    columns = _rater_columns(frame, r, first, c, votes, gold_code, settings, len(raters))
    columns["reliability"] = _reliability(r[first], c[first], frame["outcome"].to_numpy()[first], len(raters))
    qualities = [_rater_quality(name, i, columns) for i, name in enumerate(raters)]
    qualities = _with_flags(qualities, settings)

    project = ProjectQuality(
        judgments=len(frame),
        comparisons=int((votes.sum(axis=1) > 0).sum()),
        raters=len(raters),
        alpha=_alpha_interval(votes, n_bootstrap, seed),
        criteria_alpha={
            name: _alpha_interval(_vote_counts(c[first][has], labels[has], len(comparisons), 3), n_bootstrap, seed)
            for name, (labels, has) in _criteria(frame[first]).items()
        },
        pairwise_agreement=_agreement_interval(votes, n_bootstrap, seed),
        over_time=_windows(frame[first], c[first], votes, windows, n_bootstrap, seed),
    )
    return QualityReport(raters=qualities, project=project)


def judgment_frame(records: Iterable[Mapping] | pd.DataFrame) -> pd.DataFrame:
    """Records as a validated frame: outcome and left as codes (a=0, b=1, tie=2, both_bad=3)."""
    frame = records.copy() if isinstance(records, pd.DataFrame) else pd.DataFrame.from_records(list(records))
    required = ["id", "rater", "comparison", "outcome", "left", "time_ms"]
    if frame.empty and frame.columns.empty:
        frame = pd.DataFrame(columns=required)
    missing = set(required) - set(frame.columns)
    if missing:
        raise ValueError(f"Judgment records lack {', '.join(sorted(missing))}.")
    if "is_repeat_of" not in frame:
        frame["is_repeat_of"] = np.nan
    frame["rater"] = frame["rater"].astype(str)
    frame["outcome"] = _codes(frame, "outcome", OUTCOMES)
    frame["left"] = _codes(frame, "left", ("a", "b"))
    frame = frame.sort_values("id", kind="stable").reset_index(drop=True)
    if frame["id"].duplicated().any():
        raise ValueError(f"Judgment id {frame['id'][frame['id'].duplicated()].iloc[0]} occurs twice.")
    repeat = frame["is_repeat_of"].notna().to_numpy()
    twice = frame[~repeat].duplicated(["rater", "comparison"])
    if twice.any():
        row = frame[~repeat][twice].iloc[0]
        raise ValueError(
            f"Judgment {row['id']} is a second judgment by {row['rater']} of comparison {row['comparison']} "
            "but is not marked as a repeat."
        )
    return frame


def _codes(frame: pd.DataFrame, column: str, allowed: tuple[str, ...]) -> np.ndarray:
    codes = pd.Index(allowed).get_indexer(frame[column])
    if (codes < 0).any():
        bad = frame[codes < 0].iloc[0]
        raise ValueError(f"Judgment {bad['id']} has {column} {bad[column]!r}; expected one of {', '.join(allowed)}.")
    return codes.astype(np.int64)


def _gold_codes(gold: Mapping[int, str], comparisons: np.ndarray) -> np.ndarray:
    codes = np.full(len(comparisons), -1)
    for comparison, answer in gold.items():
        if answer not in ("a", "b"):
            raise ValueError(f"Gold answer of comparison {comparison} is {answer!r}; expected 'a' or 'b'.")
        i = np.searchsorted(comparisons, comparison)
        if i < len(comparisons) and comparisons[i] == comparison:
            codes[i] = OUTCOMES.index(answer)
    return codes


def _vote_counts(c: np.ndarray, labels: np.ndarray, n_comparisons: int, n_labels: int = 4) -> np.ndarray:
    return np.bincount(c * n_labels + labels, minlength=n_comparisons * n_labels).reshape(n_comparisons, n_labels)


def _rater_columns(frame, r, first, c, votes, gold_code, settings, n_raters) -> dict[str, np.ndarray]:
    """Per-rater counts, as arrays indexed by rater code."""
    outcome = frame["outcome"].to_numpy()
    time_ms = frame["time_ms"].to_numpy()
    decisive = outcome <= B

    def count(mask, rows=None):
        rr = r if rows is None else r[rows]
        return np.bincount(rr, weights=mask.astype(float), minlength=n_raters).astype(np.int64)

    cols = {
        "judgments": count(np.ones(len(frame), bool)),
        "comparisons": count(first),
        "active_time_ms": np.bincount(r, weights=time_ms, minlength=n_raters).astype(np.int64),
        "decisive": count(decisive),
        "left_chosen": count(decisive & (outcome == frame["left"].to_numpy())),
        "ties": count(outcome == TIE),
        "both_bad": count(outcome == BOTH_BAD),
        "too_fast": count(time_ms < settings.min_time_ms),
    }
    quantiles = frame.groupby(r)["time_ms"].quantile([0.5, 0.1]).unstack()
    cols["median_time_ms"] = quantiles[0.5].reindex(range(n_raters)).to_numpy()
    cols["p10_time_ms"] = quantiles[0.1].reindex(range(n_raters)).to_numpy()

    # Leave-one-out majority: the other raters' votes are the comparison's votes minus this rater's own.
    rf, cf, of = r[first], c[first], outcome[first]
    others = votes[cf].copy()
    others[np.arange(len(cf)), of] -= 1
    strict = others.max(axis=1) * 2 > others.sum(axis=1)
    majority = others.argmax(axis=1)
    cols["agreement_n"] = count(strict, first)
    cols["agreement_k"] = count(strict & (majority == of), first)

    g = gold_code[cf]
    gold_decisive = (g >= 0) & (of <= B)
    cols["gold_n"] = count(gold_decisive, first)
    cols["gold_k"] = count(gold_decisive & (of == g), first)

    reference = np.where(g >= 0, g, np.where(strict, majority, -1))
    checked = reference >= 0
    cols["reference_n"] = count(checked, first)
    cols["reference_k"] = count(checked & (of == reference), first)
    cols["reference_gold"] = count(checked & (g >= 0), first)
    own = np.bincount(rf[checked] * 4 + of[checked], minlength=n_raters * 4).reshape(n_raters, 4)
    ref = np.bincount(rf[checked] * 4 + reference[checked], minlength=n_raters * 4).reshape(n_raters, 4)
    with np.errstate(invalid="ignore", divide="ignore"):
        cols["chance_match"] = (own * ref).sum(axis=1) / cols["reference_n"] ** 2

    # Self-consistency: each repeat against the first judgment it repeats, in A/B terms.
    repeats = np.flatnonzero(~first)
    original = pd.Index(frame["id"]).get_indexer(frame["is_repeat_of"].to_numpy()[repeats])
    found = original >= 0
    repeats, original = repeats[found], original[found]
    mismatched = (r[repeats] != r[original]) | (c[repeats] != c[original]) | ~first[original]
    if mismatched.any():
        row = frame.iloc[repeats[mismatched][0]]
        raise ValueError(
            f"Judgment {row['id']} is marked as a repeat of judgment {row['is_repeat_of']}, which is not the "
            "same rater's first judgment of the same comparison."
        )
    cols["repeat_n"] = np.bincount(r[repeats], minlength=n_raters)
    cols["repeat_k"] = np.bincount(r[repeats], weights=outcome[repeats] == outcome[original], minlength=n_raters)
    return cols


def _reliability(r: np.ndarray, c: np.ndarray, labels: np.ndarray, n_raters: int) -> np.ndarray:
    """MACE competence per rater code (nan for a rater without first judgments)."""
    reliability = np.full(n_raters, np.nan)
    if len(r) == 0:
        return reliability
    order = np.argsort(c, kind="stable")  # grouping by task is the E-step's cost; sorted tasks group fastest
    # crowd-kit 1.4.2's MACE indexes its parameters by order of first appearance (pd.factorize) but fills the
    # guessing distributions from a sorted groupby: unless workers and labels are numbered in order of first
    # appearance, those get swapped between raters and between outcomes (an always-left rater then came out at
    # 0.32 instead of 0.06). Numbering them so makes the two orders agree.
    workers, raters = pd.factorize(r[order])
    answers, _ = pd.factorize(labels[order])
    data = pd.DataFrame({"task": c[order], "worker": workers, "label": answers})
    with warnings.catch_warnings():  # crowd-kit 1.4.2 calls set_index(inplace=True), which pandas 3.1 deprecates
        warnings.simplefilter("ignore", DeprecationWarning)
        model = MACE(n_restarts=1, n_iter=MACE_ITERATIONS, random_state=0).fit(data)
    reliability[raters] = model.spamming_[:, 1]
    return reliability


def _rater_quality(name: str, i: int, cols: dict[str, np.ndarray]) -> RaterQuality:
    def share(k: str, n: str, **test) -> Interval | None:
        successes, trials = int(cols[k][i]), int(cols[n][i])
        interval = wilson(successes, trials)
        if interval is None or not test:
            return interval
        p_value = binomial_p(successes, trials, **test)
        return Interval(interval.value, interval.low, interval.high, interval.n, p_value)

    chance = float(cols["chance_match"][i]) if cols["reference_n"][i] else None
    return RaterQuality(
        rater=name,
        judgments=int(cols["judgments"][i]),
        comparisons=int(cols["comparisons"][i]),
        active_time_ms=int(cols["active_time_ms"][i]),
        median_time_ms=_number(cols["median_time_ms"][i]),
        p10_time_ms=_number(cols["p10_time_ms"][i]),
        gold_accuracy=share("gold_k", "gold_n", p=0.5, alternative="greater"),
        agreement=share("agreement_k", "agreement_n"),
        reference_match=share("reference_k", "reference_n", p=chance or 0.0, alternative="greater"),
        chance_match=chance,
        gold_checks=int(cols["reference_gold"][i]),
        position_bias=share("left_chosen", "decisive", p=0.5, alternative="two-sided"),
        tie_rate=share("ties", "judgments"),
        both_bad_rate=share("both_bad", "judgments"),
        self_consistency=share("repeat_k", "repeat_n", p=SELF_CONSISTENCY_EXPECTED, alternative="less"),
        too_fast_share=share("too_fast", "judgments", p=TOO_FAST_TOLERANCE, alternative="greater"),
        reliability=_number(cols["reliability"][i]),
    )


def _number(x) -> float | None:
    return None if x is None or np.isnan(x) else float(x)


def _with_flags(qualities: list[RaterQuality], settings: QualitySettings) -> list[RaterQuality]:
    flags: dict[str, list[Flag]] = {q.rater: [] for q in qualities}

    def tested(figure: str, minimum: int) -> tuple[list[RaterQuality], list[float]]:
        family = [q for q in qualities if getattr(q, figure) is not None and getattr(q, figure).n >= minimum]
        return family, bh_adjust([getattr(q, figure).p_value for q in family])

    family, qs = tested("reference_match", MIN_REFERENCE_CHECKS)
    for q, q_value in zip(family, qs, strict=True):
        if q_value > FDR:
            m = q.reference_match
            flags[q.rater].append(
                Flag(
                    "chance",
                    f"Answers are not above chance: they match the reference in {_count(m)} checks "
                    f"({m.n - q.gold_checks} majorities of other raters, {q.gold_checks} gold answers), {_share(m)}, "
                    f"against {q.chance_match:.0%} expected by chance ({_p(m.p_value, q_value, len(family))})."
                    + _gold(q),
                )
            )
    family, qs = tested("position_bias", MIN_N)
    for q, q_value in zip(family, qs, strict=True):
        m = q.position_bias
        large = m.low > 0.5 + POSITION_BIAS_MIN_EFFECT or m.high < 0.5 - POSITION_BIAS_MIN_EFFECT
        if q_value <= FDR and large:
            flags[q.rater].append(
                Flag(
                    "position_bias",
                    f"Chose the response shown on the left in {_count(m)} decisive answers, {_share(m)}, where an "
                    f"unbiased rater is near 50% ({_p(m.p_value, q_value, len(family))}).",
                )
            )
    family, qs = tested("self_consistency", MIN_N)
    for q, q_value in zip(family, qs, strict=True):
        if q_value <= FDR:
            m = q.self_consistency
            flags[q.rater].append(
                Flag(
                    "self_inconsistency",
                    f"Gave the same answer to a repeated comparison (sides swapped) in {_count(m)} repeats, "
                    f"{_share(m)}, below the {SELF_CONSISTENCY_EXPECTED:.0%} expected "
                    f"({_p(m.p_value, q_value, len(family))}).",
                )
            )
    family, qs = tested("too_fast_share", MIN_N)
    for q, q_value in zip(family, qs, strict=True):
        if q_value <= FDR:
            m = q.too_fast_share
            flags[q.rater].append(
                Flag(
                    "speed",
                    f"Answered in under {settings.min_time_ms / 1000:g} s in {_count(m)} judgments, {_share(m)}, "
                    f"above the {TOO_FAST_TOLERANCE:.0%} tolerated ({_p(m.p_value, q_value, len(family))}).",
                )
            )
    for q in qualities:
        if q.reliability is not None and q.comparisons >= MIN_RELIABILITY_COMPARISONS and q.reliability < RELIABILITY_FLOOR:
            flags[q.rater].append(
                Flag(
                    "low_reliability",
                    f"Worker-model reliability {q.reliability:.2f} is below {RELIABILITY_FLOOR:.2f} over "
                    f"{q.comparisons} comparisons (MACE: the estimated share of answers that track the item "
                    "rather than a guess).",
                )
            )
    return [_replace_flags(q, flags[q.rater]) for q in qualities]


def _replace_flags(q: RaterQuality, flags: list[Flag]) -> RaterQuality:
    return RaterQuality(**{f: getattr(q, f) for f in q.__dataclass_fields__ if f != "flags"}, flags=flags)


def _count(m: Interval) -> str:
    return f"{round(m.value * m.n)} of {m.n}"


def _share(m: Interval) -> str:
    return f"{m.value:.0%} (95% CI {m.low * 100:.0f}–{m.high * 100:.0f}%)"


def _gold(q: RaterQuality) -> str:
    g = q.gold_accuracy
    return f" Gold accuracy {_share(g)[:-1]}, {g.n} decisive gold answer{'s' * (g.n != 1)})." if g else ""


def _p(p_value: float, q_value: float, family: int) -> str:
    def fmt(x: float) -> str:
        return "< 0.001" if x < 0.001 else f"= {x:.3f}" if x < 0.01 else f"= {x:.2f}"

    return f"p {fmt(p_value)}, q {fmt(q_value)} after Benjamini–Hochberg over {family} raters"


def _criteria(first: pd.DataFrame) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per criterion: outcome codes (a=0, b=1, tie=2) and which first judgments answered it."""
    if "criteria" not in first:
        return {}
    answers = pd.DataFrame.from_records([c if isinstance(c, Mapping) else {} for c in first["criteria"]])
    result = {}
    for name in sorted(answers.columns):
        has = answers[name].notna().to_numpy()
        codes = pd.Index(CRITERION_OUTCOMES).get_indexer(answers[name])
        if ((codes < 0) & has).any():
            bad = first.iloc[np.flatnonzero((codes < 0) & has)[0]]
            raise ValueError(
                f"Judgment {bad['id']} has criterion {name!r} = {bad['criteria'][name]!r}; expected a, b or tie."
            )
        result[name] = (codes.astype(np.int64), has)
    return result


def _patterns(votes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct vote patterns of the comparisons judged at least twice, with how many comparisons have each."""
    pairable = votes[votes.sum(axis=1) >= 2]
    if len(pairable) == 0:
        return np.zeros((0, votes.shape[1]), dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.unique(pairable, axis=0, return_counts=True)


def _alpha_interval(votes: np.ndarray, n_bootstrap: int, seed: int) -> Interval | None:
    alpha = nominal_alpha(votes)
    if alpha is None:
        return None
    patterns, counts = _patterns(votes)
    interval = bootstrap_interval(
        patterns, pattern_alpha, counts=counts, n_resamples=n_bootstrap, seed=seed, vectorized=True
    )
    return Interval(alpha, interval.low, interval.high, interval.n)


def _agreement_interval(votes: np.ndarray, n_bootstrap: int, seed: int) -> Interval | None:
    """Pairwise agreement; n is the number of rater pairs, the interval resamples comparisons."""
    patterns, counts = _patterns(votes)
    interval = bootstrap_interval(
        patterns, pattern_pairwise_agreement, counts=counts, n_resamples=n_bootstrap, seed=seed, vectorized=True
    )
    if interval is None:
        return None
    m = patterns.sum(axis=1)
    return Interval(interval.value, interval.low, interval.high, int(counts @ (m * (m - 1) // 2)))


def _windows(
    first: pd.DataFrame, c: np.ndarray, votes: np.ndarray, windows: int, n_bootstrap: int, seed: int
) -> list[Window]:
    n = len(first)
    blocks = max(1, min(windows, n // MIN_WINDOW_JUDGMENTS))
    # first is in id order: a comparison's window is that of its first vote.
    start_rank = np.full(len(votes), n)
    np.minimum.at(start_rank, c, np.arange(n))
    block_of_comparison = start_rank * blocks // max(n, 1)
    block = block_of_comparison[c]
    ids = first["id"].to_numpy()
    times = first["created_at"] if "created_at" in first else None
    result = []
    for b in range(blocks):
        rows = block == b
        if not rows.any():
            continue
        window_votes = votes[block_of_comparison == b]
        result.append(
            Window(
                first_judgment_id=int(ids[rows].min()),
                last_judgment_id=int(ids[rows].max()),
                judgments=int(rows.sum()),
                comparisons=int((window_votes.sum(axis=1) > 0).sum()),
                alpha=_alpha_interval(window_votes, n_bootstrap, seed),
                pairwise_agreement=_agreement_interval(window_votes, n_bootstrap, seed),
                start=times[rows].min() if times is not None else None,
                end=times[rows].max() if times is not None else None,
            )
        )
    return result


# Aggregation and weights -------------------------------------------------------------------------------

WEIGHT_MODES = ("equal", "reliability", "exclude_flagged")


def rater_weights(report: QualityReport, mode: str) -> dict[str, float]:
    """Vote weight per rater for `comparison_labels`.

    "equal": 1 for everyone. "exclude_flagged": 0 for a rater with any flag, 1 otherwise. "reliability": the
    rater's MACE reliability (0 for a rater without one), which is already near 0 for random, always-left,
    adversarial and speeding raters (see SIMULATION_FIGURES) and near the careful raters' accuracy above chance
    for careful ones, so the weighted vote is roughly a vote of the knowing answers.
    """
    if mode == "equal":
        return {q.rater: 1.0 for q in report.raters}
    if mode == "exclude_flagged":
        return {q.rater: 0.0 if q.flags else 1.0 for q in report.raters}
    if mode == "reliability":
        return {q.rater: q.reliability or 0.0 for q in report.raters}
    raise ValueError(f"Unknown weight mode {mode!r}; expected one of {', '.join(WEIGHT_MODES)}.")


def comparison_labels(
    records: Iterable[Mapping] | pd.DataFrame, weights: Mapping[str, float]
) -> dict[int, ComparisonLabel]:
    """Per comparison, the weighted majority of first judgments and its margin (repeats are not votes)."""
    frame = judgment_frame(records)
    first = frame[frame["is_repeat_of"].isna()]
    unweighted = sorted(set(first["rater"]) - set(weights))
    if unweighted:
        raise ValueError(f"No weight for rater(s) {', '.join(unweighted)}.")
    comparisons, c = np.unique(first["comparison"].to_numpy(), return_inverse=True)
    w = first["rater"].map(weights).to_numpy(dtype=float)
    totals = np.zeros((len(comparisons), len(OUTCOMES)))
    np.add.at(totals, (c, first["outcome"].to_numpy()), w)
    votes = np.bincount(c, minlength=len(comparisons))
    ranked = np.sort(totals, axis=1)
    total = totals.sum(axis=1)
    top = totals.argmax(axis=1)
    decided = (total > 0) & (ranked[:, -1] > ranked[:, -2])
    with np.errstate(invalid="ignore", divide="ignore"):
        margin = np.where(total > 0, (ranked[:, -1] - ranked[:, -2]) / total, 0.0)
    return {
        int(comparison): ComparisonLabel(
            label=OUTCOMES[top[i]] if decided[i] else None,
            margin=float(margin[i]),
            weight=float(total[i]),
            votes=int(votes[i]),
        )
        for i, comparison in enumerate(comparisons)
    }
