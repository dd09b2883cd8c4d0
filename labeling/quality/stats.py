"""Statistical primitives for data quality: intervals, tests, agreement and a Bradley–Terry leaderboard.

Every figure a page shows comes with an honest interval and the number it rests on (`Interval`):

- Proportions use the Wilson score interval (`scipy.stats.binomtest(...).proportion_ci(method="wilson")`),
  which stays inside [0, 1] and is not degenerate at 0/n or n/n (0/1 gives [0, 0.7935], 1/1 gives
  [0.2065, 1]), unlike the normal ("Wald") interval.
- Tests on proportions are exact binomial tests (`scipy.stats.binomtest`).
- Flags are sequential tests: Wald's likelihood ratio (`binomial_log10_lr`), compared with a Bonferroni
  threshold that holds under any number of looks by Ville's inequality (`sequential_threshold`), so that the
  chance of ever flagging a rater for whom the null holds is at most `FWER` = 5% over all raters together.
  Benjamini–Hochberg (`bh_adjust`, `scipy.stats.false_discovery_control`) remains for one-off families.
- Figures without a closed-form interval (Krippendorff's alpha, pairwise agreement over comparisons,
  medians) get a nonparametric percentile bootstrap over their units (`bootstrap_interval`).
- Krippendorff's alpha comes from the `krippendorff` package (nominal level).
- The leaderboard fits Bradley–Terry strengths with `choix` and bootstraps matches, as Chatbot Arena does.

No Django here: the functions take plain Python and numpy values and return the same.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import choix
import krippendorff
import numpy as np
from scipy import stats

CONFIDENCE = 0.95
FDR = 0.05
FWER = 0.05  # family-wise error rate of the sequential flags (`sequential_threshold`)

# "Too few to judge". A per-rater test only enters its Benjamini–Hochberg family with at least MIN_N
# observations: an exact binomial test on fewer than 10 answers can rarely reach p < 0.05 (at n = 5 the smallest
# two-sided p-value is 0.0625), so such raters could never be flagged and would only enlarge the family, costing
# every other rater power. The Wilson interval itself is honest at any n; a page may still hide figures on
# fewer than MIN_N observations as too noisy to read.
MIN_N = 10


@dataclass(frozen=True)
class Interval:
    """A point estimate with its confidence interval, the number of observations behind it and, for a
    figure that was tested, the p-value of that test."""

    value: float
    low: float
    high: float
    n: int
    p_value: float | None = None

    def as_dict(self) -> dict:
        data = {"value": self.value, "low": self.low, "high": self.high, "n": self.n}
        if self.p_value is not None:
            data["p_value"] = self.p_value
        return data


def finite_number(value) -> float | None:
    """value as a float, or None when it is missing, not a number (a bool is not one) or not finite (NaN, ±inf):
    what JSON, and PostgreSQL's jsonb, can hold. Numpy scalars count as numbers.

    >>> finite_number(np.float32(0.5)), finite_number(float("nan")), finite_number(None), finite_number(True)
    (0.5, None, None, None)
    """
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def wilson(successes: int, n: int, confidence: float = CONFIDENCE) -> Interval | None:
    """The share successes / n with its Wilson score interval; None when n == 0 (nothing to show)."""
    if n == 0:
        return None
    ci = stats.binomtest(int(successes), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return Interval(value=successes / n, low=float(ci.low), high=float(ci.high), n=int(n))


def binomial_p(successes: int, n: int, p: float = 0.5, alternative: str = "two-sided") -> float:
    """Exact binomial test of successes out of n against probability p.

    alternative is "two-sided", "greater" (the true share is above p) or "less". With n == 0 there is no
    evidence either way and the p-value is 1.
    """
    if n == 0:
        return 1.0
    return float(stats.binomtest(int(successes), int(n), p=p, alternative=alternative).pvalue)


def bh_adjust(p_values: Sequence[float]) -> list[float]:
    """Benjamini–Hochberg adjusted p-values (q-values), in the order given."""
    if len(p_values) == 0:
        return []
    return [float(q) for q in stats.false_discovery_control(np.asarray(p_values, dtype=float), method="bh")]


def discoveries(p_values: Sequence[float], fdr: float = FDR) -> list[bool]:
    """Which hypotheses to reject while keeping the false discovery rate at fdr (Benjamini–Hochberg)."""
    return [q <= fdr for q in bh_adjust(p_values)]


def binomial_log10_lr(successes: int, n: int, p0: float, p1: float) -> float:
    """log10 of the likelihood ratio of success probability p1 against p0 for successes out of n: Wald's
    sequential probability ratio statistic (`scipy.stats.binom.logpmf`)."""
    k, n = int(successes), int(n)
    return float((stats.binom.logpmf(k, n, p1) - stats.binom.logpmf(k, n, p0)) / np.log(10))


def sequential_threshold(family: int, error_rate: float = FWER) -> float:
    """log10 of the likelihood ratio that flags one of `family` raters: family / error_rate (Bonferroni).

    A likelihood ratio of the alternative against the null is a nonnegative martingale with mean 1 while the
    null holds, so by Ville's inequality it ever reaches 1/a with probability at most a, however often it is
    looked at; at a = error_rate / family for each of `family` raters, the chance that any rater for whom the
    null holds is ever flagged is at most error_rate.
    """
    return float(np.log10(max(family, 1) / error_rate))


def bootstrap_interval(
    units: Sequence | np.ndarray,
    statistic: Callable[[np.ndarray, np.ndarray], float | np.ndarray],
    *,
    counts: Sequence[int] | np.ndarray | None = None,
    n_resamples: int = 1000,
    confidence: float = CONFIDENCE,
    seed: int = 0,
    vectorized: bool = False,
) -> Interval | None:
    """Percentile bootstrap interval of a statistic over units resampled with replacement.

    statistic(units, counts) returns the statistic of a sample that holds counts[i] copies of units[i];
    it may return nan where the statistic is undefined (those resamples are left out). With vectorized=True
    it also takes a 2-D counts (one resample per row) and returns one value per row.
    counts says how many times each unit occurs in the data (default: once each). Collapsing identical
    units into one row with a count gives the same bootstrap (a draw of n units with replacement is a
    multinomial draw of how many copies of each distinct unit it holds) at the cost of the distinct rows
    only: the report bootstraps alpha over 300,000 comparisons this way, as their ~30 distinct vote
    patterns.

    Returns None when the statistic is undefined on the data itself. Example, the median of five times:

    >>> times = np.array([900, 1200, 1500, 4000, 9000])
    >>> bootstrap_interval(times, lambda v, c: np.median(np.repeat(v, c)), seed=1).value
    1500.0
    """
    units = np.asarray(units)
    counts = np.ones(len(units), dtype=np.int64) if counts is None else np.asarray(counts, dtype=np.int64)
    total = int(counts.sum())
    if total == 0:
        return None
    value = float(statistic(units, counts))
    if not np.isfinite(value):
        return None
    rng = np.random.default_rng(seed)
    samples = rng.multinomial(total, counts / total, size=n_resamples)
    if vectorized:
        replicates = np.asarray(statistic(units, samples), dtype=float)
    else:
        replicates = np.array([statistic(units, sample) for sample in samples], dtype=float)
    tail = (1 - confidence) / 2 * 100
    low, high = np.nanpercentile(replicates, [tail, 100 - tail])
    return Interval(value=value, low=float(low), high=float(high), n=total)


def nominal_alpha(value_counts: np.ndarray) -> float | None:
    """Krippendorff's alpha (nominal) from a units × values matrix of how many raters gave each value.

    None when alpha is undefined: fewer than two pairable values (no unit judged twice), or no variation
    among the pairable values (everyone gave the same value everywhere, so expected disagreement is 0).
    """
    value_counts = np.asarray(value_counts)
    pairable = value_counts[value_counts.sum(axis=1) >= 2]
    if pairable.size == 0 or np.count_nonzero(pairable.sum(axis=0)) < 2:
        return None
    return float(krippendorff.alpha(value_counts=pairable, level_of_measurement="nominal"))


def krippendorff_alpha(units: Mapping[Hashable, Mapping[Hashable, Hashable]]) -> float | None:
    """Krippendorff's alpha (nominal) over raters × units, given as unit -> {rater: label}.

    Raters who did not judge a unit are simply absent from its mapping. None when alpha is undefined
    (see `nominal_alpha`).
    """
    labels = sorted({label for votes in units.values() for label in votes.values()}, key=str)
    index = {label: i for i, label in enumerate(labels)}
    value_counts = np.zeros((len(units), max(len(labels), 1)), dtype=np.int64)
    for row, votes in enumerate(units.values()):
        for label in votes.values():
            value_counts[row, index[label]] += 1
    return nominal_alpha(value_counts)


def pattern_alpha(patterns: np.ndarray, counts: np.ndarray) -> float | np.ndarray:
    """Nominal alpha of data holding counts[i] units with value counts patterns[i]; nan where undefined.

    This is the formula `krippendorff.alpha` evaluates (coincidence matrix o, alpha = 1 - (n - 1)(n - tr o)
    / (n² - Σ n_v²) at the nominal level), written over weighted patterns so that `bootstrap_interval` can
    resample 300,000 comparisons as ~30 patterns; the tests check it equals `krippendorff.alpha` on the
    expanded rows. Reported point estimates come from the package itself (`nominal_alpha`). counts may be
    2-D (one resample per row); the result then has one alpha per row.
    """
    o = np.tensordot(np.asarray(counts, dtype=float), _pattern_coincidences(patterns), axes=1)
    n_v = o.sum(axis=-2)
    n = n_v.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        expected = (n * n - (n_v * n_v).sum(axis=-1)) / (n - 1)
        alpha = 1 - (n - np.trace(o, axis1=-2, axis2=-1)) / np.where(expected > 0, expected, np.nan)
    return float(alpha) if np.ndim(alpha) == 0 else alpha


def _pattern_coincidences(patterns: np.ndarray) -> np.ndarray:
    patterns = np.asarray(patterns, dtype=float)
    m = patterns.sum(axis=1)
    pairs = patterns[:, :, None] * patterns[:, None, :] - np.einsum("pv,vw->pvw", patterns, np.eye(patterns.shape[1]))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((m >= 2)[:, None, None], pairs / (m - 1)[:, None, None], 0.0)


def pattern_pairwise_agreement(patterns: np.ndarray, counts: np.ndarray) -> float | np.ndarray:
    """Share of agreeing rater pairs among all pairs of raters who judged the same unit; nan without pairs.
    counts may be 2-D (one resample per row), like `pattern_alpha`."""
    patterns = np.asarray(patterns, dtype=float)
    m = patterns.sum(axis=1)
    agreeing = np.asarray(counts, dtype=float) @ (patterns * (patterns - 1) / 2).sum(axis=1)
    pairs = np.asarray(counts, dtype=float) @ (m * (m - 1) / 2)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = agreeing / np.where(pairs > 0, pairs, np.nan)
    return float(share) if np.ndim(share) == 0 else share


# Bradley–Terry leaderboard ------------------------------------------------------------------------------

# Ratings are on the Elo scale: 1000 + 400·log10(strength), strengths normalised to a geometric mean of 1, so
# 1000 is the average source and a 400-point gap means 10:1 odds of winning (as Chatbot Arena shows).
ELO_BASE = 1000.0
ELO_SCALE = 400.0 / np.log(10.0)
# choix's Markov-chain regularisation (a small symmetric prior): without it a source that never lost, or a
# comparison graph in several pieces, has no finite maximum-likelihood strength.
BT_REGULARIZATION = 0.01


def leaderboard(
    matches: Iterable[tuple[str, str, str]],
    *,
    n_bootstrap: int = 1000,
    confidence: float = CONFIDENCE,
    seed: int = 0,
) -> list[dict]:
    """Bradley–Terry ratings of sources (models) from pairwise matches, best first.

    matches: (source_a, source_b, outcome) with outcome "a" (source_a won), "b" or "tie". A tie counts as
    half a win for each side. Matches between a source and itself carry no information and are skipped.
    Ratings are 1000 + 400·log10 of the Bradley–Terry strength (fitted by choix's iterative Luce spectral
    ranking); low/high are percentile bootstrap bounds over matches resampled with replacement.

    Returns [{"source", "rating", "low", "high", "comparisons"}], best rating first.
    """
    rows = [(a, b, outcome) for a, b, outcome in matches if a != b]
    for a, b, outcome in rows:
        if outcome not in ("a", "b", "tie"):
            raise ValueError(f"Match {a!r} vs {b!r} has outcome {outcome!r}; expected 'a', 'b' or 'tie'.")
    if not rows:
        return []
    sources = sorted({s for a, b, _ in rows for s in (a, b)})
    index = {s: i for i, s in enumerate(sources)}
    k = len(sources)
    # Each distinct (source_a, source_b, outcome) is one kind of match; resampling counts of kinds is the
    # same bootstrap as resampling the matches themselves.
    kinds, counts = np.unique(
        np.array([(index[a], index[b], ("a", "b", "tie").index(o)) for a, b, o in rows]), axis=0, return_counts=True
    )
    winner_credit = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])[kinds[:, 2]]

    def ratings(sample: np.ndarray) -> np.ndarray:
        wins = np.zeros((k, k))
        np.add.at(wins, (kinds[:, 0], kinds[:, 1]), sample * winner_credit[:, 0])
        np.add.at(wins, (kinds[:, 1], kinds[:, 0]), sample * winner_credit[:, 1])
        strengths = choix.ilsr_pairwise_dense(wins, alpha=BT_REGULARIZATION, max_iter=1000)
        return ELO_BASE + ELO_SCALE * (strengths - strengths.mean())

    rating = ratings(counts)
    rng = np.random.default_rng(seed)
    replicates = np.array([ratings(s) for s in rng.multinomial(counts.sum(), counts / counts.sum(), n_bootstrap)])
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(replicates, [tail, 100 - tail], axis=0)
    played = np.bincount(kinds[:, 0], weights=counts, minlength=k)
    played += np.bincount(kinds[:, 1], weights=counts, minlength=k)
    board = [
        {
            "source": source,
            "rating": float(rating[i]),
            "low": float(low[i]),
            "high": float(high[i]),
            "comparisons": int(played[i]),
        }
        for i, source in enumerate(sources)
    ]
    return sorted(board, key=lambda row: -row["rating"])
