"""The label page in a real browser: keyboard-only judging, and hostile model output."""

import pytest
from playwright.sync_api import expect

from labeling.models import Assignment, Comparison, Judgment
from tests.conftest import PASSWORD
from tests.factories import ComparisonFactory, ProjectFactory, ResponseFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def log_in(page, live_server, username):
    page.goto(live_server.url + "/")
    expect(page).to_have_url(live_server.url + "/login/?next=/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Your projects")).to_be_visible()


def watch(page, live_server):
    """Collect every request, script error and console error the page makes."""
    seen = {"requests": [], "errors": []}
    page.on("request", lambda request: seen["requests"].append(request.url))
    page.on("pageerror", lambda error: seen["errors"].append(str(error)))
    page.on("console", lambda message: message.type == "error" and seen["errors"].append(message.text))
    return seen


def shown_task(page) -> dict:
    task = page.locator("#task .task")
    return {
        "comparison_id": int(task.get_attribute("data-comparison-id")),
        "left_id": int(page.locator("#response-left").get_attribute("data-response-id")),
        "right_id": int(page.locator("#response-right").get_attribute("data-response-id")),
    }


def wait_for_next_task(page, comparison_id):
    page.wait_for_function(
        "id => document.querySelector('#task .task').dataset.comparisonId !== String(id)", arg=comparison_id
    )
    # htmx's request/settle classes clear last; a key pressed before that is
    # dropped by hx-sync="#task:drop" (which guards against double submits).
    page.wait_for_function("() => !document.querySelector('.htmx-request, .htmx-swapping, .htmx-settling')")


def test_a_rater_judges_three_comparisons_with_the_keyboard_only(live_server, page, alice):
    project = ProjectFactory(name="Keyboard", slug="keyboard", overlap=1, allow_ties=True)
    project.raters.add(alice)
    for _ in range(4):
        ComparisonFactory(prompt__project=project)
    seen = watch(page, live_server)

    log_in(page, live_server, "alice")
    page.get_by_role("link", name="Start labeling").click()
    expect(page.get_by_role("heading", name="Which response is better?")).to_be_visible()
    # Set on this document: still there at the end means no full page load happened.
    page.evaluate("window.__sameDocument = true")

    # Enter with no outcome chosen asks for one and sends nothing.
    page.keyboard.press("Enter")
    expect(page.locator("[data-submit-hint]")).to_be_visible()
    assert not Judgment.objects.filter(project=project).exists()

    # ? opens the shortcut list, and ? closes it again.
    page.keyboard.press("?")
    expect(page.locator("#shortcuts")).to_have_attribute("open", "")
    page.keyboard.press("?")
    expect(page.locator("#shortcuts")).not_to_have_attribute("open", "")

    plan = [
        # keys, then text typed into the rationale (its d and w must not
        # switch the outcome), then what should be stored in shown terms.
        (["a", "1"], "dw: wider docs", ("left", 1)),
        (["ArrowRight", "3"], "", ("right", 3)),
        (["d", "w"], "", ("tie", None)),
    ]
    shown = []
    for keys, rationale, expected in plan:
        task = shown_task(page)
        for key in keys:
            page.keyboard.press(key)
        if rationale:
            page.keyboard.press("r")
            expect(page.locator("#rationale")).to_be_focused()
            page.keyboard.type(rationale)
            page.keyboard.press("Escape")
        expect(page.locator(f'input[name="outcome"][value="{expected[0]}"]')).to_be_checked()
        page.keyboard.press("Enter")
        wait_for_next_task(page, task["comparison_id"])
        shown.append((task, rationale, expected))

    # K skips the fourth; then nothing is left.
    skipped = shown_task(page)["comparison_id"]
    page.keyboard.press("k")
    expect(page.get_by_role("heading", name="All done")).to_be_visible()
    assert page.evaluate("window.__sameDocument") is True

    assert Judgment.objects.filter(project=project, rater=alice).count() == 3
    for task, rationale, (outcome, strength) in shown:
        judgment = Judgment.objects.get(comparison_id=task["comparison_id"], rater=alice)
        comparison = Comparison.objects.get(pk=task["comparison_id"])
        shown_left = "a" if task["left_id"] == comparison.response_a_id else "b"
        shown_right = "b" if shown_left == "a" else "a"
        assert {task["left_id"], task["right_id"]} == {comparison.response_a_id, comparison.response_b_id}
        assert judgment.left == shown_left
        assert judgment.outcome == {"left": shown_left, "right": shown_right}.get(outcome, outcome)
        assert judgment.strength == strength
        assert judgment.rationale == rationale
        assert 0 < judgment.time_spent_ms < 60_000
    assert Assignment.objects.get(comparison_id=skipped, rater=alice).state == Assignment.State.SKIPPED
    assert not Judgment.objects.filter(comparison_id=skipped).exists()

    assert seen["errors"] == []  # no script errors, no CSP violations
    assert all(url.startswith(live_server.url) for url in seen["requests"]), seen["requests"]


HOSTILE = (
    'Sure! <img src=x onerror="window.__xss=1">\n\n'
    "<script>window.__xss=1</script>\n\n"
    "[click](javascript:window.__xss=1)\n\n"
    "![beacon](https://tracker.invalid/pixel.png)\n\n"
    '<iframe src="https://tracker.invalid/frame"></iframe>\n\n'
    '<a href="https://tracker.invalid" style="position:fixed;inset:0">cover</a>\n\n'
    "[docs](https://docs.invalid/page)"
)


def test_hostile_model_output_is_shown_as_text_and_never_runs(live_server, page, bob):
    project = ProjectFactory(
        name="Hostile", slug="hostile", guidelines="Read <script>window.__xss=1</script> **carefully**."
    )
    project.raters.add(bob)
    comparison = ComparisonFactory(prompt__project=project)
    comparison.prompt.conversation = [{"role": "user", "content": "Say <img src=x onerror=window.__xss=1>"}]
    comparison.prompt.save()
    comparison.response_a = ResponseFactory(prompt=comparison.prompt, text=HOSTILE)
    comparison.save()
    seen = watch(page, live_server)

    log_in(page, live_server, "bob")
    page.goto(live_server.url + "/projects/hostile/label/")
    expect(page.get_by_role("heading", name="Which response is better?")).to_be_visible()

    hostile_panel = page.locator(".response", has_text="Sure!")
    expect(hostile_panel.locator(".response__body")).to_contain_text("<script>window.__xss=1</script>")
    expect(hostile_panel.locator(".response__body")).to_contain_text('<img src=x onerror="window.__xss=1">')
    expect(hostile_panel.locator(".response__body")).to_contain_text("[image: beacon]")
    assert page.locator("#main img, #main iframe, #main script, a[href^='javascript:']").count() == 0
    assert page.evaluate("typeof window.__xss") == "undefined"

    # The javascript: "link" is plain text; clicking it does nothing.
    hostile_panel.locator(".response__body").get_by_text("[click](javascript:window.__xss=1)").click()
    hostile_panel.locator("summary", has_text="Raw text").click()
    expect(hostile_panel.locator(".raw pre")).to_contain_text("<script>window.__xss=1</script>")
    page.wait_for_timeout(300)
    assert page.evaluate("typeof window.__xss") == "undefined"

    # Raw <a> is text, not a link; the markdown link opens elsewhere, with
    # neither the page's referrer nor a handle on the page.
    expect(hostile_panel.get_by_role("link", name="cover")).to_have_count(0)
    docs = hostile_panel.get_by_role("link", name="docs")
    expect(docs).to_have_attribute("rel", "nofollow noopener noreferrer")
    expect(docs).to_have_attribute("target", "_blank")
    assert seen["errors"] == []
    assert all(url.startswith(live_server.url) for url in seen["requests"]), seen["requests"]
