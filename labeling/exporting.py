"""Rows -> JSONL, streamed: constant memory however many judgments there are.

Only first judgments are votes: a repeat (Judgment.repeat_of set, the same
rater's second look for self-consistency) never counts in a majority or a
margin. Judgments of raters an admin excluded (RaterStanding.excluded) leave
both formats; lifting the exclusion brings them back.

Two formats, one JSON object per line:

trl  One line per comparison with a decisive majority, in TRL's conversational
     preference format:
       {"prompt": [turns], "chosen": [{"role": "assistant", "content": ...}],
        "rejected": [...], "margin": float, "comparison_id": int}
     Each judgment counts with its rater's weight w, from the project's
     judgment_weighting (labeling.quality.weights: equal gives every rater 1,
     reliability their reliability, exclude_flagged 0 to flagged raters;
     excluded raters always 0), the same weights the reward model trains with.
     Let W be the weights of all the comparison's judgments (ties and both-bad
     included), and give each judgment a signed strength towards A: +strength
     (1-3) for "a", -strength for "b", 0 for a tie or both-bad.
     - The comparison is *decisive* for A when judgments preferring A weigh more
       than half of W (a tie or a both-bad vote counts against a majority, it
       does not abstain) and the weighted signed strengths sum above zero; the
       same for B. The second rule drops the rare pair where the outvoted raters
       felt far more strongly (two "slightly A" against one "much B"): the raters
       do not agree which is better, so the pair teaches a reward model nothing
       reliable.
     - margin = the weighted mean signed strength towards the chosen response
       over all its judgments (the weighted sum over W). Decisive pairs
       therefore always have 0 < margin <= 3: three "much better" votes give
       3.0; "clearly A", "slightly A", "tie" give 1.0 with equal weights. It is
       in strength units; a trainer scales it to its reward units (TRL's
       RewardTrainer subtracts it inside the Bradley-Terry loss, as Llama 2 did).
     With equal weights every w is 1: counts of votes, as before weighting existed.
     Excluded comparisons are counted by reason, exactly one each:
       no_judgments  none yet, or none that weighs anything (every rater
                     excluded or at weight 0);
       split         judgments of weight above 0 preferred different responses
                     and neither side wins both the vote and the strengths;
       both_bad      no majority, nobody dissented on direction, and "both are
                     bad" votes weigh at least as much as tie votes;
       ties          the rest: no majority because of tie votes.
     Imported reference labels (e.g. HH-RLHF) and gold answers are not
     judgments and are not used.
     The result names the weighting (ExportResult.weighting; summary() adds it
     whenever it is not equal weights with nobody excluded).

raw  One line per judgment, every field, for analysis:
       {"judgment_id", "comparison_id", "prompt_id", "response_a_id", "response_b_id",
        "rater", "outcome", "strength", "criteria", "rationale", "flags",
        "time_spent_ms", "left", "created_at"}
     and, on a repeat's line only, "repeat_of": the judgment_id of the same
     rater's first judgment of that comparison (a repeat is shown with the sides
     swapped; it is not a vote: drop lines with "repeat_of" to count votes).
     Raw lines carry no weights: every judgment is there but the excluded
     raters'.
     "rater" is a pseudonym: HMAC-SHA256 of the user id, keyed by SECRET_KEY,
     truncated to 16 hex digits. It is stable across exports (so agreement per
     rater can be studied) but cannot be turned back into a user without the key;
     rotating SECRET_KEY changes every pseudonym. No username or email is written.
"""

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import groupby
from operator import itemgetter
from typing import NamedTuple, TextIO

from django.utils.crypto import salted_hmac

from labeling.models import Comparison, Judgment, Project
from labeling.quality.weights import RaterWeights, judgment_weights

FORMATS = ("trl", "raw")
_CHUNK_SIZE = 2000  # rows per database round trip while streaming
_TEXTS_CHUNK = 900  # comparison ids per IN (...): under SQLite's historical 999-parameter limit
_PSEUDONYM_SALT = "labeling.exporting.rater"


@dataclass
class ExportResult:
    format: str
    written: int = 0
    # trl only: comparisons left out, by reason (see the module docstring)
    ties: int = 0
    both_bad: int = 0
    split: int = 0
    no_judgments: int = 0
    weighting: str = "equal"  # RaterWeights.summary() of the weights used, e.g. "reliability (raters: ...)"
    excluded_raters: int = 0  # raters whose judgments were left out by an admin's exclusion

    def summary(self) -> str:
        if self.format == "raw":
            text = f"Wrote {self.written} judgments (raw)."
            if self.excluded_raters:
                text += f" Left out the judgments of {self.excluded_raters} excluded raters."
            return text
        text = (
            f"Wrote {self.written} comparisons (trl); excluded {self.ties} ties, {self.both_bad} both-bad, "
            f"{self.split} split, {self.no_judgments} without judgments."
        )
        # Equal weights with nobody excluded is today's export: the text stays as it always was.
        return text if self.weighting == "equal" else f"{text} Weighting: {self.weighting}."


def export_preferences(
    *, project: Project, format: str, out: TextIO, weights: RaterWeights | None = None
) -> ExportResult:
    """Write the project's preferences to `out` as JSONL; return what was written and left out.
    weights: None reads the project's (labeling.quality.weights.judgment_weights)."""
    result = ExportResult(format=format)
    for line in _lines(project=project, format=format, result=result, weights=weights):
        out.write(line)
    return result


def stream_preferences(
    *, project: Project, format: str, chunk_chars: int = 64 * 1024, weights: RaterWeights | None = None
) -> Iterator[str]:
    """The same lines as export_preferences, joined into chunks for a streaming HTTP response.
    Pass the weights to know, before the first chunk, which weighting the lines use."""
    buffer, size = [], 0
    for line in _lines(project=project, format=format, result=ExportResult(format=format), weights=weights):
        buffer.append(line)
        size += len(line)
        if size >= chunk_chars:
            yield "".join(buffer)
            buffer, size = [], 0
    if buffer:
        yield "".join(buffer)


def rater_pseudonym(user_id: int) -> str:
    return salted_hmac(_PSEUDONYM_SALT, str(user_id), algorithm="sha256").hexdigest()[:16]


def _lines(*, project: Project, format: str, result: ExportResult, weights: RaterWeights | None) -> Iterator[str]:
    if format not in FORMATS:
        raise ValueError(f"Unknown export format {format!r}; expected one of {', '.join(FORMATS)}.")
    weights = judgment_weights(project=project) if weights is None else weights
    result.weighting = weights.summary()
    result.excluded_raters = len(weights.excluded)
    if format == "trl":
        yield from _trl_lines(project, weights, result)
    else:
        yield from _raw_lines(project, weights, result)


class _Votes(NamedTuple):
    """The weighted votes of one comparison: sums of its judgments' weights (and weighted strengths)."""

    n: float
    a: float
    b: float
    ties: float
    both_bad: float
    strength_a: float
    strength_b: float


def _trl_lines(project: Project, weights: RaterWeights, result: ExportResult) -> Iterator[str]:
    # Two streams in comparison order, merged here: the project's comparisons, and its judgments, of which
    # only first judgments are votes. (One LEFT JOIN of comparisons with first judgments reads the same
    # rows, but SQLite, which keeps no statistics, walked its index of repeat_of_id IS NULL, every first
    # judgment of every project, once per comparison: 50 s for 20,000 judgments. Repeats, a few percent,
    # are dropped here instead, which leaves the database the project's own index.) Weights are per
    # rater, so the votes are summed here rather than in a GROUP BY, in judgment order, which makes the
    # sums (and margins) the same on every export. Texts are read afterwards, a chunk of decisive
    # comparisons at a time.
    comparison_ids = Comparison.objects.filter(project=project).order_by("pk").values_list("pk", flat=True)
    votes = (
        Judgment.objects.filter(project=project)
        .order_by("comparison_id")
        .values_list("comparison_id", "pk", "rater_id", "outcome", "strength", "repeat_of_id")
    )
    first_judgments = (row[:5] for row in votes.iterator(chunk_size=_CHUNK_SIZE) if row[5] is None)
    judged = groupby(first_judgments, key=itemgetter(0))
    next_judged = next(judged, None)
    decisive = []
    for comparison_id in comparison_ids.iterator(chunk_size=_CHUNK_SIZE):
        # Both streams are in comparison order; a judgment whose comparison is not the project's is none of
        # its votes (Judgment.project is a copy of its comparison's).
        while next_judged is not None and next_judged[0] < comparison_id:
            next_judged = next(judged, None)
        if next_judged is None or next_judged[0] != comparison_id:
            result.no_judgments += 1
            continue
        v = _tally(sorted(row[1:] for row in next_judged[1]), weights)
        next_judged = next(judged, None)
        if v.n == 0:
            result.no_judgments += 1
            continue
        winner = _decisive_side(v)
        if winner is None:
            reason = _exclusion_reason(v)
            setattr(result, reason, getattr(result, reason) + 1)
            continue
        signed = v.strength_a - v.strength_b if winner == "a" else v.strength_b - v.strength_a
        decisive.append((comparison_id, winner, round(signed / v.n, 6)))
        if len(decisive) == _TEXTS_CHUNK:
            yield from _trl_chunk(decisive, result)
            decisive = []
    yield from _trl_chunk(decisive, result)


def _tally(judgments: Iterable[tuple], weights: RaterWeights) -> _Votes:
    n = a = b = ties = both_bad = strength_a = strength_b = 0.0
    for _, rater_id, outcome, strength in judgments:  # (judgment id, rater, outcome, strength), in id order
        w = weights.of(rater_id)
        n += w
        if outcome == Judgment.Outcome.A:
            a += w
            strength_a += w * strength
        elif outcome == Judgment.Outcome.B:
            b += w
            strength_b += w * strength
        elif outcome == Judgment.Outcome.TIE:
            ties += w
        else:
            both_bad += w
    return _Votes(n, a, b, ties, both_bad, strength_a, strength_b)


def _trl_chunk(decisive: list[tuple[int, str, float]], result: ExportResult) -> Iterator[str]:
    texts = {
        pk: (conversation, text_a, text_b)
        for pk, conversation, text_a, text_b in Comparison.objects.filter(pk__in=[d[0] for d in decisive]).values_list(
            "pk", "prompt__conversation", "response_a__text", "response_b__text"
        )
    }
    for comparison_id, winner, margin in decisive:
        conversation, text_a, text_b = texts[comparison_id]
        chosen, rejected = (text_a, text_b) if winner == "a" else (text_b, text_a)
        result.written += 1
        yield _json_line(
            {
                "prompt": conversation,
                "chosen": [{"role": "assistant", "content": chosen}],
                "rejected": [{"role": "assistant", "content": rejected}],
                "margin": margin,
                "comparison_id": comparison_id,
            }
        )


def _decisive_side(v: _Votes) -> str | None:
    if v.a * 2 > v.n and v.strength_a > v.strength_b:
        return "a"
    if v.b * 2 > v.n and v.strength_b > v.strength_a:
        return "b"
    return None


def _exclusion_reason(v: _Votes) -> str:
    if v.a and v.b:
        return "split"
    return "both_bad" if v.both_bad >= v.ties else "ties"


def _raw_lines(project: Project, weights: RaterWeights, result: ExportResult) -> Iterator[str]:
    judgments = Judgment.objects.filter(project=project)
    if weights.excluded:
        judgments = judgments.exclude(rater_id__in=weights.excluded)
    rows = judgments.order_by("pk").values_list(
        "pk",
        "comparison_id",
        "comparison__prompt_id",
        "comparison__response_a_id",
        "comparison__response_b_id",
        "rater_id",
        "outcome",
        "strength",
        "criteria",
        "rationale",
        "flags",
        "time_spent_ms",
        "left",
        "created_at",
        "repeat_of_id",
    )
    pseudonyms: dict[int, str] = {}  # one entry per rater: small however many judgments
    for pk, comparison_id, prompt_id, a_id, b_id, rater_id, *judged, created_at, repeat_of in rows.iterator(
        chunk_size=_CHUNK_SIZE
    ):
        if rater_id not in pseudonyms:
            pseudonyms[rater_id] = rater_pseudonym(rater_id)
        outcome, strength, criteria, rationale, flags, time_spent_ms, left = judged
        result.written += 1
        line = {
            "judgment_id": pk,
            "comparison_id": comparison_id,
            "prompt_id": prompt_id,
            "response_a_id": a_id,
            "response_b_id": b_id,
            "rater": pseudonyms[rater_id],
            "outcome": outcome,
            "strength": strength,
            "criteria": criteria,
            "rationale": rationale,
            "flags": flags,
            "time_spent_ms": time_spent_ms,
            "left": left,
            "created_at": created_at.isoformat(),
        }
        if repeat_of is not None:
            line["repeat_of"] = repeat_of
        yield _json_line(line)


def _json_line(obj: dict) -> str:
    return json.dumps(obj, ensure_ascii=False) + "\n"
