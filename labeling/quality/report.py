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
  rate a rater has 2–3 gold answers after 50 judgments, and "not significantly above 0.5" misfires on a rater
  whose decisive gold accuracy is 75% 63% of the time at 8 gold answers, 11% at 30, and only drops under 3% at
  about 50 (1,000 judgments). "Not above chance" is the absence of a discovery, so here BH certifies raters as
  above chance and the flag goes to those with at least MIN_REFERENCE_CHECKS checks who are not certified; the
  minimum, not the FDR, is what keeps careful raters clear of it.
- position_bias: two-sided binomial test of the left share against 0.5; flagged when q < 5% and the share's
  95% Wilson interval lies wholly outside 50% ± POSITION_BIAS_MIN_EFFECT, so that the bias is both real and
  large (a 52% left share over 5,000 answers is real, p = 0.005, but harmless).
- self_inconsistency: one-sided binomial test that self-consistency is below SELF_CONSISTENCY_EXPECTED.
- speed: one-sided binomial test that the too-fast share is above TOO_FAST_TOLERANCE.
- low_reliability: not a frequentist test (MACE gives no p-value): reliability below RELIABILITY_FLOOR once
  the rater has MIN_RELIABILITY_COMPARISONS first judgments.

Tuning. tests/labeling/quality/simulation.py simulates projects (`python -m tests.labeling.quality.simulation
200` prints these figures): 8 careful raters, 75% accurate (errors spread over the other three outcomes,
drawn afresh on a repeat), 150 judgments each, judging alongside a random clicker (uniform over the four
outcomes), an always-left rater, an adversary (swaps a and b, random side on ties) and a speeder (random, about
1.2 s) with 50 judgments each; overlap 3, 5% gold, 5% repeats. Share of raters flagged, 200 projects a line:

                                     careful        random  always-left  adversary  speeder
    as above                         0 of 1,600      97.5%     100%        100%       100%
    everyone at 50 judgments         0.3%            93.5%     100%        100%       100%
    careful raters 65% accurate      0.5%            89.5%     100%        100%       100%
    random clicker on a/b only       0               99.5%     100%        100%       100%
    65% accurate, everyone at 50     6.1%            85.5%     100%        100%       100%
    bad raters at 75 judgments       0               98.5%     100%        100%       100%
    bad raters at 30 judgments       0                0        100%          0        100%
    overlap 2                        0               98.5%     100%        100%       100%

At 50 judgments the random clicker and the adversary are caught by low_reliability (a careful rater's MACE
reliability has a 1st percentile of 0.45 at 150 judgments and 0.28 at 50; a random clicker's 99th percentile
is 0.23 and 0.30), the always-left rater by position_bias, the speeder by speed; chance takes over as checks
accrue (it flags 89% of random clickers at 75 judgments). MIN_REFERENCE_CHECKS = 30 because careful raters
with 50 judgments (about 19 checks) were flagged "not above chance" 11% of the time at a minimum of 20, 0.6%
at 25 and never at 30. RELIABILITY_FLOOR = 0.2 rather than 0.25, which would catch 99.5% of random clickers
at 50 judgments but flag 0.6% of careful raters when everyone is at 50 and 10% in the 65% case. Below 30
comparisons nothing but position bias and speed can fire, by design. The 65%-at-50 line is the limit of what
50 judgments can tell: some careful raters there are not yet distinguishable from guessing.

Project level (`ProjectQuality`): Krippendorff's alpha (nominal, on outcome; krippendorff package) with a
percentile bootstrap interval over comparisons, alpha per criterion likewise, pairwise agreement (share of
agreeing rater pairs on the same comparison) with a bootstrap interval over comparisons rather than a Wilson
interval over pairs, since the three pairs of one comparison are not independent, and `over_time`: the same
two figures in consecutive windows. Windows split the first judgments, in id order, into up to `windows`
equal blocks of at least MIN_WINDOW_JUDGMENTS; a comparison belongs to the window of its first judgment, so
its votes are never split.

Performance: `build_report` on 1,000,000 judgments (300 raters, 317,000 comparisons, overlap 3, 5% repeats,
two criteria, n_bootstrap=1000, given as a DataFrame) took 18 s on 2 cores (other jobs running), 1 GB of
memory; 15 s of it are MACE's 30 EM iterations (crowd-kit on pandas frames), 2 s the per-rater Wilson
intervals (scipy's binomtest, ~6 ms a rater: 1,000 raters took 23 s). A list of 1,000,000 dicts costs 1.5 s
more to become a frame. The bootstraps collapse comparisons into their distinct vote patterns, so 1,000
resamples of alpha cost milliseconds (see stats.bootstrap_interval).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import pandas as pd
from crowdkit.aggregation import DawidSkene

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

# Thresholds (the module docstring has the simulation behind them).
CAREFUL_KAPPA = 0.4  # the chance test's "careful" hypothesis: kappa with the truth of at least this
CHANCE_FWER = 0.05  # chance flags: family-wise error rate over raters and over every look (Bonferroni + Ville)
MIN_REFERENCE_CHECKS = 10  # first judgments before the chance test runs (its plug-in shares need a few)
GUESS_SMOOTHING = 0.1  # share of the rater's own answer shares kept in the careful hypothesis' guesses
POSITION_BIAS_MIN_EFFECT = 0.10  # a left share within 40–60% is not flagged however sure we are of it
SELF_CONSISTENCY_EXPECTED = 0.5  # flagged: repeating one's own answer significantly less often than this
TOO_FAST_TOLERANCE = 0.10  # anyone may answer an easy pair fast; flagged: significantly more too-fast answers
RELIABILITY_FLOOR = 0.2  # a reliability below this weighs 0 in the "reliability" weighting
MIN_WINDOW_JUDGMENTS = 200  # the smallest over-time window, in first judgments
# Dawid–Skene EM: at most DS_ITERATIONS rounds, fewer once the evidence lower bound gains under DS_TOLERANCE.
DS_ITERATIONS = 30
DS_TOLERANCE = 1e-5
CONFUSION_FLOOR = 1e-3  # smallest P(answer | truth) used when scoring answers against the fit


@dataclass(frozen=True)
class QualitySettings:
    min_time_ms: int  # answers faster than this are "too fast" (the project's setting)


@dataclass(frozen=True)
class Flag:
    kind: str  # "chance", "position_bias", "self_inconsistency" or "speed"
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
    chance_evidence: float | None = None  # log10 likelihood ratio, chance : careful (the chance test's statistic)
    vote_weight: float = 0.0  # weight of their votes in the "reliability" weighting (`rater_weights`)
    flags: list[Flag] = field(default_factory=list)

    def as_dict(self) -> dict:
        return _interval_dict(self) | {"flags": [asdict(flag) for flag in self.flags]}


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
        f: (v.as_dict() if isinstance(v, Interval) else v)
        for f, v in ((f, getattr(obj, f)) for f in obj.__dataclass_fields__)
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
    """Per-rater quality with flags, and project-level agreement (see the module docstring for every figure).

    n_bootstrap resamples stand behind each bootstrap interval (alpha, per-criterion alpha, pairwise agreement,
    and the same in each of up to `windows` over-time windows); seed makes them reproducible. Raters come back
    sorted by name; a record's rater is read as str. Raises ValueError, naming the judgment, for an unknown
    outcome, side or criterion answer, a second first judgment of a comparison by one rater, or a repeat that
    points at another rater's or another comparison's judgment.
    """
    frame = judgment_frame(records)
    if frame.empty:
        return QualityReport(raters=[], project=ProjectQuality(0, 0, 0, None, {}, None, []))
    raters = pd.Index(sorted(frame["rater"].unique()))
    r = raters.get_indexer(frame["rater"])
    first = frame["is_repeat_of"].isna().to_numpy()
    comparisons, c = np.unique(frame["comparison"].to_numpy(), return_inverse=True)
    gold_code = _gold_codes(gold, comparisons)
    votes = _vote_counts(c[first], frame["outcome"].to_numpy()[first], len(comparisons))

    worker = _worker_model(r[first], c[first], frame["outcome"].to_numpy()[first], gold_code, len(raters))
    columns = _rater_columns(frame, r, first, c, votes, gold_code, worker, settings, len(raters))
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


def _rater_columns(frame, r, first, c, votes, gold_code, worker, settings, n_raters) -> dict[str, np.ndarray]:
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

    # Reference checks: every first judgment against the worker model's leave-one-out answer (gold where known).
    reference = worker.reference.argmax(axis=1)
    cols["reference_n"] = cols["comparisons"]
    cols["reference_k"] = count(of == reference, first)
    cols["reference_gold"] = count(g >= 0, first)
    own = np.bincount(rf * 4 + of, minlength=n_raters * 4).reshape(n_raters, 4)
    ref = np.bincount(rf * 4 + reference, minlength=n_raters * 4).reshape(n_raters, 4)
    with np.errstate(invalid="ignore", divide="ignore"):
        cols["chance_match"] = (own * ref).sum(axis=1) / cols["reference_n"] ** 2
    cols["reliability"] = worker.reliability
    cols["chance_log_lr"] = worker.chance_log_lr

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


@dataclass(frozen=True)
class WorkerModel:
    """What the gold-anchored Dawid–Skene fit says, per first judgment and per rater code."""

    reference: np.ndarray  # first judgments × 4: the item's truth as the OTHER raters and gold say (leave-one-out)
    reliability: np.ndarray  # per rater: Cohen's kappa of their answers with that truth, clipped to [0, 1]
    chance_log_lr: np.ndarray  # per rater: log likelihood ratio, answering by chance : answering like CAREFUL_KAPPA


def _worker_model(
    r: np.ndarray, c: np.ndarray, labels: np.ndarray, gold_code: np.ndarray, n_raters: int
) -> WorkerModel:
    """Dawid–Skene (crowd-kit) over first judgments with gold answers clamped, then per rater the
    leave-one-out truth of each of their items, their kappa with it and the chance test's likelihood ratio."""
    n_comparisons, k = len(gold_code), len(OUTCOMES)
    if len(r) == 0:
        empty = np.full(n_raters, np.nan)
        return WorkerModel(np.zeros((0, k)), empty, empty.copy())
    data = pd.DataFrame({"task": c, "worker": r, "label": labels})
    has_gold = np.flatnonzero(gold_code >= 0)
    true_labels = pd.Series(gold_code[has_gold], index=has_gold) if len(has_gold) else None
    with warnings.catch_warnings():  # crowd-kit 1.4.2 uses pandas idioms that pandas 3 deprecates
        warnings.simplefilter("ignore", (DeprecationWarning, FutureWarning))
        model = DawidSkene(n_iter=DS_ITERATIONS, tol=DS_TOLERANCE).fit(data, true_labels=true_labels)
    # errors_: (worker, given label) × true label -> P(given | true). A label a rater never gave stays at the floor;
    # so does one they never gave for some truth, so that a single such answer cannot rule that truth out.
    errors = np.full((n_raters, k, k), CONFUSION_FLOOR)
    table = model.errors_.reindex(columns=range(k), fill_value=1.0)
    workers, given = (table.index.get_level_values(i).to_numpy(dtype=np.int64) for i in (0, 1))
    errors[workers, given] = np.maximum(table.to_numpy(), CONFUSION_FLOOR)
    log_prior = np.log(np.maximum(model.priors_.reindex(range(k), fill_value=0.0).to_numpy(dtype=float), 1e-12))
    # Leave-one-out: each item's log posterior from the prior and everyone's answers, less this rater's own
    # answer, so that a rater is never checked against their own vote; gold items are their gold answer.
    own = np.log(errors[r, labels])
    log_posterior = np.tile(log_prior, (n_comparisons, 1))
    np.add.at(log_posterior, c, own)
    reference = log_posterior[c] - own
    reference = np.exp(reference - reference.max(axis=1, keepdims=True))
    reference /= reference.sum(axis=1, keepdims=True)
    gold_rows = gold_code[c] >= 0
    reference[gold_rows] = np.eye(k)[gold_code[c][gold_rows]]

    n = np.bincount(r, minlength=n_raters).astype(float)
    given_share = np.zeros((n_raters, k))
    np.add.at(given_share, (r, labels), 1.0)
    truth_share = np.zeros((n_raters, k))
    np.add.at(truth_share, r, reference)
    with np.errstate(invalid="ignore", divide="ignore"):
        given_share /= n[:, None]
        truth_share /= n[:, None]
        matched = np.bincount(r, weights=reference[np.arange(len(r)), labels], minlength=n_raters) / n
        chance = (given_share * truth_share).sum(axis=1)
        kappa = (matched - chance) / (1 - chance)
        # The chance test (module docstring): H1 answers from the rater's own answer shares whatever the item;
        # H0 knows the truth with probability CAREFUL_KAPPA and otherwise guesses from `guess`, chosen so that
        # both hypotheses give the rater's answer shares.
        guess = np.maximum(given_share - CAREFUL_KAPPA * truth_share, 0) + GUESS_SMOOTHING * given_share
        guess /= guess.sum(axis=1, keepdims=True)
        h1 = given_share[r, labels]
        h0 = CAREFUL_KAPPA * reference[np.arange(len(r)), labels] + (1 - CAREFUL_KAPPA) * guess[r, labels]
        chance_log_lr = np.bincount(r, weights=np.log(h1 / h0), minlength=n_raters)
    chance_log_lr[n == 0] = np.nan
    return WorkerModel(reference=reference, reliability=np.clip(kappa, 0.0, 1.0), chance_log_lr=chance_log_lr)


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
        chance_evidence=_number(cols["chance_log_lr"][i] / np.log(10)),
        vote_weight=_vote_weight(_number(cols["reliability"][i])),
    )


def _vote_weight(reliability: float | None) -> float:
    return reliability if reliability is not None and reliability >= RELIABILITY_FLOOR else 0.0


def _number(x) -> float | None:
    return None if x is None or np.isnan(x) else float(x)


def _with_flags(qualities: list[RaterQuality], settings: QualitySettings) -> list[RaterQuality]:
    flags: dict[str, list[Flag]] = {q.rater: [] for q in qualities}

    def tested(figure: str, minimum: int) -> tuple[list[RaterQuality], list[float]]:
        family = [q for q in qualities if getattr(q, figure) is not None and getattr(q, figure).n >= minimum]
        return family, bh_adjust([getattr(q, figure).p_value for q in family])

    family = [q for q in qualities if q.chance_evidence is not None and q.comparisons >= MIN_REFERENCE_CHECKS]
    threshold = np.log10(len(family) / CHANCE_FWER) if family else np.inf
    for q in family:
        if q.chance_evidence >= threshold:
            m = q.reference_match
            careful = CAREFUL_KAPPA + (1 - CAREFUL_KAPPA) * q.chance_match
            flags[q.rater].append(
                Flag(
                    "chance",
                    f"Answers look like chance: over {_n(q.comparisons, 'comparison')} they are "
                    f"{_odds(q.chance_evidence)} to 1 more likely from a rater answering whatever the item than "
                    f"from a careful one; {_odds(threshold)} to 1 flags ({_n(len(family), 'rater')} tested, "
                    f"{CHANCE_FWER:.0%} / {len(family)} each). They match the other raters' and gold answers in "
                    f"{_count(m)} ({_share(m)}), where chance gives {q.chance_match:.0%} and a careful rater "
                    f"at least {careful:.0%}." + _gold(q),
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
    return [replace(q, flags=flags[q.rater]) for q in qualities]


def _count(m: Interval) -> str:
    return f"{round(m.value * m.n)} of {m.n}"


def _share(m: Interval) -> str:
    return f"{m.value:.0%} (95% CI {m.low * 100:.0f}–{m.high * 100:.0f}%)"


def _gold(q: RaterQuality) -> str:
    g = q.gold_accuracy
    return f" Gold accuracy {_share(g)[:-1]}, {_n(g.n, 'decisive gold answer')})." if g else ""


def _odds(log10_ratio: float) -> str:
    return f"{10**log10_ratio:,.0f}" if log10_ratio < 6 else f"10^{log10_ratio:.0f}"


def _n(count: int, one: str, many: str | None = None) -> str:
    return f"{count} {one if count == 1 else many or one + 's'}"


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
    # One integer per pattern (its counts as digits): np.unique on integers is far faster than on rows.
    base = int(pairable.max()) + 1
    _, first, counts = np.unique(pairable @ base ** np.arange(votes.shape[1]), return_index=True, return_counts=True)
    return pairable[first], counts


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
    rater's MACE reliability as it is (0 for a rater without one): the share of their answers that reflect the
    item, which in the simulation is 0.00–0.06 (median) for random, always-left, adversarial and speeding
    raters and 0.65 for careful ones, so no further mapping is needed for guessers to weigh about nothing.
    """
    if mode == "equal":
        return {q.rater: 1.0 for q in report.raters}
    if mode == "exclude_flagged":
        return {q.rater: 0.0 if q.flags else 1.0 for q in report.raters}
    if mode == "reliability":
        return {q.rater: q.vote_weight for q in report.raters}
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
