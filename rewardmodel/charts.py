"""Held-out accuracy over versions, as an SVG drawn on the server.

No chart library and no script: this module only does the geometry (scales,
ticks, point positions, the 95% interval of each accuracy) and the words for
screen readers; templates/rewardmodel/_accuracy_chart.svg draws it, with
Django's autoescaping on every number and label. No model text ever goes in.

    chart = accuracy_chart(status.versions)  # the active one is the row with status "active"
    html = render_accuracy_chart(chart)     # or {% include "rewardmodel/_accuracy_chart.svg" %}
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from django.template.loader import render_to_string

from labeling.quality.charts import Tick
from rewardmodel.metrics import accuracy_interval, finite_number, too_few_to_judge

TEMPLATE = "rewardmodel/_accuracy_chart.svg"
CHANCE = 0.5  # a reward model that guesses gets half the held-out pairs right
_STEPS = (0.01, 0.02, 0.025, 0.05, 0.1, 0.2, 0.25)
_MAX_Y_TICKS = 7
_MAX_X_TICKS = 12


@dataclass(frozen=True)
class Point:
    version: int
    accuracy: float
    x: float
    y: float
    y_low: float | None  # pixel ends of the 95% interval; None without n
    y_high: float | None
    active: bool
    label: str  # the point's <title>: "v3: 61.2% held-out accuracy (±4.5 points, n=462) — active"


@dataclass(frozen=True)
class AccuracyChart:
    width: int
    height: int
    left: float
    right: float
    top: float
    bottom: float
    points: list[Point]
    reference_points: list[Point]  # accuracy against imported reference labels, when measured
    x_ticks: list[Tick]
    y_ticks: list[Tick]
    chance_y: float | None  # pixel height of 50%, when inside the plotted range
    title: str
    description: str
    empty_message: str  # shown instead of a chart when there is nothing to plot

    @property
    def empty(self) -> bool:
        return not self.points and not self.reference_points

    @property
    def line(self) -> str:
        return _polyline(self.points)

    @property
    def reference_line(self) -> str:
        return _polyline(self.reference_points)

    @property
    def tick_left(self) -> float:
        return self.left - 5

    @property
    def tick_bottom(self) -> float:
        return self.bottom + 5

    @property
    def x_label_y(self) -> float:
        return self.bottom + 34

    @property
    def middle_x(self) -> float:
        return (self.left + self.right) / 2


def accuracy_chart(versions: Iterable, *, width: int = 640, height: int = 260) -> AccuracyChart:
    """Geometry of the accuracy-over-versions chart.

    `versions`: objects with .version, .status, .accuracy, .n and .reference_accuracy
    (status.VersionRow), in any order. Versions with neither a held-out accuracy nor an
    accuracy against imported reference labels (failed, still training) are left out.
    A project bootstrapped from a labeled dataset has only the second until raters have
    judged enough: then the chart is the reference line alone.
    """
    versions = list(versions)
    plotted = sorted(
        (v for v in versions if _finite(v.accuracy) or _finite(getattr(v, "reference_accuracy", None))),
        key=lambda v: v.version,
    )
    evaluated = [v for v in plotted if _finite(v.accuracy)]
    left, right, top, bottom = 56.0, width - 20.0, 16.0, height - 48.0
    title = "Held-out accuracy by reward-model version"
    if not plotted:
        message = (
            "No versions yet: the chart appears once a first version has been trained and evaluated."
            if not versions
            else "No evaluated versions yet: none of the versions so far has a held-out accuracy."
        )
        return AccuracyChart(width, height, left, right, top, bottom, [], [], [], [], None, title, message, message)

    numbers = [v.version for v in plotted]
    v_min, v_max = min(numbers), max(numbers)
    pad = 16.0  # keeps the first and last point off the axes

    def x_of(version: int) -> float:
        if v_min == v_max:
            return (left + right) / 2
        return left + pad + (version - v_min) / (v_max - v_min) * (right - left - 2 * pad)

    intervals = {v.version: accuracy_interval(v.accuracy, v.n) for v in evaluated}
    references = [v for v in plotted if _finite(getattr(v, "reference_accuracy", None))]
    shown = [CHANCE]
    shown += [bound for v in evaluated for bound in (intervals[v.version] or (v.accuracy,))]
    shown += [v.reference_accuracy for v in references]
    lo, hi, step = _y_domain(min(shown), max(shown))

    def y_of(value: float) -> float:
        return bottom - (value - lo) / (hi - lo) * (bottom - top)

    points = []
    for v in evaluated:
        bounds = intervals[v.version]
        active = v.status == "active"
        if bounds is None:
            interval = ""
        elif too_few_to_judge(v.n):
            interval = f" (too few pairs to judge: n={v.n}, 95% interval {_pct(bounds[0])}–{_pct(bounds[1])})"
        else:
            interval = f" (95% interval {_pct(bounds[0])}–{_pct(bounds[1])}, n={v.n})"
        points.append(
            Point(
                version=v.version,
                accuracy=v.accuracy,
                x=round(x_of(v.version), 2),
                y=round(y_of(v.accuracy), 2),
                y_low=round(y_of(max(lo, bounds[0])), 2) if bounds else None,
                y_high=round(y_of(min(hi, bounds[1])), 2) if bounds else None,
                active=active,
                label=f"v{v.version}: {_pct(v.accuracy)} held-out accuracy{interval}" + (" — active" if active else ""),
            )
        )
    reference_points = [
        Point(
            version=v.version,
            accuracy=v.reference_accuracy,
            x=round(x_of(v.version), 2),
            y=round(y_of(v.reference_accuracy), 2),
            y_low=None,
            y_high=None,
            # Marked here only when the held-out line has no point for the active version.
            active=v.status == "active" and not _finite(v.accuracy),
            label=f"v{v.version}: {_pct(v.reference_accuracy)} agreement with the imported reference labels"
            + (" — active" if v.status == "active" else ""),
        )
        for v in references
    ]

    y_ticks = [Tick(round(y_of(value), 2), f"{100 * value:.{_decimals(step)}f}%") for value in _range(lo, hi, step)]
    x_step = max(1, math.ceil((v_max - v_min + 1) / _MAX_X_TICKS))
    x_ticks = [Tick(round(x_of(n), 2), f"v{n}") for n in range(v_min, v_max + 1, x_step)]
    if x_ticks[-1].label != f"v{v_max}":
        x_ticks.append(Tick(round(x_of(v_max), 2), f"v{v_max}"))

    return AccuracyChart(
        width=width,
        height=height,
        left=left,
        right=right,
        top=top,
        bottom=bottom,
        points=points,
        reference_points=reference_points,
        x_ticks=x_ticks,
        y_ticks=y_ticks,
        chance_y=round(y_of(CHANCE), 2) if lo <= CHANCE <= hi else None,
        title=title,
        description=_describe(evaluated, references),
        empty_message="",
    )


def render_accuracy_chart(chart: AccuracyChart) -> str:
    """The chart's markup (an <svg>, or a short paragraph when there is nothing to plot)."""
    return render_to_string(TEMPLATE, {"chart": chart})


# --- helpers ----------------------------------------------------------------


def _y_domain(low: float, high: float) -> tuple[float, float, float]:
    """A range of round numbers around [low, high] with at most _MAX_Y_TICKS ticks, inside [0, 1]."""
    span = max(high - low, 0.02)
    step = next((s for s in _STEPS if span / s <= _MAX_Y_TICKS - 1), 0.25)
    lo = max(0.0, math.floor(low / step + 1e-9) * step)
    hi = min(1.0, math.ceil(high / step - 1e-9) * step)
    if hi - lo < step:
        hi = min(1.0, lo + step)
        lo = max(0.0, hi - step)
    return round(lo, 6), round(hi, 6), step


def _range(lo: float, hi: float, step: float) -> list[float]:
    count = round((hi - lo) / step)
    return [round(lo + i * step, 6) for i in range(count + 1)]


def _decimals(step: float) -> int:
    percent_step = round(step * 100, 6)
    return 0 if percent_step == int(percent_step) else 1


def _polyline(points: list[Point]) -> str:
    return " ".join(f"{p.x},{p.y}" for p in points)


def _describe(evaluated, references) -> str:
    words = []
    if evaluated:
        first, last = evaluated[0], evaluated[-1]
        best = max(evaluated, key=lambda v: v.accuracy)
        words += [
            f"{len(evaluated)} evaluated version{'s' if len(evaluated) != 1 else ''}.",
            f"v{first.version}: {_pct(first.accuracy)}." if first is not last else "",
            f"Latest, v{last.version}: {_pct(last.accuracy)}.",
            f"Best, v{best.version}: {_pct(best.accuracy)}." if len(evaluated) > 2 else "",
        ]
        active = next((v for v in evaluated if v.status == "active"), None)
        words.append(f"Active: v{active.version} at {_pct(active.accuracy)}." if active else "No version is active.")
        if references:
            words.append(f"A second, dashed line shows agreement with imported reference labels ({len(references)}).")
    else:
        last = references[-1]
        active = next((v for v in references if v.status == "active"), None)
        words += [
            "No version has a held-out accuracy on raters' judgments yet.",
            f"Agreement with imported reference labels, {len(references)} "
            f"version{'s' if len(references) != 1 else ''}; latest, v{last.version}: {_pct(last.reference_accuracy)}.",
            f"Active: v{active.version} at {_pct(active.reference_accuracy)}." if active else "No version is active.",
        ]
    words.append("Chance is 50%.")
    return " ".join(w for w in words if w)


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def _finite(value) -> bool:
    return finite_number(value) is not None
