"""The raters page, its CSV, the source leaderboard, and the buttons on them (Compute now, Pause/Resume,
Exclude/Include).

Who may: labeling.access. Anyone who may not see the project gets 404; who may see it but lacks
labeling.view_rater_quality gets 403 on every page here (staff status alone grants nothing), and the rater
buttons also need labeling.manage_raters. Pages read the stored figures (labeling.quality.service): nothing
is computed in a request. "Compute now" hands the computation to a worker, and says so if the broker is
down; it never waits for it.
"""

import csv
from dataclasses import dataclass

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from labeling import tasks
from labeling.access import can_manage_raters, can_view_quality, get_project_for_user, get_rater_of_project
from labeling.quality import charts, service
from labeling.quality.charts import number_interval, percent_interval, percent_parts, seconds
from labeling.quality.stats import MIN_N

# The table's columns: (sort key, heading, direction of the first click).
COLUMNS = [
    ("rater", "Rater", "asc"),
    ("judgments", "Judgments", "desc"),
    ("gold_accuracy", "Gold accuracy", "desc"),
    ("agreement", "Agreement", "desc"),
    ("position_bias", "Left chosen", "desc"),
    ("self_consistency", "Self-consistency", "desc"),
    ("tie_rate", "Ties", "desc"),
    ("both_bad_rate", "Both bad", "desc"),
    ("too_fast_share", "Too fast", "desc"),
    ("median_time_ms", "Median time", "asc"),
    ("reliability", "Reliability", "desc"),
    ("flags", "Flags", "desc"),
    ("status", "Standing", "desc"),
]
SORTABLE = {key for key, _, _ in COLUMNS}
FLAG_TITLES = {
    "chance": "Not above chance",
    "position_bias": "Position bias",
    "self_inconsistency": "Inconsistent on repeats",
    "speed": "Too fast",
}
ACTION_DONE = {
    "pause": ("{rater} is paused: no new tasks, and the tasks they held went back to the pool.", "already paused"),
    "resume": ("{rater} may take tasks again.", "not paused"),
    "exclude": (
        "{rater}'s judgments are now left out of training and export (nothing is deleted).",
        "already excluded",
    ),
    "include": ("{rater}'s judgments count again in training and export.", "not excluded"),
}
BROKER_DOWN = (
    "The figures were not recomputed: the task queue could not be reached ({error}). The schedule recomputes "
    "them within 10 minutes once it is back."
)


class RaterActionForm(forms.Form):
    reason = forms.CharField(max_length=2000, required=False, strip=True)
    sort = forms.CharField(max_length=40, required=False)


# -- pages --------------------------------------------------------------------------------------------


@require_GET
@login_required
def raters(request, slug):
    project = _project_for_viewers(request, slug)
    sort = _sort_key(request.GET.get("sort", ""))
    rows = service.quality_rows(project=project)
    if sort:
        rows = service.sort_rows(rows, sort)
    stored = service.project_figures(project=project)
    figures = stored.figures if stored else {}
    context = {
        "project": project,
        "stored": stored,
        "figures": figures,
        "project_cells": _project_cells(figures) if stored else None,
        "rows": [_table_row(row) for row in rows],
        "headers": _headers(sort),
        "sort": sort,
        "can_manage": can_manage_raters(request.user, project),
        "min_n": MIN_N,
        "position_chart": charts.position_bias_chart(rows),
        "gold_chart": charts.gold_agreement_chart(rows),
        "time_chart": charts.time_chart(rows, min_time_ms=figures.get("min_time_ms", project.min_time_ms)),
        "over_time_chart": charts.over_time_chart(figures.get("over_time", [])),
    }
    return render(request, "labeling/quality/raters.html", context)


@require_GET
@login_required
def raters_csv(request, slug):
    project = _project_for_viewers(request, slug)
    rows = service.quality_rows(project=project)
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{project.slug}-raters.csv"'
    writer = csv.writer(response)
    writer.writerow(csv_header())
    for row in rows:
        writer.writerow(csv_row(row))
    return response


@require_GET
@login_required
def leaderboard(request, slug):
    project = _project_for_viewers(request, slug)
    stored = service.project_figures(project=project)
    board = stored.leaderboard if stored else []
    context = {
        "project": project,
        "stored": stored,
        "board": [{**row, "rank": i + 1} for i, row in enumerate(board)],
        "details": (stored.figures.get("leaderboard") or {}) if stored else {},
        "rounds": stored.figures.get("bootstrap_rounds", service.BOOTSTRAP_ROUNDS)
        if stored
        else service.BOOTSTRAP_ROUNDS,
        "chart": charts.leaderboard_chart(board),
    }
    return render(request, "labeling/quality/leaderboard.html", context)


# -- buttons ------------------------------------------------------------------------------------------


@require_POST
@login_required
def compute_now(request, slug):
    project = _project_for_viewers(request, slug)
    error = tasks.publish_compute_quality(project_id=project.pk)
    if error:
        messages.error(request, BROKER_DOWN.format(error=error))
    else:
        messages.success(request, "Recomputing: a worker updates the figures shortly; reload the page in a minute.")
    back = "quality:leaderboard" if request.POST.get("back") == "leaderboard" else "quality:raters"
    return redirect(back, slug=project.slug)


@require_POST
@login_required
def rater_action(request, slug, username, action):
    project = get_project_for_user(request.user, slug=slug)
    if not can_manage_raters(request.user, project):
        raise PermissionDenied("Only those who may manage raters can pause or exclude them.")
    rater = get_rater_of_project(project=project, username=username)
    form = RaterActionForm(request.POST)
    if not form.is_valid():
        messages.error(request, "The reason is too long (at most 2,000 characters); nothing was changed.")
        return _back_to_raters(project, "")
    _, changed = service.apply_rater_action(
        project=project, rater=rater, action=action, by=request.user, reason=form.cleaned_data["reason"]
    )
    done, unchanged = ACTION_DONE[action]
    if changed:
        messages.success(request, done.format(rater=rater.get_username()))
    else:
        messages.info(request, f"{rater.get_username()} was {unchanged}; nothing changed.")
    return _back_to_raters(project, form.cleaned_data["sort"])


# -- helpers ------------------------------------------------------------------------------------------


def _project_for_viewers(request, slug):
    # Those who may not see the project learn nothing (404); those who may see it but not these figures
    # (raters, staff without the permission) are told no (403).
    project = get_project_for_user(request.user, slug=slug)
    if not can_view_quality(request.user, project):
        raise PermissionDenied("Only those who may see raters' quality figures can open this page.")
    return project


def _back_to_raters(project, sort: str):
    url = reverse("quality:raters", args=[project.slug])
    sort = _sort_key(sort)
    return redirect(f"{url}?sort={sort}" if sort else url)


def _sort_key(value: str) -> str:
    """The ?sort= value when it names a column (optionally with "-"), else "" (the default order)."""
    return value if value.removeprefix("-") in SORTABLE else ""


@dataclass(frozen=True)
class Header:
    key: str
    label: str
    sort: str  # the ?sort= value its link asks for
    aria_sort: str  # "ascending", "descending" or "" when the table is not sorted by it


def _headers(sort: str) -> list[Header]:
    headers = []
    for key, label, first in COLUMNS:
        current = "asc" if sort == key else "desc" if sort == f"-{key}" else ""
        if current:
            following = "desc" if current == "asc" else "asc"
        else:
            following = first
        headers.append(
            Header(
                key=key,
                label=label,
                sort=key if following == "asc" else f"-{key}",
                aria_sort={"asc": "ascending", "desc": "descending"}.get(current, ""),
            )
        )
    return headers


@dataclass(frozen=True)
class Cell:
    key: str  # the column
    text: str  # e.g. "72%", or "too few to judge"
    detail: str  # e.g. "(64–79%, n=120)", shown under it
    known: bool  # False: "too few to judge" or unknown, shown muted


@dataclass(frozen=True)
class TableRow:
    rater: str
    judgments: int
    cells: dict[str, Cell]
    flags: list[dict]  # {"kind", "title", "reason"}
    paused: bool
    excluded: bool

    @property
    def cell_list(self) -> list[Cell]:
        """The figures in the order of COLUMNS (between Judgments and Flags)."""
        return [self.cells[key] for key, _, _ in COLUMNS[2:-2]]


def _table_row(row: dict) -> TableRow:
    cells = {name: Cell(name, *percent_parts(row.get(name)), row.get(name) is not None) for name in service.INTERVALS}
    bias = row.get("position_bias")
    if bias and bias.get("p_value") is not None:
        share, rest = percent_parts(bias)
        cells["position_bias"] = Cell("position_bias", share, f"{rest}, p = {bias['p_value']:.2g}", True)
    reliability = row.get("reliability")
    cells["reliability"] = Cell(
        "reliability", f"{reliability:.2f}" if reliability is not None else "—", "", reliability is not None
    )
    median = row.get("median_time_ms")
    cells["median_time_ms"] = Cell(
        "median_time_ms",
        seconds(median),
        f"(p10 {seconds(row.get('p10_time_ms'))})" if median is not None else "",
        median is not None,
    )
    return TableRow(
        rater=row["rater"],
        judgments=row.get("judgments", 0),
        cells=cells,
        flags=[{**flag, "title": FLAG_TITLES.get(flag["kind"], flag["kind"])} for flag in row.get("flags") or []],
        paused=row.get("paused", False),
        excluded=row.get("excluded", False),
    )


def _project_cells(figures: dict) -> dict:
    return {
        "alpha": number_interval(figures.get("alpha")),
        "alpha_n": (figures.get("alpha") or {}).get("n"),
        "criteria": [
            (name, number_interval(value)) for name, value in sorted((figures.get("criteria_alpha") or {}).items())
        ],
        "pairwise_agreement": percent_interval(figures.get("pairwise_agreement"), unit="rater pairs"),
    }


# -- CSV ----------------------------------------------------------------------------------------------

_CSV_NUMBERS = service.NUMBERS
_CSV_INTERVALS = service.INTERVALS


def csv_header() -> list[str]:
    header = ["rater", *_CSV_NUMBERS]
    for name in _CSV_INTERVALS:
        header += [f"{name}_value", f"{name}_low", f"{name}_high", f"{name}_n"]
        if name == "position_bias":
            header.append("position_bias_p_value")
    return header + ["flags", "flag_reasons", "paused", "excluded"]


def csv_row(row: dict) -> list:
    """One rater's row of the raters API as CSV cells: empty for null, a value/low/high/n column per interval."""
    cells = [_spreadsheet_safe(row["rater"]), *(_cell(row.get(name)) for name in _CSV_NUMBERS)]
    for name in _CSV_INTERVALS:
        interval = row.get(name) or {}
        cells += [_cell(interval.get(key)) for key in ("value", "low", "high", "n")]
        if name == "position_bias":
            cells.append(_cell(interval.get("p_value")))
    flags = row.get("flags") or []
    cells += [
        ";".join(flag["kind"] for flag in flags),
        " | ".join(flag["reason"] for flag in flags),
        "true" if row.get("paused") else "false",
        "true" if row.get("excluded") else "false",
    ]
    return cells


def _cell(value):
    return "" if value is None else value


def _spreadsheet_safe(text: str) -> str:
    # A username may start with "+", "-" or "@", which spreadsheets read as the start of a formula.
    return f"'{text}" if text[:1] in ("=", "+", "-", "@") else text
