"""The raters page, its CSV and the source leaderboard: what managers see, what everyone else is refused, and
the Compute now, Pause/Resume and Exclude/Include buttons."""

import base64
import csv
import io
import json
import re
import time

import pytest
from django.conf import settings as django_settings
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from config.broker import filesystem_transport_options
from labeling.models import RaterAction, RaterStanding
from labeling.quality import service
from labeling.quality.views import csv_header
from tests.brokers import use_broker
from tests.factories import ComparisonFactory, JudgmentFactory, UserFactory
from tests.labeling.quality.conftest import ROUNDS
from tests.labeling.quality.judged import grant

pytestmark = pytest.mark.django_db


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def raters_url(project, **query):
    url = reverse("quality:raters", args=[project.slug])
    return url + ("?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else "")


def row_order(html: str) -> list[str]:
    return re.findall(r'<tr class="q-row[^"]*" data-rater="([^"]+)"', html)


# -- the raters page ----------------------------------------------------------------------------------


def test_a_manager_sees_every_rater_with_intervals_flags_and_the_project_figures(computed, maria):
    response = client_for(maria).get(raters_url(computed))

    assert response.status_code == 200
    html = response.content.decode()
    assert sorted(row_order(html)) == ["alice", "bob", "carol"]
    # carol picked the left response in all 12 decisive answers: shown with its interval, and flagged in words.
    assert '100% <span class="q-ci">(76–100%, n=12), p = 0.00049</span>' in html
    assert "Chose the response shown on the left in 12 of 12 decisive answers" in html
    assert 'data-flag="position_bias"' in html
    # bob has no repeats: too few to judge, not a number.
    bob_row = re.search(r'data-rater="bob">(.*?)</tr>', html, re.S).group(1)
    assert re.search(r'data-cell="self_consistency">too few to judge<', bob_row)
    # The project's figures, with the time they were computed.
    figures = service.project_figures(project=computed).figures
    assert f"{figures['alpha']['value']:.2f} ({figures['alpha']['low']:.2f}–{figures['alpha']['high']:.2f})" in html
    assert "rater pairs)" in html and "Alpha: helpfulness" in html
    assert 'data-field="computed-at"' in html
    assert "Nothing computed yet" not in html


def test_the_page_draws_the_three_plots_with_words_for_screen_readers(computed, maria):
    html = client_for(maria).get(raters_url(computed)).content.decode()

    for chart in ("position-bias", "gold-agreement", "time", "over-time"):
        assert f'data-chart="{chart}"' in html, chart
    svgs = re.findall(r"<svg [^>]*data-chart=\"([^\"]+)\"[^>]*>.*?</svg>", html, re.S)
    assert set(svgs) == {"position-bias", "gold-agreement", "time", "over-time"}
    assert '<title id="q-position-bias-title">Position bias per rater</title>' in html
    assert "Intervals that exclude 50%: carol." in html
    # One interval bar per rater, a reference line at 50%.
    bias = re.search(r'data-chart="position-bias">(.*?)</svg>', html, re.S).group(1)
    assert bias.count('class="q-chart__bar"') == 3 and ">50%</text>" in bias
    assert "<title>carol: left response chosen in 100% (76–100%, n=12), p = 0.000488</title>" in bias
    scatter = re.search(r'data-chart="gold-agreement">(.*?)</svg>', html, re.S).group(1)
    # Only carol has ten majority checks (alice and bob agree with each other only where she does).
    assert (
        "<title>carol: gold accuracy 50% (24–76%, n=10); agreement with the other raters 50% (24–76%, n=10)" in scatter
    )
    assert "2 raters not plotted (too few gold answers or majority checks)" in html
    timing = re.search(r'data-chart="time">(.*?)</svg>', html, re.S).group(1)
    assert "too fast: 3.0 s" in timing and "log scale" in timing


def test_the_page_uses_no_inline_script_or_style(computed, maria):
    response = client_for(maria).get(raters_url(computed))

    html = response.content.decode()
    assert not re.search(r"<script(?![^>]*\bsrc=)", html)
    assert " style=" not in html and "<style" not in html
    assert "script-src 'self'" in response["Content-Security-Policy"]


@pytest.mark.parametrize(
    "sort,expected",
    [
        ("rater", ["alice", "bob", "carol"]),
        ("-rater", ["carol", "bob", "alice"]),
        ("-position_bias", ["carol", "bob", "alice"]),
        ("-judgments", ["alice", "bob", "carol"]),
        ("flags", ["alice", "bob", "carol"]),
        ("-flags", ["carol", "alice", "bob"]),
    ],
)
def test_clicking_a_heading_sorts_the_table_on_the_server(computed, maria, sort, expected):
    html = client_for(maria).get(raters_url(computed, sort=sort)).content.decode()

    assert row_order(html) == expected


def test_a_heading_links_to_the_other_direction_once_sorted_by_it(computed, maria):
    html = client_for(maria).get(raters_url(computed, sort="agreement")).content.decode()

    assert re.search(
        r'<th scope="col" aria-sort="ascending" data-column="agreement">\s*<a href="\?sort=-agreement"', html
    )
    assert '<a href="?sort=-reliability"' in html  # other columns start with their first direction


def test_an_unknown_sort_key_is_ignored(computed, maria):
    default = row_order(client_for(maria).get(raters_url(computed)).content.decode())

    response = client_for(maria).get(raters_url(computed, sort="rater__password"))

    assert response.status_code == 200
    assert row_order(response.content.decode()) == default
    assert "aria-sort" not in response.content.decode()


def test_a_page_with_nothing_computed_says_so_and_offers_compute_now(project, maria):
    for name in ("raters", "leaderboard"):
        html = client_for(maria).get(reverse(f"quality:{name}", args=[project.slug])).content.decode()
        assert "Nothing computed yet" in html
        assert 'data-action="compute"' in html


def test_the_page_takes_the_same_queries_whatever_the_number_of_raters(
    project, maria, django_assert_max_num_queries, django_assert_num_queries
):
    def judge(n):
        for i in range(n):
            comparison = ComparisonFactory(prompt__project=project)
            JudgmentFactory(comparison=comparison, rater=UserFactory(username=f"r{n}-{i}"), outcome="a")
        service.compute_quality(project=project, n_bootstrap=ROUNDS)

    client = client_for(maria)
    judge(2)
    with django_assert_max_num_queries(20) as few:
        client.get(raters_url(project))
    judge(20)
    with django_assert_num_queries(len(few.captured_queries)):
        assert client.get(raters_url(project)).status_code == 200


# -- compute now ----------------------------------------------------------------------------------------


@pytest.fixture
def broker(tmp_path):
    folder = tmp_path / "broker"
    with use_broker("filesystem://", filesystem_transport_options(folder)):
        yield folder / "queue"


def published(folder):
    return [json.loads(base64.b64decode(json.loads(path.read_text())["body"]))[0] for path in sorted(folder.iterdir())]


def test_compute_now_hands_the_computation_to_a_worker(project, maria, broker):
    response = client_for(maria).post(
        reverse("quality:compute", args=[project.slug]), {"back": "leaderboard"}, follow=True
    )

    assert response.redirect_chain[-1][0] == reverse("quality:leaderboard", args=[project.slug])
    assert "Recomputing" in response.content.decode()
    assert published(broker) == [[project.pk]]


def test_compute_now_with_the_broker_down_says_so_at_once(project, maria):
    with use_broker("redis://127.0.0.1:1/0", django_settings.REDIS_BROKER_TRANSPORT_OPTIONS):
        started = time.monotonic()
        response = client_for(maria).post(reverse("quality:compute", args=[project.slug]), follow=True)

    assert time.monotonic() - started < 10
    assert response.status_code == 200
    assert "The figures were not recomputed: the task queue could not be reached" in response.content.decode()


def test_compute_now_needs_the_permission(project, alice):
    assert client_for(alice).post(reverse("quality:compute", args=[project.slug])).status_code == 403


# -- the CSV ----------------------------------------------------------------------------------------------


def test_the_csv_has_the_same_rows_as_the_api(computed, maria):
    response = client_for(maria).get(reverse("quality:raters-csv", args=[computed.slug]))

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert response["Content-Disposition"] == 'attachment; filename="demo-raters.csv"'
    table = list(csv.reader(io.StringIO(response.content.decode())))
    assert table[0] == csv_header()
    api = APIClient()
    api.force_login(maria)
    rows = api.get(f"/api/projects/{computed.pk}/raters/").json()
    assert [line[0] for line in table[1:]] == [row["rater"] for row in rows]
    for line, row in zip(table[1:], rows, strict=True):
        cells = dict(zip(table[0], line, strict=True))
        assert int(cells["judgments"]) == row["judgments"]
        for name in ("gold_accuracy", "agreement", "position_bias", "self_consistency", "too_fast_share"):
            if row[name] is None:
                assert cells[f"{name}_value"] == cells[f"{name}_n"] == ""
            else:
                assert float(cells[f"{name}_value"]) == row[name]["value"]
                assert (float(cells[f"{name}_low"]), float(cells[f"{name}_high"])) == (
                    row[name]["low"],
                    row[name]["high"],
                )
                assert int(cells[f"{name}_n"]) == row[name]["n"]
        assert cells["reliability"] == ("" if row["reliability"] is None else repr(row["reliability"]))
        assert cells["flags"] == ";".join(flag["kind"] for flag in row["flags"])
        assert (cells["paused"], cells["excluded"]) == ("false", "false")


def test_the_csv_defuses_a_username_a_spreadsheet_would_run_as_a_formula(project, maria):
    rater = UserFactory(username="-2+3")
    JudgmentFactory(comparison=ComparisonFactory(prompt__project=project), rater=rater)
    service.compute_quality(project=project, n_bootstrap=ROUNDS)

    table = list(
        csv.reader(io.StringIO(client_for(maria).get(f"/projects/{project.slug}/raters.csv").content.decode()))
    )

    assert table[1][0] == "'-2+3"


# -- the leaderboard page -----------------------------------------------------------------------------------


def test_the_leaderboard_page_ranks_sources_with_intervals_and_says_how(project, alice, bob, maria):
    for source_a, source_b, winner in [("strong", "<script>alert(1)</script>", "a")] * 6 + [
        ("strong", "plain", "a")
    ] * 3:
        comparison = ComparisonFactory(
            prompt__project=project, response_a__source=source_a, response_b__source=source_b
        )
        JudgmentFactory(comparison=comparison, rater=alice, outcome=winner)
        JudgmentFactory(comparison=comparison, rater=bob, outcome="tie")
    service.compute_quality(project=project, n_bootstrap=ROUNDS)

    html = client_for(maria).get(reverse("quality:leaderboard", args=[project.slug])).content.decode()

    assert re.findall(r'<tr data-source="([^"]+)">', html)[0] == "strong"
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html  # in the table and in the plot, escaped
    assert 'data-chart="leaderboard"' in html and "<title>#1 strong: rating" in html
    assert "A tie or “both are bad” counts as half a win for each side (9 such judgments)" in html
    assert f"{ROUNDS} bootstrap rounds" in html
    assert "fitted to 18 first judgments" in html


# -- who may ------------------------------------------------------------------------------------------------

MANAGER_PAGES = ["quality:raters", "quality:raters-csv", "quality:leaderboard"]


@pytest.mark.parametrize("name", MANAGER_PAGES)
def test_a_rater_of_the_project_is_refused_the_managers_pages(computed, alice, name):
    response = client_for(alice).get(reverse(name, args=[computed.slug]))

    assert response.status_code == 403
    assert b"bob" not in response.content


@pytest.mark.parametrize("name", MANAGER_PAGES)
def test_someone_outside_the_project_does_not_learn_it_exists(computed, name):
    stranger = grant(UserFactory(username="stranger"), "view_rater_quality", "manage_raters")

    assert client_for(stranger).get(reverse(name, args=[computed.slug])).status_code == 404


@pytest.mark.parametrize("name", MANAGER_PAGES)
def test_staff_status_alone_opens_no_managers_page(computed, name):
    clerk = UserFactory(username="clerk", is_staff=True)

    assert client_for(clerk).get(reverse(name, args=[computed.slug])).status_code == 404


def test_the_view_permission_alone_shows_the_page_without_the_buttons(computed):
    viewer = grant(UserFactory(username="vera", is_staff=True), "view_rater_quality")
    computed.managers.add(viewer)

    html = client_for(viewer).get(raters_url(computed)).content.decode()

    assert 'data-rater="carol"' in html
    assert 'data-action="pause"' not in html and 'data-action="exclude"' not in html


def test_a_login_is_needed(computed):
    response = Client().get(raters_url(computed))

    assert response.status_code == 302 and response["Location"].startswith("/login/")


def test_managers_get_links_to_the_raters_and_the_leaderboard(project, maria, alice):
    assert 'data-link="raters"' in client_for(maria).get("/").content.decode()
    assert 'data-link="raters"' not in client_for(alice).get("/").content.decode()


# -- pause and exclude ---------------------------------------------------------------------------------------


def action_url(project, rater, action):
    return reverse(f"quality:rater-{action}", args=[project.slug, rater.username])


def test_a_manager_pauses_and_excludes_a_rater_and_the_database_records_who_and_when(computed, carol, maria):
    client = client_for(maria)

    paused = client.post(action_url(computed, carol, "pause"), {"reason": "Always left", "sort": "-flags"})
    excluded = client.post(action_url(computed, carol, "exclude"), {"reason": "Always left"}, follow=True)

    assert paused.status_code == 302 and paused["Location"] == raters_url(computed, sort="-flags")
    standing = RaterStanding.objects.get(project=computed, rater=carol)
    assert standing.paused and standing.excluded
    actions = list(RaterAction.objects.filter(project=computed, rater=carol).order_by("at", "pk"))
    assert [(a.action, a.by, a.reason) for a in actions] == [
        ("pause", maria, "Always left"),
        ("exclude", maria, "Always left"),
    ]
    assert all(a.at is not None for a in actions)
    html = excluded.content.decode()
    assert "carol&#x27;s judgments are now left out of training and export" in html
    carol_row = re.search(r'data-rater="carol">(.*?)</tr>', html, re.S).group(1)
    assert 'data-badge="paused"' in carol_row and 'data-badge="excluded"' in carol_row
    assert 'data-action="resume"' in html and 'data-action="include"' in html


def test_resume_and_include_undo_them_and_are_recorded_too(computed, carol, maria):
    client = client_for(maria)
    for action in ("pause", "exclude", "resume", "include"):
        client.post(action_url(computed, carol, action))

    standing = RaterStanding.objects.get(project=computed, rater=carol)
    assert not standing.paused and not standing.excluded
    assert list(RaterAction.objects.filter(rater=carol).order_by("pk").values_list("action", flat=True)) == [
        "pause",
        "exclude",
        "resume",
        "include",
    ]


def test_asking_for_the_state_a_rater_is_in_changes_nothing(computed, carol, maria):
    response = client_for(maria).post(action_url(computed, carol, "resume"), follow=True)

    assert "carol was not paused; nothing changed." in response.content.decode()
    assert not RaterAction.objects.exists()


@pytest.mark.parametrize("action", ["pause", "resume", "exclude", "include"])
def test_a_manager_without_the_permission_cannot_pause_or_exclude(computed, carol, action):
    clerk = grant(UserFactory(username="clerk", is_staff=True), "view_rater_quality")
    computed.managers.add(clerk)

    response = client_for(clerk).post(action_url(computed, carol, action), {"reason": "no"})

    assert response.status_code == 403
    assert not RaterStanding.objects.exists() and not RaterAction.objects.exists()


def test_a_rater_cannot_pause_another(computed, alice, carol):
    assert client_for(alice).post(action_url(computed, carol, "pause")).status_code == 403
    assert not RaterStanding.objects.exists()


def test_an_unknown_rater_is_not_found(computed, maria):
    outsider = UserFactory(username="outsider")

    assert client_for(maria).post(action_url(computed, outsider, "pause")).status_code == 404
    assert not RaterStanding.objects.exists()


def test_the_buttons_need_the_csrf_token(computed, carol, maria):
    client = Client(enforce_csrf_checks=True)
    client.force_login(maria)

    assert client.post(action_url(computed, carol, "pause")).status_code == 403
    assert client.post(reverse("quality:compute", args=[computed.slug])).status_code == 403
    assert not RaterStanding.objects.exists()


def test_the_buttons_refuse_get(computed, carol, maria):
    assert client_for(maria).get(action_url(computed, carol, "pause")).status_code == 405
    assert not RaterStanding.objects.exists()
