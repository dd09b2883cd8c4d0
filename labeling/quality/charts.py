"""The raters page's and the leaderboard's plots, as SVG drawn on the server.

One job (the geometry and words of the quality plots) in ~640 lines: three chart shapes share their scales,
ticks and accessible descriptions, which would otherwise be written three times.

No chart library and no script (the CSP allows neither inline script nor eval): this module does the
geometry (scales, ticks, positions, interval ends) and the words for screen readers, and the templates under
templates/labeling/quality/ draw it with Django's autoescaping on every label, since rater names and
response sources are untrusted text. Three shapes:

- a dot plot, one row per rater or source, each with its 95% interval as a bar and optional reference lines:
  position bias (line at 50%), time per judgment (log scale; the 10th percentile to the median, line at the
  project's too-fast time) and the leaderboard (ratings, line at the average 1000);
- a scatter of gold accuracy against agreement, one point per rater, with interval whiskers where there is
  room;
- the project's agreement over time: alpha and pairwise agreement per window, each with its interval.

Every figure here comes from the stored rows (labeling.quality.service), which already leave out intervals
resting on fewer than stats.MIN_N observations.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

TOO_FEW = "too few to judge"
LABEL_CHARS = 18  # longer names are cut on the axis; the point's title keeps the whole name
ROW_HEIGHT = 22
SCATTER_WHISKERS_UP_TO = 40  # more points than this: whiskers would hide the points
_NICE_STEPS = (1, 2, 2.5, 5, 10)


# -- words --------------------------------------------------------------------------------------------


def percent_interval(interval: dict | None, *, unit: str = "") -> str:
    """{"value": .72, "low": .64, "high": .79, "n": 120} -> "72% (64–79%, n=120)" (with a unit: "120 rater
    pairs"); None -> "too few to judge"."""
    return " ".join(part for part in percent_parts(interval, unit=unit) if part)


def percent_parts(interval: dict | None, *, unit: str = "") -> tuple[str, str]:
    """percent_interval in two parts, the share and the rest: ("72%", "(64–79%, n=120)")."""
    if interval is None:
        return TOO_FEW, ""
    n = f"{interval['n']} {unit}" if unit else f"n={interval['n']}"
    return _pct(interval["value"]), f"({_pct(interval['low'], sign=False)}–{_pct(interval['high'])}, {n})"


def number_interval(interval: dict | None, digits: int = 2) -> str:
    """Krippendorff's alpha and the like: "0.53 (0.49–0.57)"; None -> "too few to judge"."""
    if interval is None or interval.get("value") is None:
        return TOO_FEW
    low, high = interval.get("low"), interval.get("high")
    bounds = f" ({low:.{digits}f}–{high:.{digits}f})" if low is not None and high is not None else ""
    return f"{interval['value']:.{digits}f}{bounds}"


def seconds(ms: float | None) -> str:
    if ms is None:
        return "—"
    s = ms / 1000
    return f"{s:.1f} s" if s < 10 else f"{s:.0f} s" if s < 600 else f"{s / 60:.0f} min"


def _pct(value: float, *, sign: bool = True) -> str:
    return f"{100 * value:.0f}%" if sign else f"{100 * value:.0f}"


def _short(label: str) -> str:
    return label if len(label) <= LABEL_CHARS else label[: LABEL_CHARS - 1] + "…"


# -- geometry ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tick:
    at: float  # pixel position along its axis
    label: str


@dataclass(frozen=True)
class Line:
    at: float  # pixel position of a reference line
    label: str


@dataclass(frozen=True)
class DotRow:
    label: str  # shown on the axis, cut to LABEL_CHARS
    y: float
    x: float  # the estimate
    x_low: float | None  # the bar (interval, or 10th percentile to median)
    x_high: float | None
    x_mark: float | None  # a second marker on the bar (the 10th percentile of times)
    title: str  # the row's <title>: what a screen reader says
    kind: str  # CSS modifier: "", "flagged", "excluded"

    @property
    def text_y(self) -> float:
        return self.y + 4

    @property
    def mark_top(self) -> float:
        return self.y - 6

    @property
    def mark_bottom(self) -> float:
        return self.y + 6


@dataclass(frozen=True)
class DotChart:
    id: str
    width: int
    height: int
    left: float
    right: float
    top: float
    bottom: float
    rows: list[DotRow]
    x_ticks: list[Tick]
    lines: list[Line]
    x_label: str
    title: str
    description: str
    empty_message: str

    @property
    def empty(self) -> bool:
        return not self.rows

    @property
    def label_x(self) -> float:
        return self.left - 8

    @property
    def tick_y(self) -> float:
        return self.bottom + 16

    @property
    def x_label_y(self) -> float:
        return self.bottom + 34

    @property
    def middle_x(self) -> float:
        return (self.left + self.right) / 2

    @property
    def line_label_y(self) -> float:
        return self.top - 4


def _dot_chart(
    *,
    id: str,
    items: list[dict],
    scale,
    ticks: list[tuple[float, str]],
    lines: list[tuple[float, str]],
    x_label: str,
    title: str,
    description: str,
    empty_message: str,
    width: int = 640,
) -> DotChart:
    """items: {"label", "x", "low", "high", "mark", "title", "kind"} in data units; scale maps them to [0, 1]."""
    left, right, top = 150.0, width - 24.0, 22.0
    bottom = top + max(len(items), 1) * ROW_HEIGHT
    height = int(bottom + 44)

    def px(value: float | None) -> float | None:
        if value is None:
            return None
        return round(left + min(1.0, max(0.0, scale(value))) * (right - left), 2)

    rows = [
        DotRow(
            label=_short(item["label"]),
            y=round(top + (i + 0.5) * ROW_HEIGHT, 2),
            x=px(item["x"]),
            x_low=px(item.get("low")),
            x_high=px(item.get("high")),
            x_mark=px(item.get("mark")),
            title=item["title"],
            kind=item.get("kind", ""),
        )
        for i, item in enumerate(items)
    ]
    return DotChart(
        id=id,
        width=width,
        height=height,
        left=left,
        right=right,
        top=top,
        bottom=bottom,
        rows=rows,
        x_ticks=[Tick(px(value), label) for value, label in ticks],
        lines=[Line(px(value), label) for value, label in lines],
        x_label=x_label,
        title=title,
        description=description,
        empty_message=empty_message,
    )


def _kind(row: dict) -> str:
    return "excluded" if row.get("excluded") else "flagged" if row.get("flags") else ""


def _percent_ticks(step: float = 0.25) -> list[tuple[float, str]]:
    return [(i * step, _pct(i * step)) for i in range(int(round(1 / step)) + 1)]


def _not_plotted(rows: Sequence[dict], plotted: int, why: str) -> str:
    left_out = len(rows) - plotted
    return f" {left_out} rater{'s' if left_out != 1 else ''} not plotted ({why})." if left_out else ""


# -- the raters page ---------------------------------------------------------------------------------------


def position_bias_chart(rows: Sequence[dict]) -> DotChart:
    """Share of decisive answers given to the left response per rater, with its 95% interval; line at 50%."""
    plotted = [r for r in rows if r.get("position_bias")]
    items = [
        {
            "label": r["rater"],
            "x": r["position_bias"]["value"],
            "low": r["position_bias"]["low"],
            "high": r["position_bias"]["high"],
            "title": f"{r['rater']}: left response chosen in {percent_interval(r['position_bias'])}"
            + (f", p = {r['position_bias']['p_value']:.3g}" if r["position_bias"].get("p_value") is not None else ""),
            "kind": _kind(r),
        }
        for r in plotted
    ]
    biased = [r["rater"] for r in plotted if r["position_bias"]["low"] > 0.5 or r["position_bias"]["high"] < 0.5]
    description = (
        f"Share of decisive answers that went to the response shown on the left, with 95% intervals, for "
        f"{len(plotted)} rater{'s' if len(plotted) != 1 else ''}. An unbiased rater is near 50%. "
        + (
            f"Intervals that exclude 50%: {', '.join(biased)}."
            if biased
            else "Every interval includes 50%."
            if plotted
            else ""
        )
        + _not_plotted(rows, len(plotted), TOO_FEW)
    )
    return _dot_chart(
        id="position-bias",
        items=items,
        scale=lambda v: v,
        ticks=_percent_ticks(),
        lines=[(0.5, "50%")],
        x_label="left response chosen (share of decisive answers)",
        title="Position bias per rater",
        description=description.strip(),
        empty_message=f"No rater has enough decisive answers yet ({TOO_FEW}).",
    )


def time_chart(rows: Sequence[dict], *, min_time_ms: int) -> DotChart:
    """Median and 10th-percentile time per judgment per rater, on a log scale; line at the too-fast time."""
    plotted = [r for r in rows if r.get("median_time_ms") and r.get("p10_time_ms")]
    values = [r["median_time_ms"] for r in plotted] + [r["p10_time_ms"] for r in plotted] + [min_time_ms or 1000]
    lo, hi = _log_domain(min(values), max(values))
    items = [
        {
            "label": r["rater"],
            "x": r["median_time_ms"],
            "low": r["p10_time_ms"],
            "high": r["median_time_ms"],
            "mark": r["p10_time_ms"],
            "title": f"{r['rater']}: median {seconds(r['median_time_ms'])}, 10th percentile "
            f"{seconds(r['p10_time_ms'])} per judgment over {r['judgments']} judgments",
            "kind": _kind(r),
        }
        for r in plotted
    ]
    fast = [r["rater"] for r in plotted if min_time_ms and r["median_time_ms"] < min_time_ms]
    description = (
        f"Time per judgment for {len(plotted)} rater{'s' if len(plotted) != 1 else ''}, log scale: the dot is the "
        f"median, the bar reaches down to the 10th percentile. Answers under {seconds(min_time_ms)} count as too fast. "
        + (f"Median under that time: {', '.join(fast)}." if fast else "")
        + _not_plotted(rows, len(plotted), "no judgments")
    )

    def scale(ms):
        return (math.log10(ms) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))

    return _dot_chart(
        id="time",
        items=items,
        scale=scale,
        ticks=_log_ticks(lo, hi),
        lines=[(min_time_ms, f"too fast: {seconds(min_time_ms)}")] if min_time_ms else [],
        x_label="seconds per judgment (log scale): 10th percentile to median",
        title="Time per judgment per rater",
        description=description.strip(),
        empty_message="No judgments yet.",
    )


@dataclass(frozen=True)
class ScatterPoint:
    label: str
    x: float
    y: float
    x_low: float | None  # whisker ends, when there is room for them
    x_high: float | None
    y_low: float | None
    y_high: float | None
    title: str
    kind: str

    @property
    def text_x(self) -> float:
        return self.x + 7

    @property
    def text_y(self) -> float:
        return self.y - 6


@dataclass(frozen=True)
class ScatterChart:
    id: str
    width: int
    height: int
    left: float
    right: float
    top: float
    bottom: float
    points: list[ScatterPoint]
    x_ticks: list[Tick]
    y_ticks: list[Tick]
    chance_y: float
    x_label: str
    y_label: str
    title: str
    description: str
    empty_message: str
    labelled: bool  # names next to the points (few points)

    @property
    def empty(self) -> bool:
        return not self.points

    @property
    def tick_left(self) -> float:
        return self.left - 8

    @property
    def tick_bottom(self) -> float:
        return self.bottom + 16

    @property
    def x_label_y(self) -> float:
        return self.bottom + 34

    @property
    def middle_x(self) -> float:
        return (self.left + self.right) / 2

    @property
    def middle_y(self) -> float:
        return (self.top + self.bottom) / 2

    @property
    def y_label_x(self) -> float:
        return 16


def gold_agreement_chart(rows: Sequence[dict], *, width: int = 480, height: int = 420) -> ScatterChart:
    """Gold accuracy (y) against agreement with the other raters (x), one point per rater."""
    left, right, top, bottom = 60.0, width - 20.0, 16.0, height - 48.0
    plotted = [r for r in rows if r.get("gold_accuracy") and r.get("agreement")]
    whiskers = len(plotted) <= SCATTER_WHISKERS_UP_TO

    def px(v):
        return round(left + v * (right - left), 2)

    def py(v):
        return round(bottom - v * (bottom - top), 2)

    points = [
        ScatterPoint(
            label=_short(r["rater"]),
            x=px(r["agreement"]["value"]),
            y=py(r["gold_accuracy"]["value"]),
            x_low=px(r["agreement"]["low"]) if whiskers else None,
            x_high=px(r["agreement"]["high"]) if whiskers else None,
            y_low=py(r["gold_accuracy"]["low"]) if whiskers else None,
            y_high=py(r["gold_accuracy"]["high"]) if whiskers else None,
            title=f"{r['rater']}: gold accuracy {percent_interval(r['gold_accuracy'])}; agreement with the other "
            f"raters {percent_interval(r['agreement'])}",
            kind=_kind(r),
        )
        for r in plotted
    ]
    low_gold = [r["rater"] for r in plotted if r["gold_accuracy"]["high"] < 0.5]
    description = (
        f"Gold accuracy against agreement with the other raters' majority, one point per rater "
        f"({len(plotted)} plotted{', with 95% interval whiskers' if whiskers and plotted else ''}). "
        "Careful raters sit up and to the right; 50% gold accuracy is chance. "
        + (f"Gold accuracy below chance: {', '.join(low_gold)}." if low_gold else "")
        + _not_plotted(rows, len(plotted), "too few gold answers or majority checks")
    )
    ticks = _percent_ticks(0.2)
    return ScatterChart(
        id="gold-agreement",
        width=width,
        height=height,
        left=left,
        right=right,
        top=top,
        bottom=bottom,
        points=points,
        x_ticks=[Tick(px(v), label) for v, label in ticks],
        y_ticks=[Tick(py(v), label) for v, label in ticks],
        chance_y=py(0.5),
        x_label="agreement with the other raters",
        y_label="gold accuracy",
        title="Gold accuracy against agreement",
        description=description.strip(),
        empty_message=f"No rater has both enough gold answers and enough majority checks yet ({TOO_FEW}).",
        labelled=len(plotted) <= 12,
    )


@dataclass(frozen=True)
class SeriesPoint:
    x: float
    y: float
    y_low: float | None
    y_high: float | None
    title: str


@dataclass(frozen=True)
class Series:
    name: str
    kind: str  # CSS modifier
    points: list[SeriesPoint]

    @property
    def line(self) -> str:
        return " ".join(f"{p.x},{p.y}" for p in self.points)


@dataclass(frozen=True)
class LineChart:
    id: str
    width: int
    height: int
    left: float
    right: float
    top: float
    bottom: float
    series: list[Series]
    x_ticks: list[Tick]
    y_ticks: list[Tick]
    zero_y: float | None
    x_label: str
    title: str
    description: str
    empty_message: str

    @property
    def empty(self) -> bool:
        return not any(s.points for s in self.series)

    @property
    def tick_left(self) -> float:
        return self.left - 8

    @property
    def tick_bottom(self) -> float:
        return self.bottom + 16

    @property
    def x_label_y(self) -> float:
        return self.bottom + 34

    @property
    def middle_x(self) -> float:
        return (self.left + self.right) / 2


def over_time_chart(windows: Sequence[dict], *, width: int = 640, height: int = 240) -> LineChart:
    """Krippendorff's alpha and pairwise agreement per window of first judgments, in id order."""
    left, right, top, bottom = 56.0, width - 20.0, 16.0, height - 48.0
    shown = [w for w in windows if w.get("alpha") or w.get("pairwise_agreement")]
    values = [0.0, 1.0] + [
        bound
        for w in shown
        for key in ("alpha", "pairwise_agreement")
        if w.get(key)
        for bound in (w[key].get("low"), w[key].get("value"))
        if bound is not None
    ]
    lo = max(-1.0, math.floor(min(values) * 5) / 5)

    def px(i):
        return (
            round(left + 16 + (i / max(len(shown) - 1, 1)) * (right - left - 32), 2)
            if len(shown) > 1
            else (left + right) / 2
        )

    def py(v):
        return round(bottom - (max(lo, min(1.0, v)) - lo) / (1.0 - lo) * (bottom - top), 2)

    def series(key, name, kind, fmt):
        points = []
        for i, w in enumerate(shown):
            figure = w.get(key)
            if not figure or figure.get("value") is None:
                continue
            low, high = figure.get("low"), figure.get("high")
            points.append(
                SeriesPoint(
                    x=px(i),
                    y=py(figure["value"]),
                    y_low=py(low) if low is not None else None,
                    y_high=py(high) if high is not None else None,
                    title=f"Window {i + 1} (judgments {w['first_judgment_id']}–{w['last_judgment_id']}, "
                    f"{w['comparisons']} comparisons): {name} {fmt(figure)}",
                )
            )
        return Series(name=name, kind=kind, points=points)

    alphas = [w["alpha"]["value"] for w in shown if w.get("alpha") and w["alpha"].get("value") is not None]
    alpha = series("alpha", "Krippendorff's alpha", "alpha", number_interval)
    agreement = series("pairwise_agreement", "pairwise agreement", "agreement", lambda f: _pct(f["value"]))
    step = max(1, math.ceil(len(shown) / 10))
    ticks = [Tick(px(i), f"#{i + 1}") for i in range(0, len(shown), step)]
    y_values = [lo + k * 0.2 for k in range(int(round((1.0 - lo) / 0.2)) + 1)]
    description = (
        f"Agreement over {len(shown)} consecutive window{'s' if len(shown) != 1 else ''} of judgments, oldest "
        "first, each with its 95% interval. "
        + (
            f"Alpha went from {alphas[0]:.2f} in the first window to {alphas[-1]:.2f} in the last."
            if len(alphas) > 1
            else ""
        )
    )
    return LineChart(
        id="over-time",
        width=width,
        height=height,
        left=left,
        right=right,
        top=top,
        bottom=bottom,
        series=[alpha, agreement],
        x_ticks=ticks,
        y_ticks=[Tick(py(v), f"{v:.1f}") for v in y_values],
        zero_y=py(0.0) if lo < 0 else None,
        x_label="window of judgments (oldest first)",
        title="Agreement over time",
        description=description.strip(),
        empty_message="Not enough judgments yet to follow agreement over time.",
    )


# -- the leaderboard ---------------------------------------------------------------------------------------


def leaderboard_chart(board: Iterable[dict]) -> DotChart:
    """Bradley–Terry ratings with their 95% bootstrap intervals, best first; line at the average (1000)."""
    board = list(board)
    bounds = [row["low"] for row in board] + [row["high"] for row in board] + [1000.0]
    lo, hi, step = _linear_domain(min(bounds), max(bounds))
    items = [
        {
            "label": row["source"],
            "x": row["rating"],
            "low": row["low"],
            "high": row["high"],
            "title": f"#{i + 1} {row['source']}: rating {row['rating']:.0f} (95% interval {row['low']:.0f}–"
            f"{row['high']:.0f}) over {row['comparisons']} comparisons",
        }
        for i, row in enumerate(board)
    ]
    best = board[0] if board else None
    description = (
        f"Bradley–Terry ratings of {len(board)} sources, best first, with 95% bootstrap intervals. 1000 is the "
        "average source; 400 points more means 10:1 odds of being preferred. "
        + (f"Best: {best['source']} at {best['rating']:.0f}." if best else "")
    )
    ticks = [(lo + i * step, f"{lo + i * step:.0f}") for i in range(int(round((hi - lo) / step)) + 1)]
    return _dot_chart(
        id="leaderboard",
        items=items,
        scale=lambda v: (v - lo) / (hi - lo),
        ticks=ticks,
        lines=[(1000.0, "average")],
        x_label="rating (Elo scale)",
        title="Source leaderboard",
        description=description.strip(),
        empty_message="No comparisons between named sources yet.",
    )


# -- scales --------------------------------------------------------------------------------------------


def _linear_domain(low: float, high: float, ticks: int = 6) -> tuple[float, float, float]:
    if high - low < 1.0:  # one value (or none but the reference): a range around it
        low, high = low - 10.0, high + 10.0
    span = high - low
    raw = span / (ticks - 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(s * magnitude for s in _NICE_STEPS if s * magnitude >= raw)
    return math.floor(low / step) * step, math.ceil(high / step) * step, step


def _log_domain(low_ms: float, high_ms: float) -> tuple[float, float]:
    lo = 10 ** math.floor(math.log10(max(low_ms, 1.0)))
    hi = 10 ** math.ceil(math.log10(max(high_ms, lo * 10)))
    return lo, hi


def _log_ticks(lo: float, hi: float) -> list[tuple[float, str]]:
    ticks = []
    decade = lo
    while decade <= hi:
        for m in (1, 2, 5):
            value = decade * m
            if lo <= value <= hi:
                ticks.append((value, _tick_seconds(value)))
        decade *= 10
    return ticks


def _tick_seconds(ms: float) -> str:
    s = ms / 1000
    return f"{s:g} s" if s < 1000 else f"{s / 60:.0f} min"
