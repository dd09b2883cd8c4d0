"""The rater-quality API (labeling/quality/api.py): the raters list contract, the leaderboard, and the four
actions on a rater."""

import numpy as np
import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from labeling.models import RaterAction, RaterStanding
from labeling.quality import service
from tests.factories import ComparisonFactory, JudgmentFactory, PromptFactory, ResponseFactory, UserFactory
from tests.labeling.quality.conftest import ROUNDS
from tests.labeling.quality.judged import grant

pytestmark = pytest.mark.django_db

CONTRACT = {
    "rater",
    "judgments",
    "gold_accuracy",
    "agreement",
    "position_bias",
    "self_consistency",
    "reliability",
    "flags",
    "paused",
    "excluded",
}
INTERVAL = {"value", "low", "high", "n"}


def api(user) -> APIClient:
    client = APIClient()
    client.force_login(user)
    return client


def raters_url(project):
    return f"/api/projects/{project.pk}/raters/"


# -- the raters list ----------------------------------------------------------------------------------


def test_a_manager_gets_every_rater_with_the_contract_keys_best_known_first(computed, maria):
    response = api(maria).get(raters_url(computed))

    assert response.status_code == 200
    rows = response.json()
    assert [row["rater"] for row in rows] == [row["rater"] for row in service.quality_rows(project=computed)]
    assert sorted(row["rater"] for row in rows) == ["alice", "bob", "carol"]
    reliabilities = [row["reliability"] for row in rows]
    assert reliabilities == sorted(reliabilities, reverse=True)
    for row in rows:
        assert CONTRACT <= set(row)
        assert isinstance(row["judgments"], int) and isinstance(row["reliability"], float)
        assert isinstance(row["paused"], bool) and isinstance(row["excluded"], bool)
        for name in ("gold_accuracy", "agreement", "self_consistency"):
            assert row[name] is None or set(row[name]) == INTERVAL, (row["rater"], name)
        assert row["position_bias"] is None or set(row["position_bias"]) == INTERVAL | {"p_value"}
        assert all(set(flag) == {"kind", "reason"} for flag in row["flags"])
    carol = next(row for row in rows if row["rater"] == "carol")
    assert carol["position_bias"]["value"] == 1.0 and carol["position_bias"]["n"] == 12
    assert carol["position_bias"]["low"] < 1.0 and carol["position_bias"]["p_value"] < 0.001
    assert [flag["kind"] for flag in carol["flags"]] == ["position_bias", "speed"]  # and 0.9 s per answer
    assert "12 of 12 decisive answers" in carol["flags"][0]["reason"]
    alice = next(row for row in rows if row["rater"] == "alice")
    assert alice["gold_accuracy"] == {"value": 1.0, "low": pytest.approx(0.7225, abs=1e-3), "high": 1.0, "n": 10}
    assert alice["self_consistency"]["value"] == 1.0 and alice["self_consistency"]["n"] == 10
    bob = next(row for row in rows if row["rater"] == "bob")
    assert bob["self_consistency"] is None  # no repeats: too little data


def test_the_rows_carry_the_extra_figures_too(computed, maria):
    alice = next(row for row in api(maria).get(raters_url(computed)).json() if row["rater"] == "alice")

    assert alice["comparisons"] == 12 and alice["judgments"] == 22
    assert set(alice["tie_rate"]) == INTERVAL and alice["tie_rate"]["value"] == 0.0
    assert alice["too_fast_share"]["value"] == 0.0
    assert alice["active_time_ms"] == sum(5000 + 100 * i for i in range(12)) + 10 * 4000
    assert alice["median_time_ms"] > alice["p10_time_ms"] > 0


def test_paused_and_excluded_are_read_live(computed, maria, carol):
    service.apply_rater_action(project=computed, rater=carol, action="exclude", by=maria)

    carol_row = next(row for row in api(maria).get(raters_url(computed)).json() if row["rater"] == "carol")

    assert (carol_row["paused"], carol_row["excluded"]) == (False, True)


def test_a_rater_gets_only_their_own_row(computed, alice, maria):
    response = api(alice).get(raters_url(computed))

    assert response.status_code == 200
    rows = response.json()
    assert [row["rater"] for row in rows] == ["alice"]
    managers_view = next(row for row in api(maria).get(raters_url(computed)).json() if row["rater"] == "alice")
    assert rows[0] == managers_view
    body = response.content.decode()
    assert "bob" not in body and "carol" not in body


def test_a_rater_gets_an_empty_list_before_any_computation(project, alice):
    assert api(alice).get(raters_url(project)).json() == []


def test_staff_status_alone_finds_no_project(computed):
    clerk = UserFactory(username="clerk", is_staff=True)

    assert api(clerk).get(raters_url(computed)).status_code == 404


def test_someone_outside_the_project_gets_404(computed):
    stranger = grant(UserFactory(username="stranger"), "view_rater_quality")

    assert api(stranger).get(raters_url(computed)).status_code == 404
    assert api(stranger).get(f"/api/projects/{computed.pk}/leaderboard/").status_code == 404


def test_it_answers_the_same_few_queries_whatever_the_number_of_raters(project, maria, django_assert_max_num_queries):
    for i in range(25):
        JudgmentFactory(comparison=ComparisonFactory(prompt__project=project), rater=UserFactory(username=f"r{i}"))
    service.compute_quality(project=project, n_bootstrap=ROUNDS)

    client = api(maria)

    with django_assert_max_num_queries(8):
        assert len(client.get(raters_url(project)).json()) == 25


def test_it_needs_a_login(computed):
    response = APIClient().get(raters_url(computed))

    assert response.status_code == 401


# -- the leaderboard ------------------------------------------------------------------------------------


def bradley_terry_project(project, raters, strengths: dict[str, float], matches: int, seed: int = 0):
    """`matches` comparisons between random pairs of sources, each judged by one of raters with the odds of a
    Bradley–Terry model of these log-strengths (a tenth of them ties)."""
    rng = np.random.default_rng(seed)
    names = list(strengths)
    for i in range(matches):
        a, b = rng.choice(len(names), size=2, replace=False)
        prompt = PromptFactory(project=project)
        comparison = ComparisonFactory(
            prompt=prompt,
            project=project,
            response_a=ResponseFactory(prompt=prompt, source=names[a]),
            response_b=ResponseFactory(prompt=prompt, source=names[b]),
        )
        p_a = 1 / (1 + np.exp(strengths[names[b]] - strengths[names[a]]))
        outcome = "tie" if rng.random() < 0.1 else "a" if rng.random() < p_a else "b"
        JudgmentFactory(comparison=comparison, rater=raters[i % len(raters)], outcome=outcome)


def test_the_leaderboard_ranks_sources_of_known_strengths_in_order_with_the_exact_keys(project, alice, bob, maria):
    strengths = {"strong": 1.5, "good": 0.5, "fair": -0.5, "weak": -1.5}
    bradley_terry_project(project, [alice, bob], strengths, matches=240)
    service.compute_quality(project=project, n_bootstrap=ROUNDS)

    response = api(maria).get(f"/api/projects/{project.pk}/leaderboard/")

    assert response.status_code == 200
    board = response.json()
    assert [row["source"] for row in board] == ["strong", "good", "fair", "weak"]
    assert all(set(row) == {"source", "rating", "low", "high", "comparisons"} for row in board)
    assert all(row["low"] <= row["rating"] <= row["high"] for row in board)
    assert sum(row["comparisons"] for row in board) == 2 * 240
    assert board[0]["low"] > board[-1]["high"]  # the extremes are clearly apart


def test_the_leaderboard_is_empty_before_any_computation(project, maria):
    assert api(maria).get(f"/api/projects/{project.pk}/leaderboard/").json() == []


@pytest.mark.parametrize("staff", [False, True])
def test_the_leaderboard_needs_the_view_permission(computed, staff):
    member = UserFactory(username="member", is_staff=staff)
    computed.raters.add(member)

    response = api(member).get(f"/api/projects/{computed.pk}/leaderboard/")

    assert response.status_code == 403
    assert "big" not in response.content.decode()


# -- pause, resume, exclude, include ---------------------------------------------------------------------


def action(project, rater, name):
    return f"/api/projects/{project.pk}/raters/{rater.username}/{name}/"


@pytest.mark.parametrize(
    "name,paused,excluded",
    [("pause", True, False), ("exclude", False, True)],
)
def test_a_manager_pauses_or_excludes_a_rater_with_a_reason(computed, maria, carol, name, paused, excluded):
    response = api(maria).post(action(computed, carol, name), {"reason": "Always picks the left"}, format="json")

    assert response.status_code == 200
    assert response.json() == {"rater": "carol", "paused": paused, "excluded": excluded}
    standing = RaterStanding.objects.get(project=computed, rater=carol)
    assert (standing.paused, standing.excluded) == (paused, excluded)
    record = RaterAction.objects.get(project=computed, rater=carol)
    assert (record.action, record.by, record.reason) == (name, maria, "Always picks the left")
    assert record.at is not None


def test_resume_and_include_undo_them(computed, maria, carol):
    client = api(maria)
    client.post(action(computed, carol, "pause"), format="json")
    client.post(action(computed, carol, "exclude"), format="json")

    assert client.post(action(computed, carol, "resume"), {}, format="json").json()["paused"] is False
    answer = client.post(action(computed, carol, "include"), format="json")

    assert answer.json() == {"rater": "carol", "paused": False, "excluded": False}
    assert list(RaterAction.objects.order_by("pk").values_list("action", flat=True)) == [
        "pause",
        "exclude",
        "resume",
        "include",
    ]


def test_a_rater_who_has_not_judged_yet_but_is_a_member_can_be_paused(project, maria, alice):
    assert api(maria).post(action(project, alice, "pause"), format="json").json()["paused"] is True


@pytest.mark.parametrize("name", ["pause", "resume", "exclude", "include"])
def test_a_manager_without_manage_raters_gets_403_and_changes_nothing(computed, carol, name):
    clerk = grant(UserFactory(username="clerk", is_staff=True), "view_rater_quality")
    computed.managers.add(clerk)

    response = api(clerk).post(action(computed, carol, name), format="json")

    assert response.status_code == 403
    assert not RaterStanding.objects.exists() and not RaterAction.objects.exists()


def test_a_rater_may_not_pause_anyone(computed, alice, carol):
    assert api(alice).post(action(computed, carol, "pause"), format="json").status_code == 403
    assert api(alice).post(action(computed, alice, "resume"), format="json").status_code == 403


def test_an_unknown_rater_or_project_is_not_found(computed, maria, carol):
    outsider = UserFactory(username="outsider")

    assert api(maria).post(action(computed, outsider, "pause"), format="json").status_code == 404
    assert api(maria).post(f"/api/projects/{computed.pk}/raters/nobody/pause/", format="json").status_code == 404
    assert api(maria).post(f"/api/projects/{10**9}/raters/carol/pause/", format="json").status_code == 404
    assert not RaterStanding.objects.exists()


def test_a_reason_that_is_too_long_is_a_field_error(computed, maria, carol):
    response = api(maria).post(action(computed, carol, "pause"), {"reason": "x" * 2001}, format="json")

    assert response.status_code == 400
    assert "reason" in response.json()
    assert not RaterStanding.objects.exists()


def test_a_token_works_and_a_session_must_carry_the_csrf_token(computed, maria, carol):
    with_token = APIClient(enforce_csrf_checks=True)
    with_token.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=maria).key}")
    session = APIClient(enforce_csrf_checks=True)
    session.force_login(maria)

    assert session.post(action(computed, carol, "pause"), format="json").status_code == 403
    assert not RaterStanding.objects.exists()
    assert with_token.post(action(computed, carol, "pause"), format="json").status_code == 200
    assert RaterStanding.objects.get(rater=carol).paused


def test_flag_kinds_are_the_ones_the_report_gives():
    # The API's choices and the page's titles name exactly the kinds of flag the report can produce.
    from labeling.quality.api import RaterFlagSerializer
    from labeling.quality.report import FLAG_KINDS
    from labeling.quality.views import FLAG_TITLES

    assert set(RaterFlagSerializer().fields["kind"].choices) == set(FLAG_KINDS) == set(FLAG_TITLES)
