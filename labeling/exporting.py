"""Rows -> JSONL, streamed: constant memory however many judgments there are.

Two formats, one JSON object per line:

trl  One line per comparison with a decisive majority, in TRL's conversational
     preference format:
       {"prompt": [turns], "chosen": [{"role": "assistant", "content": ...}],
        "rejected": [...], "margin": float, "comparison_id": int}
     Let n be all judgments of the comparison (ties and both-bad included), and
     give each judgment a signed strength towards A: +strength (1-3) for "a",
     -strength for "b", 0 for a tie or both-bad.
     - The comparison is *decisive* for A when more than half of all n judgments
       prefer A (a tie or a both-bad vote counts against a majority, it does not
       abstain) and the signed strengths sum above zero; the same for B. The second
       rule drops the rare pair where the outvoted raters felt far more strongly
       (two "slightly A" against one "much B"): the raters do not agree which is
       better, so the pair teaches a reward model nothing reliable.
     - margin = the mean signed strength towards the chosen response over all n
       judgments. Decisive pairs therefore always have 0 < margin <= 3: three
       "much better" votes give 3.0; "clearly A", "slightly A", "tie" give 1.0.
       It is in strength units; a trainer scales it to its reward units (TRL's
       RewardTrainer subtracts it inside the Bradley-Terry loss, as Llama 2 did).
     Excluded comparisons are counted by reason, exactly one each:
       no_judgments  none yet;
       split         raters preferred different responses and neither side
                     wins both the vote and the strengths;
       both_bad      no majority, nobody dissented on direction, and "both are
                     bad" votes are at least as many as tie votes;
       ties          the rest: no majority because of tie votes.
     Imported reference labels (e.g. HH-RLHF) are not judgments and are not used.

raw  One line per judgment, every field, for analysis:
       {"judgment_id", "comparison_id", "prompt_id", "response_a_id", "response_b_id",
        "rater", "outcome", "strength", "criteria", "rationale", "flags",
        "time_spent_ms", "left", "created_at"}
     "rater" is a pseudonym: HMAC-SHA256 of the user id, keyed by SECRET_KEY,
     truncated to 16 hex digits. It is stable across exports (so agreement per
     rater can be studied) but cannot be turned back into a user without the key;
     rotating SECRET_KEY changes every pseudonym. No username or email is written.
"""

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple, TextIO

from django.db.models import Count, Q, Sum
from django.utils.crypto import salted_hmac

from labeling.models import Comparison, Judgment, Project

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

    def summary(self) -> str:
        if self.format == "raw":
            return f"Wrote {self.written} judgments (raw)."
        return (
            f"Wrote {self.written} comparisons (trl); excluded {self.ties} ties, {self.both_bad} both-bad, "
            f"{self.split} split, {self.no_judgments} without judgments."
        )


def export_preferences(*, project: Project, format: str, out: TextIO) -> ExportResult:
    """Write the project's preferences to `out` as JSONL; return what was written and left out."""
    result = ExportResult(format=format)
    for line in _lines(project=project, format=format, result=result):
        out.write(line)
    return result


def stream_preferences(*, project: Project, format: str, chunk_chars: int = 64 * 1024) -> Iterator[str]:
    """The same lines as export_preferences, joined into chunks for a streaming HTTP response."""
    buffer, size = [], 0
    for line in _lines(project=project, format=format, result=ExportResult(format=format)):
        buffer.append(line)
        size += len(line)
        if size >= chunk_chars:
            yield "".join(buffer)
            buffer, size = [], 0
    if buffer:
        yield "".join(buffer)


def rater_pseudonym(user_id: int) -> str:
    return salted_hmac(_PSEUDONYM_SALT, str(user_id), algorithm="sha256").hexdigest()[:16]


def _lines(*, project: Project, format: str, result: ExportResult) -> Iterator[str]:
    if format == "trl":
        yield from _trl_lines(project, result)
    elif format == "raw":
        yield from _raw_lines(project, result)
    else:
        raise ValueError(f"Unknown export format {format!r}; expected one of {', '.join(FORMATS)}.")


class _Votes(NamedTuple):
    n: int
    a: int
    b: int
    ties: int
    both_bad: int
    strength_a: int
    strength_b: int


def _trl_lines(project: Project, result: ExportResult) -> Iterator[str]:
    # Votes are counted in one grouped query over the judgments alone (texts
    # carried through a GROUP BY would be sorted with it, on disk); the texts
    # of the decisive comparisons are then read a chunk at a time.
    outcome = Judgment.Outcome
    votes = (
        Judgment.objects.filter(project=project)
        .values("comparison_id")
        .annotate(
            n=Count("pk"),
            a=Count("pk", filter=Q(outcome=outcome.A)),
            b=Count("pk", filter=Q(outcome=outcome.B)),
            ties=Count("pk", filter=Q(outcome=outcome.TIE)),
            both_bad=Count("pk", filter=Q(outcome=outcome.BOTH_BAD)),
            strength_a=Sum("strength", filter=Q(outcome=outcome.A), default=0),
            strength_b=Sum("strength", filter=Q(outcome=outcome.B), default=0),
        )
        .order_by("comparison_id")
        .values_list("comparison_id", "n", "a", "b", "ties", "both_bad", "strength_a", "strength_b")
    )
    judged, decisive = 0, []
    for comparison_id, *counts in votes.iterator(chunk_size=_CHUNK_SIZE):
        judged += 1
        v = _Votes(*counts)
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
    result.no_judgments = Comparison.objects.filter(project=project).count() - judged


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


def _raw_lines(project: Project, result: ExportResult) -> Iterator[str]:
    rows = (
        Judgment.objects.filter(project=project)
        .order_by("pk")
        .values_list(
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
        )
    )
    pseudonyms: dict[int, str] = {}  # one entry per rater: small however many judgments
    for pk, comparison_id, prompt_id, a_id, b_id, rater_id, *judged, created_at in rows.iterator(
        chunk_size=_CHUNK_SIZE
    ):
        if rater_id not in pseudonyms:
            pseudonyms[rater_id] = rater_pseudonym(rater_id)
        outcome, strength, criteria, rationale, flags, time_spent_ms, left = judged
        result.written += 1
        yield _json_line(
            {
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
        )


def _json_line(obj: dict) -> str:
    return json.dumps(obj, ensure_ascii=False) + "\n"
