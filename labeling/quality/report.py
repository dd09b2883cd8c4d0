"""Rater quality and project agreement: judgment records in, a report out. No Django, no database.

One job, the quality report, in ~750 lines of which a third is this docstring: every figure and flag reads the
same per-judgment arrays (the vote counts, the worker model's leave-one-out reference), so splitting them would
pass those arrays between modules for no gain. stats.py holds the primitives.

Input. `build_report(records, gold, settings)` takes judgment records (mappings or a pandas DataFrame) with:
  id (int), rater (str), comparison (int), outcome ("a", "b", "tie", "both_bad"), left ("a"/"b": which response
  was shown on the left), time_ms (int), criteria (optional dict name -> "a"/"b"/"tie"), is_repeat_of
  (optional: id of the same rater's first judgment of this comparison, shown again with sides swapped) and
  created_at (optional, any orderable value: only passed through to the over-time windows);
plus gold answers (comparison -> "a"/"b", comparisons whose decisive answer is known) and QualitySettings.

Votes. Only first judgments are votes: agreement, the worker model, the reference checks, Krippendorff's alpha
and `comparison_labels` never see a repeat. Repeats serve self-consistency only. Behaviour figures (time,
too-fast share, tie / both-bad rates, position bias) use every judgment, since each one is a separate act of
clicking. Outcomes are compared in A/B terms, which do not depend on the side shown.

Worker model. Dawid–Skene (crowd-kit's `DawidSkene`: a full confusion matrix P(answer | truth) per rater,
fitted by EM over first judgments and the four outcomes) with the gold answers clamped as known truths
(`true_labels`), so gold anchors every rater's matrix and the labels cannot swap. Dawid–Skene rather than MACE
because it can be anchored by gold and it learns an adversary's flipped matrix, so an adversary's answers
still inform the truth of the items they judged. From the fit, each first judgment gets a *leave-one-out
reference*: the posterior of the item's truth given the prior and every OTHER rater's answer (the item's log
posterior less the rater's own log likelihood term; confusion entries floored at CONFUSION_FLOOR), or the
gold answer on gold items. A rater is never checked against their own vote.

Per rater (`RaterQuality`), each proportion with its 95% Wilson interval:
- gold_accuracy: correct / decisive answers on gold comparisons (a tie or both-bad on a gold item is left
  out here and shows in tie_rate), with the one-sided binomial p-value against chance (0.5).
- agreement: how often the rater's outcome equals the leave-one-out majority of the OTHER raters of the
  comparison, over the comparisons where those others have a strict majority (more than half of their votes
  on one outcome). Outcomes are four nominal categories: a tie agrees only with a tie majority.
- reference_match: matches with the most probable leave-one-out reference (the gold answer on gold items)
  over all first judgments, gold_checks of them gold; chance_match is the match rate of a rater answering
  independently of the item (Σ over outcomes of the rater's share times the reference's share, as in Cohen's
  kappa), and the p-value is the one-sided binomial test against it (descriptive; flags use the test below).
- reliability: MACE's competence (Hovy et al. 2013), the probability that an answer comes from knowing the
  item rather than from the rater's own guessing distribution, estimated by the method of moments against the
  soft leave-one-out reference r: if a rater answers the truth with probability κ and otherwise guesses, the
  expected soft match Σ r(answer) exceeds its chance value by κ times what the reference can tell
  (mean Σ_y r(y)² − Σ_y r̄(y)²), so κ = (soft match − chance) / that. Dividing by what the reference can tell
  undoes the dilution a noisy reference causes (against others' answers alone a 75%-accurate rater's kappa is
  about 0.2 at overlap 3; its competence is 0.475). 0 for any rater who answers whatever the item (random,
  always-left, always-"a"), negative for an adversary; clipped to [0, 1].
- reliability_se: its standard error (delta method: the spread of the rater's soft matches over √n, divided by
  what the reference can tell).
- vote_weight: the "reliability" weighting. 0 with any flag, below RELIABILITY_FLOOR, or when the reliability
  is not above 0 at one-sided 95% (reliability − 1.645·se ≤ 0: a guesser's lucky estimate); the other raters'
  reliabilities shrunk toward their mean by how much of their spread is estimation noise (empirical Bayes,
  `_shrunk_weights`), so that equally good raters weigh alike instead of by noise.
  For a one-coin binary rater of competence κ the optimal weighted-majority weight (Nitzan & Paroush 1982) is
  log((1 + κ) / (1 − κ)) ≈ 2κ (within 10% up to κ = 0.5), so weights proportional to κ are near-optimal, and
  a weight of 0 for raters whose κ cannot be told from 0 keeps their votes from breaking careful raters' ties;
  unshrunk, noise in the careful raters' κ would break their 1–1 splits at random instead of leaving them
  undecided.
- chance_evidence: log10 of the chance test's likelihood ratio (below).
- position_bias: share of decisive answers (a/b) that went to the side shown on the left, with the two-sided
  binomial p-value against 0.5.
- tie_rate, both_bad_rate, too_fast_share (time_ms < settings.min_time_ms), self_consistency (repeats whose
  outcome equals the first judgment's).

Flags. Every flag is Wald's sequential probability ratio test: the likelihood ratio of "bad" against the
null "fine", a nonnegative martingale with mean 1 while the null holds (a supermartingale across the composite
nulls below), flagged once it reaches 20·m to 1, m the raters in the report. By Ville's inequality a rater
for whom the null holds ever reaches 1/a with probability at most a, however many times the report is
recomputed; with a = 5% / m (Bonferroni) the chance that ANY rater for whom the null holds is EVER flagged,
of one kind, is at most FWER = 5%. (The fixed-sample binomial tests with Benjamini–Hochberg used before flagged
7 of 8 careful raters in the benchmark, which recomputes the report 30 times.) The tests:
- chance, "answers look like chance": per first judgment, H0 (careful): the rater knows the truth with
  probability CAREFUL_KAPPA = 0.4 and otherwise guesses, so P(answer) = 0.4·r(answer) + 0.6·guess(answer) with
  r the leave-one-out reference; the alternative is the mean of "by chance", P(answer) = the rater's own
  answer share whatever the item, and "against the item", 2·share − P_H0 (H0 mirrored), mixed 4:1
  (AGAINST_WEIGHT = 0.2: a mixture of likelihood ratios is one too, and an adversary's evidence grows so fast
  that the small share costs them a judgment or two, while an even mixture cost a guesser a factor of 2); all
  three give the rater's answer shares. The likelihood ratio only moves where the reference knows something,
  so gold answers count fully and a comparison whose other raters disagree counts for little. Careful raters
  have competence 0.475 (benchmark: 75% right on decisive answers, 5% ties) to 0.67 (simulation), inside H0.
  The test starts at MIN_REFERENCE_CHECKS = 20 first judgments, before which the fit's plug-in shares are
  too rough.
- position_bias: H0 left share within 50% ± POSITION_BIAS_MIN_EFFECT (a 52% left share over 5,000 answers is
  real but harmless) against one side 90% of the time, either side (the mean of the two ratios).
- self_inconsistency: H0 repeats the first answer at least 50% of the time, against 25% (unrelated).
- speed: H0 at most 10% of judgments too fast, against 50%.

What 50 judgments can tell. A random clicker who picks a side at random differs from a careful rater (75% right
on decisive answers) only in how often they are right, and a project sees the truth only on gold (5%); for the
rest it has two other raters per comparison (overlap 3). The most powerful test there is at the 50th judgment
(Neyman–Pearson, knowing the careful raters' accuracy exactly and taking every other rater to be careful), at a
per-rater error rate of 5% / 12, flags such a clicker 41% of the time; knowing the truth of every comparison,
87%; with four other raters (overlap 5), 62% (benchmarks/rater_quality.py, `random_clicker_bound`). Any
sequential test that ever flags a careful rater at most that often does no better by judgment 50 ("flagged by
then" is itself such a test). So no flag with this error control can catch every random clicker within 50
judgments; in the benchmark's four projects this one caught the random clicker after 20, 110 and 135 of their
judgments, and not within 156 in the fourth. The other bad behaviours are caught within 35 (their evidence is
strong per answer).

Tuning. tests/labeling/quality/simulation.py simulates same-pace projects (`python -m
tests.labeling.quality.simulation 100` prints the figures below): 8 careful raters, 75% accurate (errors
spread over the other three outcomes, drawn afresh on a repeat), a random clicker (uniform over the four
outcomes), an always-left rater, an adversary (swaps a and b, random side on ties) and a speeder (random,
about 1.2 s), all with 150 judgments; overlap 3, 5% gold, 5% repeats. Share of raters flagged, 100 projects a line:

                                     careful        random  always-left  adversary  speeder
    as above                         0 of 800        92%       100%        100%       100%
    everyone at 50 judgments         0               60%       100%        100%       100%
    careful raters 65% accurate      0               94%       100%        100%       100%
    random clicker on a/b only       0              100%       100%        100%       100%
    65% accurate, everyone at 50     0.7% (6% of     36%       100%        100%       100%
                                     projects)
    bad raters at 30 judgments       0               31%       100%        100%       100%
    overlap 2                        0               90%       100%        100%       100%

A careful rater's competence is 0.67 here (0.53 at 65% accuracy), inside the chance test's null; the one
line with false flags sits at the boundary the test is built for (6% of projects at FWER 5%): 65%-accurate
raters with 50 judgments each are hard to tell from guessers. Always-left and speeding raters are also
caught by the chance test, as they answer whatever the item.

Project level (`ProjectQuality`): Krippendorff's alpha (nominal, on outcome; krippendorff package) with a
percentile bootstrap interval over comparisons, alpha per criterion likewise, pairwise agreement (share of
agreeing rater pairs on the same comparison) with a bootstrap interval over comparisons rather than a Wilson
interval over pairs, since the three pairs of one comparison are not independent, and `over_time`: the same
two figures in consecutive windows. Windows split the first judgments, in id order, into up to `windows`
equal blocks of at least MIN_WINDOW_JUDGMENTS; a comparison belongs to the window of its first judgment, so
its votes are never split.

Performance: `build_report` on 1,000,000 judgments (300 raters, 317,000 comparisons, overlap 3, 5% repeats,
two criteria, n_bootstrap=1000, given as a DataFrame; `simulation.large_frame`) took 11 s on 2 cores, 1 GB of
memory; about half of it is Dawid–Skene (crowd-kit on pandas frames, converged in 25 of at most DS_ITERATIONS
EM iterations), 2 s the per-rater Wilson intervals (scipy's binomtest, ~6 ms a rater). A list of 1,000,000
dicts costs 1.5 s more to become a frame. The bootstraps collapse comparisons into their distinct vote
patterns, so 1,000 resamples of alpha cost milliseconds (see stats.bootstrap_interval).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import pandas as pd
from crowdkit.aggregation import DawidSkene

from labeling.quality.stats import (
    FWER,
    Interval,
    binomial_log10_lr,
    binomial_p,
    bootstrap_interval,
    nominal_alpha,
    pattern_alpha,
    pattern_pairwise_agreement,
    sequential_threshold,
    wilson,
)

OUTCOMES = ("a", "b", "tie", "both_bad")
# Every kind of flag the report gives (the API's choices and the page's titles are these).
FLAG_KINDS = ("chance", "position_bias", "self_inconsistency", "speed")
CRITERION_OUTCOMES = ("a", "b", "tie")
A, B, TIE, BOTH_BAD = range(4)

# Thresholds (the module docstring has the simulation behind them).
CAREFUL_KAPPA = 0.4  # the chance test's "careful" hypothesis: kappa with the truth of at least this
MIN_REFERENCE_CHECKS = 20  # first judgments before the chance test runs (its plug-in shares and fit need a few)
GUESS_SMOOTHING = 0.1  # share of the rater's own answer shares kept in the careful hypothesis' guesses
POSITION_BIAS_MIN_EFFECT = 0.10  # null: a left share within 40–60% (harmless however sure we are of it)
POSITION_BIAS_ALTERNATIVE = 0.9  # alternative: one side 90% of the time
SELF_CONSISTENCY_EXPECTED = 0.5  # null: repeating one's own first answer at least this often
SELF_CONSISTENCY_ALTERNATIVE = 0.25  # alternative: a repeat unrelated to the first answer (one of four)
TOO_FAST_TOLERANCE = 0.10  # null: anyone may answer an easy pair fast, up to this share of judgments
TOO_FAST_ALTERNATIVE = 0.5  # alternative: half of the judgments too fast
RELIABILITY_FLOOR = 0.2  # a reliability below this weighs 0 in the "reliability" weighting
RELIABILITY_Z = 1.645  # ... and one whose reliability is not above 0 at one-sided 95% also weighs 0
AGAINST_WEIGHT = 0.2  # share of the chance test's alternative that is "against the item" (the rest: "by chance")
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
    kind: str  # one of FLAG_KINDS
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
    reliability_se: float | None = None  # standard error of the reliability estimate
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
    cols["reliability_se"] = worker.reliability_se
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
    reliability: np.ndarray  # per rater: MACE-style competence against that truth, clipped to [0, 1]
    reliability_se: np.ndarray  # per rater: its standard error (delta method over the rater's soft matches)
    chance_log_lr: np.ndarray  # per rater: log likelihood ratio, answering by chance : answering like CAREFUL_KAPPA


def _worker_model(
    r: np.ndarray, c: np.ndarray, labels: np.ndarray, gold_code: np.ndarray, n_raters: int
) -> WorkerModel:
    """Dawid–Skene (crowd-kit) over first judgments with gold answers clamped, then per rater the
    leave-one-out truth of each of their items, their kappa with it and the chance test's likelihood ratio."""
    n_comparisons, k = len(gold_code), len(OUTCOMES)
    if len(r) == 0:
        empty = np.full(n_raters, np.nan)
        return WorkerModel(np.zeros((0, k)), empty, empty.copy(), empty.copy())
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
    rows = np.arange(len(r))
    given_share = np.zeros((n_raters, k))
    np.add.at(given_share, (r, labels), 1.0)
    truth_share = np.zeros((n_raters, k))
    np.add.at(truth_share, r, reference)
    with np.errstate(invalid="ignore", divide="ignore"):
        given_share /= n[:, None]
        truth_share /= n[:, None]
        matched = np.bincount(r, weights=reference[rows, labels], minlength=n_raters) / n
        chance = (given_share * truth_share).sum(axis=1)
        # What a rater who always knew the truth would score against this reference, less chance: how much the
        # reference can tell (method of moments for MACE's competence; see the module docstring).
        informative = np.bincount(r, weights=(reference**2).sum(axis=1), minlength=n_raters) / n
        informative -= (truth_share**2).sum(axis=1)
        competence = (matched - chance) / informative
        # Its standard error: the soft matches' spread over sqrt(n), scaled like the estimate (chance and what
        # the reference can tell are taken as known; they vary far less than the match itself).
        soft = reference[rows, labels]
        spread = np.bincount(r, weights=soft**2, minlength=n_raters) / n - matched**2
        competence_se = np.sqrt(np.maximum(spread, 0) / np.maximum(n - 1, 1)) / informative
        # The chance test (module docstring): H0 knows the truth with probability CAREFUL_KAPPA and otherwise
        # guesses from `guess`; the alternatives answer from the rater's own answer shares whatever the item
        # (chance), or mirror H0 (against the item). All three give the rater's answer shares.
        guess = np.maximum(given_share - CAREFUL_KAPPA * truth_share, 0) + GUESS_SMOOTHING * given_share
        guess /= guess.sum(axis=1, keepdims=True)
        careful = CAREFUL_KAPPA * reference[rows, labels] + (1 - CAREFUL_KAPPA) * guess[r, labels]
        by_chance = given_share[r, labels]
        against = np.maximum(2 * by_chance - careful, GUESS_SMOOTHING * by_chance)
        log_chance = np.bincount(r, weights=np.log(by_chance / careful), minlength=n_raters)
        log_against = np.bincount(r, weights=np.log(against / careful), minlength=n_raters)
    # A mixture of the two alternatives' likelihood ratios is still one with mean one under H0. "By chance" weighs
    # AGAINST_WEIGHT's complement: an adversary's evidence grows several times faster than a guesser's, so a
    # small weight costs them a few judgments, while an even split would cost every guesser log 2.
    chance_log_lr = np.logaddexp(np.log1p(-AGAINST_WEIGHT) + log_chance, np.log(AGAINST_WEIGHT) + log_against)
    chance_log_lr[n == 0] = np.nan
    competence[~np.isfinite(competence)] = np.nan
    competence_se[~np.isfinite(competence_se)] = np.nan
    return WorkerModel(
        reference=reference,
        reliability=np.clip(competence, 0.0, 1.0),
        reliability_se=competence_se,
        chance_log_lr=chance_log_lr,
    )


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
        reliability_se=_number(cols["reliability_se"][i]),
        chance_evidence=_number(cols["chance_log_lr"][i] / np.log(10)),
        vote_weight=_vote_weight(_number(cols["reliability"][i]), _number(cols["reliability_se"][i])),
    )


def _vote_weight(reliability: float | None, se: float | None) -> float:
    """The reliability once it is at least RELIABILITY_FLOOR and shown above chance (its one-sided 95% lower
    bound, reliability - RELIABILITY_Z·se, above 0), else 0."""
    if reliability is None or reliability < RELIABILITY_FLOOR:
        return 0.0
    return reliability if se is None or reliability - RELIABILITY_Z * se > 0 else 0.0


def _number(x) -> float | None:
    return None if x is None or np.isnan(x) else float(x)


def _with_flags(qualities: list[RaterQuality], settings: QualitySettings) -> list[RaterQuality]:
    flags: dict[str, list[Flag]] = {q.rater: [] for q in qualities}
    # One Bonferroni family per kind of flag: every rater in the report, whether or not they have evidence yet.
    threshold = sequential_threshold(len(qualities))
    odds = f"{_odds(threshold)} to 1 flags: {FWER:.0%} / {_n(len(qualities), 'rater')}"

    for q in qualities:
        if q.chance_evidence is not None and q.comparisons >= MIN_REFERENCE_CHECKS and q.chance_evidence >= threshold:
            m = q.reference_match
            careful = CAREFUL_KAPPA + (1 - CAREFUL_KAPPA) * q.chance_match
            flags[q.rater].append(
                Flag(
                    "chance",
                    f"Answers look like chance: their {_n(q.comparisons, 'first judgment')} are "
                    f"{_odds(q.chance_evidence)} to 1 more likely from a rater answering whatever the item (or "
                    f"against it) than from a careful one ({odds}). They match the other raters' and gold answers "
                    f"in {_count(m)}, {_share(m)}, where chance gives {q.chance_match:.0%} and a careful rater at "
                    f"least {careful:.0%}." + _gold(q),
                )
            )
        if (m := q.position_bias) is not None:
            k, n = round(m.value * m.n), m.n
            low, high = 0.5 - POSITION_BIAS_MIN_EFFECT, 0.5 + POSITION_BIAS_MIN_EFFECT
            # Either side: the mean of the two one-sided likelihood ratios.
            evidence = np.logaddexp(
                binomial_log10_lr(k, n, high, POSITION_BIAS_ALTERNATIVE) * np.log(10),
                binomial_log10_lr(k, n, low, 1 - POSITION_BIAS_ALTERNATIVE) * np.log(10),
            ) / np.log(10) - np.log10(2)
            if evidence >= threshold:
                flags[q.rater].append(
                    Flag(
                        "position_bias",
                        f"Chose the response shown on the left in {_count(m)} decisive answers, {_share(m)}: "
                        f"{_odds(evidence)} to 1 more likely from a rater choosing one side "
                        f"{POSITION_BIAS_ALTERNATIVE:.0%} of the time than from one within {low:.0%}–{high:.0%} "
                        f"({odds}).",
                    )
                )
        if (m := q.self_consistency) is not None:
            evidence = binomial_log10_lr(
                round(m.value * m.n), m.n, SELF_CONSISTENCY_EXPECTED, SELF_CONSISTENCY_ALTERNATIVE
            )
            if evidence >= threshold:
                flags[q.rater].append(
                    Flag(
                        "self_inconsistency",
                        f"Gave the same answer to a repeated comparison (sides swapped) in {_count(m)} repeats, "
                        f"{_share(m)}: {_odds(evidence)} to 1 more likely at {SELF_CONSISTENCY_ALTERNATIVE:.0%} "
                        f"(answers unrelated to the first) than at the {SELF_CONSISTENCY_EXPECTED:.0%} expected "
                        f"at least ({odds}).",
                    )
                )
        if (m := q.too_fast_share) is not None:
            evidence = binomial_log10_lr(round(m.value * m.n), m.n, TOO_FAST_TOLERANCE, TOO_FAST_ALTERNATIVE)
            if evidence >= threshold:
                flags[q.rater].append(
                    Flag(
                        "speed",
                        f"Answered in under {settings.min_time_ms / 1000:g} s in {_count(m)} judgments, "
                        f"{_share(m)}: {_odds(evidence)} to 1 more likely from a rater answering "
                        f"{TOO_FAST_ALTERNATIVE:.0%} of the time too fast than from one within the "
                        f"{TOO_FAST_TOLERANCE:.0%} tolerated ({odds}).",
                    )
                )
    flagged = [
        replace(q, flags=flags[q.rater], vote_weight=0.0 if flags[q.rater] else q.vote_weight) for q in qualities
    ]
    return _shrunk_weights(flagged)


def _shrunk_weights(qualities: list[RaterQuality]) -> list[RaterQuality]:
    """The kept raters' vote weights (those above 0) shrunk toward their mean by how much of their spread is
    estimation noise (empirical Bayes, method of moments): each weight becomes mean + λ·(reliability − mean),
    λ = τ² / (τ² + se²) with τ² = the variance of the kept reliabilities less their mean squared standard error.
    Raters as good as each other then weigh alike instead of by noise (which would break their ties at random:
    a 1–1 split of two careful raters becomes a coin flip rather than undecided), while real differences,
    larger than the noise, stay."""
    kept = [q for q in qualities if q.vote_weight > 0 and q.reliability_se is not None]
    if len(kept) < 2:
        return qualities
    values = np.array([q.vote_weight for q in kept])
    noise = np.array([q.reliability_se for q in kept]) ** 2
    mean = values.mean()
    tau2 = max(float(values.var(ddof=1) - noise.mean()), 0.0)
    shrunk = {
        q.rater: float(mean + tau2 / (tau2 + e) * (v - mean)) if tau2 + e > 0 else float(v)
        for q, v, e in zip(kept, values, noise, strict=True)
    }
    return [replace(q, vote_weight=shrunk[q.rater]) if q.rater in shrunk else q for q in qualities]


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
    rater's vote_weight, their reliability (MACE-style competence, about proportional to the optimal
    weighted-majority weight) with 0 below RELIABILITY_FLOOR or with a flag, so that guessers neither sway a
    comparison nor break careful raters' ties (a comparison only guessers judged stays undecided).
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
