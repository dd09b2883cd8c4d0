"""rewardmodel.charts: the geometry of the accuracy chart, and the SVG it renders to, edge cases included."""

import math
import re
import xml.etree.ElementTree as ET
from types import SimpleNamespace

import pytest
from django.utils import translation

from rewardmodel.charts import accuracy_chart, render_accuracy_chart
from rewardmodel.status import version_row
from tests.rewardmodel.factories import RewardModelVersionFactory

SVG = "{http://www.w3.org/2000/svg}"


def row(version, accuracy=None, *, status="ready", n=400, reference=None, **metrics):
    """The status page's row for an unsaved version with these held-out metrics."""
    if accuracy is not None:
        metrics |= {"accuracy": accuracy, "n": n}
    if reference is not None:
        metrics["reference_accuracy"] = reference
    return version_row(RewardModelVersionFactory.build(version=version, status=status, metrics=metrics), staff=True)


def svg_of(chart) -> ET.Element:
    return ET.fromstring(render_accuracy_chart(chart))


def inside(chart, point) -> bool:
    return chart.left <= point.x <= chart.right and chart.top <= point.y <= chart.bottom


# -- geometry ---------------------------------------------------------------------------


def test_it_scales_versions_along_x_and_accuracy_along_y():
    chart = accuracy_chart([row(3, 0.8, status="active"), row(1, 0.6), row(2, 0.7)], width=640, height=260)

    xs = [p.x for p in chart.points]
    ys = [p.y for p in chart.points]
    assert [p.version for p in chart.points] == [1, 2, 3]
    # Evenly spaced versions, inside the plot area; higher accuracy is higher up (smaller y).
    assert chart.left < xs[0] < xs[1] < xs[2] < chart.right
    assert xs[1] - xs[0] == pytest.approx(xs[2] - xs[1])
    assert chart.bottom > ys[0] > ys[1] > ys[2] > chart.top
    assert ys[0] - ys[1] == pytest.approx(ys[1] - ys[2], abs=0.02)
    # The y axis covers chance (50%) and the points' 95% intervals, with round ticks.
    labels = [t.label for t in chart.y_ticks]
    assert labels[0] == "50%" and labels[-1] in ("90%", "100%")
    assert chart.chance_y == pytest.approx(chart.bottom)
    assert all(p.y_high < p.y < p.y_low for p in chart.points)
    # The active version is the one highlighted.
    assert [p.active for p in chart.points] == [False, False, True]
    assert [t.label for t in chart.x_ticks] == ["v1", "v2", "v3"]


def test_it_puts_a_single_version_in_the_middle():
    chart = accuracy_chart([row(1, 0.62)])
    assert chart.points[0].x == pytest.approx(chart.middle_x)
    assert [t.label for t in chart.x_ticks] == ["v1"]


def test_it_spaces_versions_by_number_not_by_position():
    chart = accuracy_chart([row(1, 0.6), row(2, 0.6), row(10, 0.6)])
    x1, x2, x10 = (p.x for p in chart.points)
    assert x10 - x2 == pytest.approx(8 * (x2 - x1), abs=0.05)  # positions are rounded to 0.01 px


def test_it_thins_out_version_ticks_and_always_labels_the_last():
    chart = accuracy_chart([row(n, 0.6 + n / 1000) for n in range(1, 61)])
    assert len(chart.points) == 60
    assert len(chart.x_ticks) <= 13 and chart.x_ticks[-1].label == "v60"


def test_it_draws_a_flat_history_in_a_range_of_its_own():
    chart = accuracy_chart([row(n, 0.5, n=10_000) for n in (1, 2, 3)])
    assert len({p.y for p in chart.points}) == 1
    assert len(chart.y_ticks) >= 2 and all(inside(chart, p) for p in chart.points)


@pytest.mark.parametrize("accuracy", [0.0, 1.0])
def test_it_keeps_perfect_and_hopeless_accuracy_and_their_intervals_on_the_plot(accuracy):
    chart = accuracy_chart([row(1, accuracy, n=3), row(2, 0.55, n=3)])
    assert all(inside(chart, p) for p in chart.points)
    labels = [t.label for t in chart.y_ticks]
    assert ("100%" if accuracy else "0%") in labels
    for point in chart.points:
        assert point.y_low is None or chart.top <= point.y_high <= point.y_low <= chart.bottom


def test_a_version_without_n_gets_no_interval():
    chart = accuracy_chart([row(1, 0.6, n=None)])
    point = chart.points[0]
    assert point.y_low is None and point.y_high is None
    assert point.label == "v1: 60.0% held-out accuracy"


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, True, "0.7", None])
def test_it_leaves_out_accuracies_that_are_not_finite_numbers(bad):
    weird = version_row(
        RewardModelVersionFactory.build(version=3, status="ready", metrics={"accuracy": bad, "n": 100}), staff=True
    )
    chart = accuracy_chart([row(1, 0.6), weird])
    html = render_accuracy_chart(chart).lower()
    assert [p.version for p in chart.points] == [1]
    assert "nan" not in html and "inf" not in html


def test_it_marks_the_active_version_on_the_reference_line_only_without_a_held_out_point():
    chart = accuracy_chart([row(1, 0.6, reference=0.7, status="active"), row(2, reference=0.72)])
    assert [p.active for p in chart.points] == [True]
    assert [p.active for p in chart.reference_points] == [False, False]


# -- the SVG -------------------------------------------------------------------------------


def test_it_renders_well_formed_accessible_svg():
    rows = [row(1, 0.55), row(2, 0.61, reference=0.7), row(4, 0.66, status="active")]
    rows.append(version_row(RewardModelVersionFactory.build(version=3, status="failed"), staff=True))

    svg = svg_of(accuracy_chart(rows))

    assert svg.tag == f"{SVG}svg" and svg.get("role") == "img"
    assert svg.find(f"{SVG}title").text == "Held-out accuracy by reward-model version"
    description = svg.find(f"{SVG}desc").text
    assert "3 evaluated versions" in description and "Active: v4 at 66.0%" in description
    points = svg.findall(f".//{SVG}g[@data-version]")
    assert [p.get("data-version") for p in points] == ["1", "2", "4"]  # the failed v3 has no point
    assert [p.find(f"{SVG}title").text for p in points][2].endswith("— active")
    assert len(svg.findall(f".//{SVG}polyline")) == 2  # accuracy, reference labels


def test_it_sizes_the_drawing_as_asked():
    svg = svg_of(accuracy_chart([row(1, 0.6), row(2, 0.7)], width=320, height=180))
    assert svg.get("viewBox") == "0 0 320 180"


def test_its_numbers_stay_svg_numbers_in_any_language():
    chart = accuracy_chart([row(1, 0.612), row(2, 0.655)])
    with translation.override("de"):
        html = render_accuracy_chart(chart)
    coordinates = re.findall(r' (?:x|y|cx|cy|x1|x2|y1|y2)="([^"]*)"', html)
    assert coordinates and all("," not in c for c in coordinates)
    ET.fromstring(html)


def test_a_project_with_only_reference_labels_gets_the_reference_line():
    # Bootstrapped from an imported dataset: no rater held-out accuracy yet, only agreement with the labels.
    rows = [row(1, reference=0.58, reference_n=333), row(2, reference=0.60, reference_n=333, status="active")]

    chart = accuracy_chart(rows)
    svg = svg_of(chart)

    assert not chart.empty and chart.points == []
    assert [(p.version, p.active) for p in chart.reference_points] == [(1, False), (2, True)]
    assert chart.reference_points[1].y < chart.reference_points[0].y  # 60% above 58%
    assert "No version has a held-out accuracy" in chart.description and "Active: v2 at 60.0%" in chart.description
    assert len(svg.findall(f".//{SVG}polyline")) == 1  # the reference line alone
    titles = [c.find(f"{SVG}title").text for c in svg.findall(f".//{SVG}circle")]
    assert titles[1] == "v2: 60.0% agreement with the imported reference labels — active"


def test_without_versions_it_says_so_instead_of_drawing():
    empty = accuracy_chart([])
    assert empty.empty
    assert "No versions yet" in render_accuracy_chart(empty)
    assert "<svg" not in render_accuracy_chart(empty)
    unevaluated = accuracy_chart([SimpleNamespace(version=1, status="failed", accuracy=None, n=None)])
    assert "No evaluated versions yet" in render_accuracy_chart(unevaluated)


def test_a_version_on_one_pair_gets_a_wilson_interval_not_a_collapsed_one():
    # The normal approximation gave "0.0% ±0.0" here (the demo after its first ten judgments).
    chart = accuracy_chart([row(1, 0.0, n=1)])
    point = chart.points[0]
    assert point.y_low is not None and point.y_high < point.y_low  # an interval with a height
    assert "too few pairs to judge: n=1" in point.label
    assert "0.0%–79.3%" in point.label  # Wilson's 95% interval of 0/1 is [0, 0.7935]
