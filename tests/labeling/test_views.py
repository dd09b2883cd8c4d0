"""The rater's pages, through Django's test client, checked against the database."""

import re

import pytest
from django.test import Client
from django.urls import reverse

from labeling.forms import now_ms
from labeling.models import Assignment, Comparison, Judgment
from tests.conftest import PASSWORD
from tests.factories import AssignmentFactory, ComparisonFactory, JudgmentFactory, ProjectFactory, ResponseFactory

HTMX = {"HTTP_HX_REQUEST": "true", "HTTP_HX_CURRENT_URL": "http://testserver/projects/demo/label/"}


@pytest.fixture
def alice_client(client, alice):
    client.force_login(alice)
    return client


def comparisons(project, n):
    return [ComparisonFactory(prompt__project=project) for _ in range(n)]


def shown_response_ids(html: str) -> tuple[int, int]:
    left = re.search(r'data-side="left"\s+data-response-id="(\d+)"', html)
    right = re.search(r'data-side="right"\s+data-response-id="(\d+)"', html)
    assert left and right, "both response panels are on the page"
    return int(left.group(1)), int(right.group(1))


def judge_url(project):
    return reverse("labeling:judge", args=[project.slug])


def label_url(project):
    return reverse("labeling:label", args=[project.slug])


# -- access -------------------------------------------------------------------


@pytest.mark.parametrize("url", ["/", "/projects/demo/label/"])
def test_it_sends_anonymous_visitors_to_the_login_page(client, project, url):
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login") + "?next=")


def test_it_stores_nothing_posted_by_an_anonymous_visitor(client, project):
    (comparison,) = comparisons(project, 1)
    response = client.post(judge_url(project), {"comparison_id": comparison.pk, "outcome": "left", "strength": 2})
    assert response.status_code == 302
    assert Judgment.objects.count() == 0


def test_it_redirects_an_expired_htmx_session_to_login_as_a_whole_page(client, project):
    response = client.post(judge_url(project), {"outcome": "left"}, **HTMX)
    assert response.status_code == 200
    assert response["HX-Redirect"] == reverse("login") + "?next=/projects/demo/label/"


def test_it_logs_a_rater_in_through_the_login_form_and_out_with_a_post(client, alice, project):
    page = client.get(reverse("login"))
    assert page.status_code == 200
    assert b'name="password"' in page.content

    response = client.post(reverse("login"), {"username": "alice", "password": PASSWORD})
    assert response.status_code == 302
    assert response["Location"] == reverse("labeling:projects")
    assert b"Log out" in client.get("/").content

    response = client.post(reverse("logout"))
    assert response.status_code == 302
    assert client.get("/").status_code == 302


def test_it_lists_only_the_raters_projects_with_their_progress(alice_client, alice, bob, project):
    first, second, third = comparisons(project, 3)
    JudgmentFactory(comparison=first, rater=alice, outcome="a")
    AssignmentFactory(comparison=second, rater=alice, state=Assignment.State.SKIPPED)
    ProjectFactory(name="Secret", slug="secret").raters.add(bob)

    response = alice_client.get("/")

    html = response.content.decode()
    assert response.status_code == 200
    assert "Demo" in html and "Secret" not in html
    assert re.search(r'data-stat="judged-by-you">1<', html)
    assert re.search(r'data-stat="left-for-you">1<', html)  # one judged, one skipped, one left
    assert label_url(project) in html


def test_it_refuses_another_projects_label_page_and_posts(alice_client, bob):
    other = ProjectFactory(slug="other")
    other.raters.add(bob)
    (comparison,) = comparisons(other, 1)

    assert alice_client.get(label_url(other)).status_code == 404
    post = {"comparison_id": comparison.pk, "outcome": "left", "strength": 2}
    assert alice_client.post(judge_url(other), post).status_code == 404
    skip = alice_client.post(reverse("labeling:skip", args=["other"]), {"comparison_id": comparison.pk})
    assert skip.status_code == 404
    assert not Assignment.objects.filter(comparison=comparison).exists()
    assert Judgment.objects.count() == 0


def test_it_refuses_a_comparison_from_a_project_the_rater_cannot_label(alice_client, bob, project):
    other = ProjectFactory(slug="other")
    other.raters.add(bob)
    (foreign,) = comparisons(other, 1)

    response = alice_client.post(judge_url(project), {"comparison_id": foreign.pk, "outcome": "left", "strength": 2})

    assert response.status_code == 404
    assert Judgment.objects.count() == 0


# -- the label page -----------------------------------------------------------


@pytest.mark.parametrize("left", ["a", "b"])
def test_it_shows_the_leased_pair_in_the_assignments_order(alice_client, alice, project, left):
    (comparison,) = comparisons(project, 1)
    comparison.response_a.text = "Alpha **answer**"
    comparison.response_a.save()
    comparison.response_b.text = "Bravo answer"
    comparison.response_b.save()
    AssignmentFactory(comparison=comparison, rater=alice, left=left)

    response = alice_client.get(label_url(project))

    html = response.content.decode()
    left_id, right_id = shown_response_ids(html)
    a, b = comparison.response_a, comparison.response_b
    expected_left, expected_right = (a, b) if left == "a" else (b, a)
    assert (left_id, right_id) == (expected_left.pk, expected_right.pk)
    assert html.index(expected_left.text.split()[0]) < html.index(expected_right.text.split()[0])
    assert "<strong>answer</strong>" in html  # rendered through the sanitiser
    assert f'name="comparison_id" value="{comparison.pk}"' in html


def test_it_leases_a_comparison_when_the_page_is_shown_and_keeps_it_on_reload(alice_client, alice, project):
    comparisons(project, 3)

    first = alice_client.get(label_url(project)).content.decode()
    second = alice_client.get(label_url(project)).content.decode()

    lease = Assignment.objects.get(rater=alice)
    assert shown_response_ids(first) == shown_response_ids(second) == (lease.left_response.pk, lease.right_response.pk)


def test_it_shows_guidelines_conversation_choices_and_shortcuts(alice_client, alice, project):
    project.guidelines = "Prefer **honest** answers. <script>alert(1)</script>"
    project.allow_both_bad = False
    project.save()
    (comparison,) = comparisons(project, 1)
    comparison.prompt.conversation = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is `2+2`?"},
    ]
    comparison.prompt.save()

    html = alice_client.get(label_url(project)).content.decode()

    assert '<details class="card panel guidelines"' in html and "<strong>honest</strong>" in html
    assert "<script>alert(1)</script>" not in html
    assert "turn--system" in html and "turn--user" in html and "<code>2+2</code>" in html
    assert 'value="left"' in html and 'value="right"' in html and 'value="tie"' in html
    assert 'value="both_bad"' not in html  # the project does not allow it
    assert 'name="criterion_0"' in html and "Helpfulness" in html
    assert 'name="flags" value="unsafe"' in html
    for key in ("<kbd>A</kbd>", "<kbd>←</kbd>", "<kbd>D</kbd>", "<kbd>W</kbd>", "<kbd>Enter</kbd>", "<kbd>K</kbd>"):
        assert key in html
    assert re.search(r'name="strength" value="2"\s+checked', html)  # "clearly" preselected
    assert "/static/django_htmx/htmx-2.min.js" in html and "/static/labeling/label.js" in html
    assert "<script>" not in html  # CSP: no inline script


def test_it_shows_all_done_when_nothing_is_left(alice_client, alice, project):
    (comparison,) = comparisons(project, 1)
    JudgmentFactory(comparison=comparison, rater=alice, outcome="tie")

    html = alice_client.get(label_url(project)).content.decode()

    assert "All done" in html
    assert 'data-state="done"' in html
    assert f'href="{reverse("labeling:projects")}"' in html
    assert 'id="judgment-form"' not in html


# -- judging ------------------------------------------------------------------


def test_it_stores_a_judgment_in_a_b_terms_and_returns_the_next_task_for_htmx(alice_client, alice, project):
    first, second = comparisons(project, 2)
    AssignmentFactory(comparison=first, rater=alice, left="b")  # response_b is on the left

    response = alice_client.post(
        judge_url(project),
        {
            "comparison_id": first.pk,
            "outcome": "left",
            "strength": "3",
            "criterion_0": "left",  # helpfulness
            "criterion_1": "tie",  # harmlessness
            "rationale": "Left is more precise.",
            "flags": ["pii", "other"],
            "time_spent_ms": "12345",
            "shown_at_ms": str(now_ms()),
        },
        **HTMX,
    )

    judgment = Judgment.objects.get(comparison=first, rater=alice)
    assert judgment.left == "b"
    assert judgment.outcome == "b"  # "left" was response_b
    assert judgment.strength == 3
    assert judgment.criteria == {"helpfulness": "b", "harmlessness": "tie"}
    assert judgment.rationale == "Left is more precise."
    assert judgment.flags == ["other", "pii"]
    assert judgment.time_spent_ms == 12345
    assert Assignment.objects.get(comparison=first, rater=alice).state == Assignment.State.SUBMITTED

    html = response.content.decode()
    assert response.status_code == 200
    assert "<html" not in html  # a partial, swapped into #task
    assert f'data-comparison-id="{second.pk}"' in html
    next_lease = Assignment.objects.get(comparison=second, rater=alice, state=Assignment.State.ACTIVE)
    assert shown_response_ids(html) == (next_lease.left_response.pk, next_lease.right_response.pk)
    assert "Saved." in html


def test_it_maps_right_to_the_response_shown_on_the_right(alice_client, alice, project):
    (comparison,) = comparisons(project, 1)
    AssignmentFactory(comparison=comparison, rater=alice, left="a")

    alice_client.post(
        judge_url(project), {"comparison_id": comparison.pk, "outcome": "right", "strength": "1", "time_spent_ms": "5"}
    )

    judgment = Judgment.objects.get()
    assert (judgment.left, judgment.outcome, judgment.strength) == ("a", "b", 1)


def test_it_stores_a_tie_without_a_strength(alice_client, alice, project):
    (comparison,) = comparisons(project, 1)
    AssignmentFactory(comparison=comparison, rater=alice, left="b")

    alice_client.post(
        judge_url(project), {"comparison_id": comparison.pk, "outcome": "tie", "strength": "2", "time_spent_ms": "5"}
    )

    judgment = Judgment.objects.get()
    assert (judgment.outcome, judgment.strength) == ("tie", None)


def test_it_redirects_a_plain_form_post_back_to_the_label_page(alice_client, alice, project):
    (comparison,) = comparisons(project, 1)
    AssignmentFactory(comparison=comparison, rater=alice, left="a")

    response = alice_client.post(
        judge_url(project), {"comparison_id": comparison.pk, "outcome": "both_bad", "time_spent_ms": "5"}
    )

    assert response.status_code == 302
    assert response["Location"] == label_url(project)
    assert Judgment.objects.get().outcome == "both_bad"
    follow = alice_client.get(label_url(project)).content.decode()
    assert "Saved." in follow and "All done" in follow


def test_it_measures_time_from_the_server_clock_when_no_script_ran(alice_client, alice, project):
    (comparison,) = comparisons(project, 1)
    AssignmentFactory(comparison=comparison, rater=alice, left="a")

    alice_client.post(
        judge_url(project),
        {"comparison_id": comparison.pk, "outcome": "left", "strength": "2", "shown_at_ms": str(now_ms() - 7000)},
    )

    assert 7000 <= Judgment.objects.get().time_spent_ms < 60_000


def test_it_shows_errors_next_to_the_form_and_stores_nothing(alice_client, alice, project):
    (comparison,) = comparisons(project, 1)
    AssignmentFactory(comparison=comparison, rater=alice, left="a")

    response = alice_client.post(
        judge_url(project),
        {"comparison_id": comparison.pk, "rationale": "keep me", "flags": ["unsafe"], "criterion_1": "right"},
        **HTMX,
    )

    html = response.content.decode()
    assert response.status_code == 422
    assert 'data-error="outcome"' in html and "Choose which response is better." in html
    assert "keep me</textarea>" in html  # nothing the rater typed is lost
    assert re.search(r'value="unsafe"\s+checked', html)
    assert re.search(r'name="criterion_1" value="right"\s+checked', html)
    assert f'data-comparison-id="{comparison.pk}"' in html
    assert Judgment.objects.count() == 0


def test_it_shows_the_domain_rules_errors_next_to_their_field(alice_client, alice, project):
    (comparison,) = comparisons(project, 1)
    AssignmentFactory(comparison=comparison, rater=alice, left="a")

    # A preference with no strength passes the form but not record_judgment.
    response = alice_client.post(judge_url(project), {"comparison_id": comparison.pk, "outcome": "left"})

    html = response.content.decode()
    assert response.status_code == 422
    assert 'data-error="strength"' in html
    assert "<html" in html  # no htmx: the whole page again, with the errors
    assert Judgment.objects.count() == 0


def test_it_refuses_an_outcome_the_project_does_not_allow(alice_client, alice, project):
    project.allow_ties = False
    project.save()
    (comparison,) = comparisons(project, 1)
    AssignmentFactory(comparison=comparison, rater=alice, left="a")

    response = alice_client.post(judge_url(project), {"comparison_id": comparison.pk, "outcome": "tie"}, **HTMX)

    assert response.status_code == 422
    assert 'data-error="outcome"' in response.content.decode()
    assert Judgment.objects.count() == 0


def test_it_explains_a_lease_conflict_and_offers_the_next_task(alice_client, alice, bob, project):
    full, other = comparisons(project, 2)
    project.overlap = 1
    project.save()
    AssignmentFactory(comparison=full, rater=bob, left="a")  # bob holds the only slot; alice has no lease on it

    response = alice_client.post(
        judge_url(project), {"comparison_id": full.pk, "outcome": "left", "strength": "2", "time_spent_ms": "5"}, **HTMX
    )

    html = response.content.decode()
    assert response.status_code == 409
    assert "You were not assigned this comparison" in html
    assert f'data-comparison-id="{other.pk}"' in html
    assert not Judgment.objects.filter(rater=alice).exists()


def test_a_repeated_post_does_not_store_a_second_judgment(alice_client, alice, project):
    (comparison,) = comparisons(project, 1)
    AssignmentFactory(comparison=comparison, rater=alice, left="a")
    post = {"comparison_id": comparison.pk, "outcome": "left", "strength": "2", "time_spent_ms": "5"}

    alice_client.post(judge_url(project), post, **HTMX)
    response = alice_client.post(judge_url(project), post, **HTMX)

    assert response.status_code == 200
    assert Judgment.objects.count() == 1


def test_judging_runs_a_bounded_number_of_queries(alice_client, alice, project, django_assert_max_num_queries):
    first, _ = comparisons(project, 2)
    AssignmentFactory(comparison=first, rater=alice, left="a")
    post = {"comparison_id": first.pk, "outcome": "left", "strength": "2", "time_spent_ms": "5"}

    # Session, user, project; record (with its savepoint pair); lease the next
    # one; progress (two grouped queries): 19, whatever the table sizes.
    with django_assert_max_num_queries(20):
        alice_client.post(judge_url(project), post, **HTMX)


# -- skipping -----------------------------------------------------------------


def test_it_skips_a_comparison_and_never_offers_it_again(alice_client, alice, project):
    first, second = comparisons(project, 2)
    AssignmentFactory(comparison=first, rater=alice, left="a")

    response = alice_client.post(reverse("labeling:skip", args=[project.slug]), {"comparison_id": first.pk}, **HTMX)

    html = response.content.decode()
    assert response.status_code == 200
    assert Assignment.objects.get(comparison=first, rater=alice).state == Assignment.State.SKIPPED
    assert f'data-comparison-id="{second.pk}"' in html
    assert "Skipped." in html
    assert Judgment.objects.count() == 0

    alice_client.post(reverse("labeling:skip", args=[project.slug]), {"comparison_id": second.pk})
    assert "All done" in alice_client.get(label_url(project)).content.decode()
    assert Comparison.objects.filter(status=Comparison.Status.OPEN).count() == 2


# -- CSRF ---------------------------------------------------------------------


def test_it_refuses_posts_without_a_csrf_token(alice, project):
    (comparison,) = comparisons(project, 1)
    AssignmentFactory(comparison=comparison, rater=alice, left="a")
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    post = {"comparison_id": comparison.pk, "outcome": "left", "strength": "2", "time_spent_ms": "5"}

    assert client.post(judge_url(project), post).status_code == 403
    assert client.post(judge_url(project), post, **HTMX).status_code == 403
    skip = client.post(reverse("labeling:skip", args=[project.slug]), {"comparison_id": comparison.pk})
    assert skip.status_code == 403
    assert Judgment.objects.count() == 0
    assert Assignment.objects.get().state == Assignment.State.ACTIVE


def test_it_accepts_the_csrf_token_the_page_carries_in_its_htmx_headers(alice, project):
    (comparison,) = comparisons(project, 1)
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    html = client.get(label_url(project)).content.decode()
    token = re.search(r'hx-headers=\'\{"X-CSRFToken": "([^"]+)"\}\'', html).group(1)

    response = client.post(
        judge_url(project),
        {"comparison_id": comparison.pk, "outcome": "left", "strength": "2", "time_spent_ms": "5"},
        HTTP_X_CSRFTOKEN=token,
        **HTMX,
    )

    assert response.status_code == 200
    assert Judgment.objects.count() == 1


def test_untrusted_response_text_reaches_the_page_only_sanitised(alice_client, alice, project):
    (comparison,) = comparisons(project, 1)
    evil = ResponseFactory(
        prompt=comparison.prompt,
        text='<img src=x onerror="window.__xss=1"> <script>window.__xss=1</script> [click](javascript:window.__xss=1)',
    )
    comparison.response_a = evil
    comparison.save()

    html = alice_client.get(label_url(project)).content.decode()

    assert "<script>window.__xss" not in html
    assert "<img" not in html
    assert 'href="javascript:' not in html
    assert "&lt;script&gt;window.__xss=1&lt;/script&gt;" in html


def test_a_get_of_the_judge_url_goes_back_to_the_label_page(alice_client, project):
    # A login redirect can carry ?next=.../judge/; it must not end on a 405.
    response = alice_client.get(judge_url(project))
    assert response.status_code == 302
    assert response["Location"] == label_url(project)
