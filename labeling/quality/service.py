"""Rater quality between the database and the pages: judgments in, stored figures out, and read back.

`compute_quality(project=...)` reads a project's judgments as plain tuples (one query, no model instances),
hands them to the pure statistics (report.build_report, stats.leaderboard) and stores the result in one
transaction: a RaterQuality row per rater whose `figures` are exactly that rater's row of the raters API
(less paused/excluded, which are read live from RaterStanding), and the project's ProjectQuality row
(agreement, Krippendorff's alpha, over time, and the source leaderboard). Workers run it on a schedule
(labeling.tasks); pages and the API only read the stored rows (`quality_rows`, `project_figures`), in a
constant number of queries whatever the number of judgments.

The row's proportions are shown only with enough evidence: an interval resting on fewer than stats.MIN_N
observations is null in the API and the CSV and "too few to judge" on the page (the same rule everywhere).
That also keeps a rater's own row from telling them how they did on their first few gold items.

Leaderboard: each first judgment of a comparison between responses of two different, named sources is one
match (repeats are not votes; judgments of excluded raters stay out, as they do from training and export).
A tie, and "both are bad", count as half a win for each side, as Chatbot Arena counts "tie" and
"tie (bothbad)".
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from datetime import date, datetime

from django.db import transaction
from django.db.models import Exists, OuterRef
from django.db.models.functions import Coalesce
from django.utils import timezone

from labeling.models import Comparison, Judgment, Project, ProjectQuality, RaterQuality, RaterStanding
from labeling.quality.stats import MIN_N, finite_number, leaderboard
from labeling.raters import excluded_rater_ids, set_excluded, set_paused

# The proportions of a row, each {"value", "low", "high", "n"} (+ "p_value" where the report tests it) or null.
INTERVALS = (
    "gold_accuracy",
    "agreement",
    "position_bias",
    "self_consistency",
    "tie_rate",
    "both_bad_rate",
    "too_fast_share",
)
# Plain numbers of a row (null where unknown).
NUMBERS = ("judgments", "comparisons", "reliability", "vote_weight", "median_time_ms", "p10_time_ms", "active_time_ms")
# Percentile bootstrap rounds behind alpha, pairwise agreement and the leaderboard's intervals.
BOOTSTRAP_ROUNDS = 1000
# How many judgments one database round trip of the read fetches.
CHUNK = 5000

_COLUMNS = (
    "id",
    "rater_id",
    "rater__username",
    "comparison_id",
    "outcome",
    "left",
    "time_spent_ms",
    "criteria",
    "repeat_of_id",
    "created_at",
    "comparison__response_a__source",
    "comparison__response_b__source",
)


# -- computing ----------------------------------------------------------------------------------------


def compute_quality(*, project: Project, n_bootstrap: int = BOOTSTRAP_ROUNDS):
    """Compute and store the project's quality figures; returns the report.QualityReport they came from.

    When a computation that started later has already stored its figures (two ran at once), these are not
    stored over them.
    """
    # pandas, scipy and crowd-kit load here, in the worker or command that computes, not in every web process
    # that only shows the stored figures.
    from labeling.quality.report import QualitySettings, build_report

    started_at = timezone.now()
    clock = time.monotonic()
    columns, rater_ids, matches, last_judgment_id = _read_judgments(project)
    gold = dict(Comparison.objects.filter(project=project, is_gold=True).values_list("pk", "gold_label"))
    excluded = excluded_rater_ids(project=project)
    report = build_report(
        _frame(columns), gold, QualitySettings(min_time_ms=project.min_time_ms), n_bootstrap=n_bootstrap
    )
    played = [(a, b, outcome) for rater_id, a, b, outcome in matches if rater_id not in excluded]
    board = leaderboard(played, n_bootstrap=n_bootstrap)
    figures = _json_safe(report.project.as_dict()) | {
        "min_time_ms": project.min_time_ms,
        "min_n": MIN_N,
        "bootstrap_rounds": n_bootstrap,
        "seconds": round(time.monotonic() - clock, 3),
        "leaderboard": {
            "matches": len(played),
            "ties": sum(outcome == "tie" for _, _, outcome in played),
            "excluded_raters": sorted(excluded),
        },
    }
    _store(
        project=project,
        report=report,
        rater_ids=rater_ids,
        figures=figures,
        board=board,
        last_judgment_id=last_judgment_id,
        started_at=started_at,
    )
    return report


def summary(*, project: Project, report) -> dict:
    """A few figures of a computation in one flat dict (the command's and the task's one-line JSON)."""
    stored = project_figures(project=project)
    alpha = report.project.alpha
    return {
        "project": project.slug,
        "judgments": report.project.judgments,
        "comparisons": report.project.comparisons,
        "raters": len(report.raters),
        "flagged": sum(1 for q in report.raters if q.flags),
        "alpha": finite_number(alpha.value) if alpha else None,
        "sources": len(stored.leaderboard) if stored else 0,
        "last_judgment_id": stored.last_judgment_id if stored else None,
        "seconds": stored.figures.get("seconds") if stored else None,
    }


def projects_needing_quality() -> list[int]:
    """Ids of the active projects whose stored figures are missing or out of date: a judgment newer than
    the newest one they read, or a change in who is excluded (the leaderboard leaves excluded raters out).
    Two queries, whatever the number of projects and judgments."""
    newer = Judgment.objects.filter(
        project_id=OuterRef("pk"), pk__gt=Coalesce(OuterRef("quality__last_judgment_id"), 0)
    )
    rows = (
        Project.objects.filter(is_active=True)
        .annotate(has_newer=Exists(newer))
        .values_list("pk", "has_newer", "quality__figures")
        .order_by("pk")
    )
    rows = list(rows)
    excluded: dict[int, list[int]] = {}
    standings = RaterStanding.objects.filter(project__is_active=True, excluded=True).order_by("rater_id")
    for project_id, rater_id in standings.values_list("project_id", "rater_id"):
        excluded.setdefault(project_id, []).append(rater_id)
    due = []
    for project_id, has_newer, figures in rows:
        if figures is None:  # never computed: only worth it once there is a judgment
            if has_newer:
                due.append(project_id)
            continue
        was_excluded = (figures.get("leaderboard") or {}).get("excluded_raters", [])
        if has_newer or was_excluded != excluded.get(project_id, []):
            due.append(project_id)
    return due


def _read_judgments(project: Project):
    """The project's judgments as columns for the report, the rater username -> id map, the leaderboard's
    matches (rater id, source a, source b, outcome) and the newest judgment id."""
    columns = {
        name: []
        for name in (
            "id",
            "rater",
            "comparison",
            "outcome",
            "left",
            "time_ms",
            "criteria",
            "is_repeat_of",
            "created_at",
        )
    }
    rater_ids: dict[str, int] = {}
    matches = []
    rows = Judgment.objects.filter(project=project).order_by().values_list(*_COLUMNS).iterator(chunk_size=CHUNK)
    for pk, rater_id, username, comparison, outcome, left, time_ms, criteria, repeat_of, created, a, b in rows:
        columns["id"].append(pk)
        columns["rater"].append(username)
        columns["comparison"].append(comparison)
        columns["outcome"].append(outcome)
        columns["left"].append(left)
        columns["time_ms"].append(time_ms)
        columns["criteria"].append(criteria if isinstance(criteria, dict) else {})
        columns["is_repeat_of"].append(math.nan if repeat_of is None else repeat_of)
        columns["created_at"].append(created)
        rater_ids[username] = rater_id
        if repeat_of is None and a and b:
            matches.append((rater_id, a, b, "tie" if outcome == Judgment.Outcome.BOTH_BAD else outcome))
    return columns, rater_ids, matches, max(columns["id"], default=None)


def _frame(columns: dict):
    # Imported with the report: see compute_quality.
    import pandas as pd

    return pd.DataFrame(columns)


def _store(*, project, report, rater_ids, figures, board, last_judgment_id, started_at) -> bool:
    """Replace the project's stored figures in one transaction; False when newer ones were already there."""
    computed = [
        RaterQuality(
            project=project,
            rater_id=rater_ids[q.rater],
            judgments=q.judgments,
            reliability=finite_number(q.reliability),
            flagged=bool(q.flags),
            figures=api_row(q),
            computed_at=started_at,
        )
        for q in report.raters
    ]
    with transaction.atomic():
        # One computation of a project writes at a time: the row lock orders two that finish together.
        Project.objects.select_for_update().filter(pk=project.pk).values_list("pk", flat=True).first()
        stored_at = ProjectQuality.objects.filter(project=project).values_list("computed_at", flat=True).first()
        if stored_at is not None and stored_at > started_at:
            return False
        RaterQuality.objects.filter(project=project).delete()
        RaterQuality.objects.bulk_create(computed, batch_size=1000)
        ProjectQuality.objects.update_or_create(
            project=project,
            defaults={
                "last_judgment_id": last_judgment_id,
                "figures": figures,
                "leaderboard": _json_safe(board),
                "computed_at": started_at,
            },
        )
    return True


def api_row(quality) -> dict:
    """A report.RaterQuality as its row of the raters API (without paused/excluded, which are read live)."""
    row = {"rater": quality.rater}
    for name in NUMBERS:
        row[name] = _json_safe(getattr(quality, name))
    for name in INTERVALS:
        row[name] = shown_interval(getattr(quality, name))
    row["flags"] = [{"kind": flag.kind, "reason": flag.reason} for flag in quality.flags]
    return row


def shown_interval(interval) -> dict | None:
    """A stats.Interval as {"value", "low", "high", "n"[, "p_value"]}; None below MIN_N observations."""
    if interval is None or interval.n < MIN_N:
        return None
    return _json_safe(interval.as_dict())


def _json_safe(value):
    """Plain JSON: NaN and infinities (which PostgreSQL's jsonb refuses) become None, datetimes ISO text."""
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(item) for item in value]
    if isinstance(value, float):
        return finite_number(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if hasattr(value, "item"):  # a numpy scalar
        return _json_safe(value.item())
    return value


# -- reading ------------------------------------------------------------------------------------------


def quality_rows(*, project: Project) -> list[dict]:
    """Every rater's row of the raters API, best-known first: highest reliability first, raters without a
    reliability yet last, then by judgments and username. Two queries."""
    standings = {
        rater_id: (paused, excluded)
        for rater_id, paused, excluded in RaterStanding.objects.filter(project=project).values_list(
            "rater_id", "paused", "excluded"
        )
    }
    rows = []
    for rater_id, username, figures in RaterQuality.objects.filter(project=project).values_list(
        "rater_id", "rater__username", "figures"
    ):
        paused, excluded = standings.get(rater_id, (False, False))
        rows.append({**figures, "rater": username, "paused": paused, "excluded": excluded})
    return sorted(rows, key=_best_known_first)


def quality_row_of(*, project: Project, rater) -> dict | None:
    """One rater's own row (None before any computation that saw a judgment of theirs). Two queries."""
    figures = RaterQuality.objects.filter(project=project, rater=rater).values_list("figures", flat=True).first()
    if figures is None:
        return None
    standing = RaterStanding.objects.filter(project=project, rater=rater).values_list("paused", "excluded").first()
    paused, excluded = standing or (False, False)
    return {**figures, "rater": rater.get_username(), "paused": paused, "excluded": excluded}


def standing_of(*, project: Project, rater) -> dict:
    """{"rater", "paused", "excluded"} as they stand now."""
    standing = RaterStanding.objects.filter(project=project, rater=rater).values_list("paused", "excluded").first()
    paused, excluded = standing or (False, False)
    return {"rater": rater.get_username(), "paused": paused, "excluded": excluded}


def project_figures(*, project: Project) -> ProjectQuality | None:
    """The stored project figures and leaderboard, or None before the first computation. One query."""
    return ProjectQuality.objects.filter(project=project).first()


def _best_known_first(row: dict):
    reliability = row.get("reliability")
    return (reliability is None, -(reliability or 0.0), -row.get("judgments", 0), row["rater"])


def sort_rows(rows: Iterable[dict], key: str) -> list[dict]:
    """rows ordered by one of SORT_KEYS ("-" first: descending); unknown values (null) always last."""
    descending = key.startswith("-")
    name = key.removeprefix("-")
    extract = SORT_KEYS[name]
    known = [row for row in rows if extract(row) is not None]
    unknown = [row for row in rows if extract(row) is None]
    known.sort(key=lambda row: row["rater"])
    known.sort(key=extract, reverse=descending)  # stable: equal values stay in name order either way
    return known + sorted(unknown, key=lambda row: row["rater"])


def _value(name):
    return lambda row: (row.get(name) or {}).get("value") if row.get(name) is not None else None


SORT_KEYS = {
    "rater": lambda row: row["rater"].lower(),
    "judgments": lambda row: row.get("judgments"),
    **{name: _value(name) for name in INTERVALS},
    "reliability": lambda row: row.get("reliability"),
    "median_time_ms": lambda row: row.get("median_time_ms"),
    "p10_time_ms": lambda row: row.get("p10_time_ms"),
    "flags": lambda row: len(row.get("flags") or []),
    "status": lambda row: int(row.get("paused", False)) + 2 * int(row.get("excluded", False)),
}


# -- admins' decisions --------------------------------------------------------------------------------

# What each rater action sets, through labeling.raters (which records who, when and why).
RATER_ACTIONS = {
    "pause": (set_paused, "paused", True),
    "resume": (set_paused, "paused", False),
    "exclude": (set_excluded, "excluded", True),
    "include": (set_excluded, "excluded", False),
}


def apply_rater_action(*, project: Project, rater, action: str, by, reason: str = "") -> tuple[dict, bool]:
    """Pause, resume, exclude or include a rater (the caller has checked access.can_manage_raters).
    Returns the standing as it is now ({"rater", "paused", "excluded"}) and whether it changed."""
    change, field, value = RATER_ACTIONS[action]
    before = standing_of(project=project, rater=rater)
    change(project=project, rater=rater, by=by, reason=reason, **{field: value})
    after = standing_of(project=project, rater=rater)
    return after, after != before
