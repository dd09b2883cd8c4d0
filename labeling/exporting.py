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
from typing import TextIO

from django.db.models import Count, Q, Sum
from django.utils.crypto import salted_hmac

from labeling.models import Comparison, Judgment, Project

FORMATS = ("trl", "raw")
_CHUNK_SIZE = 2000  # rows per database round trip while streaming
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


def _trl_lines(project: Project, result: ExportResult) -> Iterator[str]:
    # One grouped query: the vote counts of every comparison come with its texts.
    outcome = "judgments__outcome"
    comparisons = (
        Comparison.objects.filter(project=project)
        .select_related("prompt", "response_a", "response_b")
        .annotate(
            n=Count("judgments"),
            votes_a=Count("judgments", filter=Q(**{outcome: Judgment.Outcome.A})),
            votes_b=Count("judgments", filter=Q(**{outcome: Judgment.Outcome.B})),
            ties=Count("judgments", filter=Q(**{outcome: Judgment.Outcome.TIE})),
            both_bad=Count("judgments", filter=Q(**{outcome: Judgment.Outcome.BOTH_BAD})),
            strength_a=Sum("judgments__strength", filter=Q(**{outcome: Judgment.Outcome.A}), default=0),
            strength_b=Sum("judgments__strength", filter=Q(**{outcome: Judgment.Outcome.B}), default=0),
        )
        .order_by("pk")
    )
    for c in comparisons.iterator(chunk_size=_CHUNK_SIZE):
        winner = _decisive_side(c)
        if winner is None:
            reason = _exclusion_reason(c)
            setattr(result, reason, getattr(result, reason) + 1)
            continue
        chosen, rejected = (c.response_a, c.response_b) if winner == "a" else (c.response_b, c.response_a)
        signed = c.strength_a - c.strength_b if winner == "a" else c.strength_b - c.strength_a
        result.written += 1
        yield _json_line(
            {
                "prompt": c.prompt.conversation,
                "chosen": [{"role": "assistant", "content": chosen.text}],
                "rejected": [{"role": "assistant", "content": rejected.text}],
                "margin": round(signed / c.n, 6),
                "comparison_id": c.pk,
            }
        )


def _decisive_side(c) -> str | None:
    if c.votes_a * 2 > c.n and c.strength_a > c.strength_b:
        return "a"
    if c.votes_b * 2 > c.n and c.strength_b > c.strength_a:
        return "b"
    return None


def _exclusion_reason(c) -> str:
    if c.n == 0:
        return "no_judgments"
    if c.votes_a and c.votes_b:
        return "split"
    return "both_bad" if c.both_bad >= c.ties else "ties"


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
