import json

import pytest
from django.contrib.auth.models import Permission
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from labeling.exporting import rater_pseudonym
from labeling.models import Assignment, Comparison, Judgment, Project, Prompt, Response
from tests.factories import AssignmentFactory, ComparisonFactory, JudgmentFactory, UserFactory

MODELS = ["project", "prompt", "response", "comparison", "assignment", "judgment"]


def upload(text: str, name: str = "pairs.jsonl") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, text.encode(), content_type="application/jsonl")


def pairs_file(n: int) -> str:
    return "".join(
        json.dumps({"prompt": f"Q{i}?", "response_a": f"A{i}", "response_b": f"B{i}", "label": "a"}) + "\n"
        for i in range(n)
    )


@pytest.fixture
def judged_comparison(project, alice, bob):
    """Complete: alice (who held a lease) and bob both prefer A."""
    comparison = ComparisonFactory(prompt__project=project)
    AssignmentFactory(comparison=comparison, rater=alice)
    JudgmentFactory(comparison=comparison, rater=alice, outcome="a", strength=2, rationale="Clearer.")
    JudgmentFactory(comparison=comparison, rater=bob, outcome="a", strength=3, rationale="Clearer.")
    return comparison


@pytest.fixture
def clerk(db):
    """Staff, with no permissions until a test grants them."""
    return UserFactory(username="clerk", is_staff=True)


@pytest.fixture
def staff_client(client, admin_user):
    client.force_login(admin_user)
    return client


@pytest.mark.django_db
@pytest.mark.parametrize("model", MODELS)
def test_staff_can_open_every_changelist_and_change_page(staff_client, judged_comparison, model):
    response = staff_client.get(reverse(f"admin:labeling_{model}_changelist"))
    assert response.status_code == 200

    obj = {
        "project": judged_comparison.project,
        "prompt": judged_comparison.prompt,
        "response": judged_comparison.response_a,
        "comparison": judged_comparison,
        "assignment": Assignment.objects.first(),
        "judgment": Judgment.objects.first(),
    }[model]
    response = staff_client.get(reverse(f"admin:labeling_{model}_change", args=[obj.pk]))
    assert response.status_code == 200


@pytest.mark.django_db
@pytest.mark.parametrize("model", ["comparison", "judgment", "response"])
def test_changelists_do_not_query_once_per_row(
    staff_client, project, alice, bob, model, django_assert_max_num_queries
):
    for _ in range(30):
        JudgmentFactory(comparison__prompt__project=project, rater=alice, outcome="tie")

    with django_assert_max_num_queries(15):
        response = staff_client.get(reverse(f"admin:labeling_{model}_changelist"))
    assert response.status_code == 200


@pytest.mark.django_db
def test_the_search_boxes_accept_text_where_they_match_ids(staff_client, judged_comparison):
    for model in MODELS:
        response = staff_client.get(reverse(f"admin:labeling_{model}_changelist"), {"q": "alice"})
        assert response.status_code == 200


@pytest.mark.django_db
def test_the_project_list_links_to_the_import_page_and_the_exports(staff_client, project):
    response = staff_client.get(reverse("admin:labeling_project_changelist"))

    content = response.content.decode()
    assert reverse("admin:labeling_project_import") in content
    assert reverse("admin:labeling_project_export", args=[project.pk, "trl"]) in content
    assert reverse("admin:labeling_project_export", args=[project.pk, "raw"]) in content
    change = staff_client.get(reverse("admin:labeling_project_change", args=[project.pk])).content.decode()
    assert f"{reverse('admin:labeling_project_import')}?project=demo" in change


@pytest.mark.django_db
def test_staff_can_import_a_good_file_into_a_new_project(staff_client):
    page = staff_client.get(reverse("admin:labeling_project_import"))
    assert page.status_code == 200

    response = staff_client.post(
        reverse("admin:labeling_project_import"),
        {"file": upload(pairs_file(3)), "project": "uploaded", "name": "Uploaded pairs", "format": ""},
    )

    project = Project.objects.get(slug="uploaded")
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:labeling_project_change", args=[project.pk])
    assert project.name == "Uploaded pairs"
    assert Comparison.objects.filter(project=project, reference_label="a").count() == 3
    followed = staff_client.get(response["Location"]).content.decode()
    assert "3 comparisons created" in followed


@pytest.mark.django_db
def test_a_bad_upload_shows_the_line_and_writes_nothing(staff_client, project):
    text = pairs_file(2) + '{"prompt": "Q", "response_a": "same", "response_b": "same"}\n'

    response = staff_client.post(
        reverse("admin:labeling_project_import"), {"file": upload(text), "project": "demo", "format": "pairs"}
    )

    assert response.status_code == 200
    assert "line 3: response_a and response_b are the same text. Nothing was imported." in response.content.decode()
    assert (Prompt.objects.count(), Response.objects.count(), Comparison.objects.count()) == (0, 0, 0)


@pytest.mark.django_db
def test_an_upload_with_a_bad_slug_is_refused(staff_client):
    response = staff_client.post(
        reverse("admin:labeling_project_import"), {"file": upload(pairs_file(1)), "project": "no spaces"}
    )

    assert response.status_code == 200
    assert not Project.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("format", ["trl", "raw"])
def test_staff_can_download_exports(staff_client, judged_comparison, format):
    response = staff_client.get(reverse("admin:labeling_project_export", args=[judged_comparison.project_id, format]))

    assert response.status_code == 200
    assert response.streaming
    assert response["Content-Disposition"] == f'attachment; filename="demo-{format}.jsonl"'
    lines = [json.loads(line) for line in b"".join(response.streaming_content).decode().splitlines()]
    if format == "trl":
        assert [line["comparison_id"] for line in lines] == [judged_comparison.pk]
        assert lines[0]["margin"] == 2.5
    else:
        assert {line["rater"] for line in lines} == {
            rater_pseudonym(j.rater_id) for j in Judgment.objects.all()
        }


@pytest.mark.django_db
def test_an_unknown_export_format_is_not_found(staff_client, project):
    assert staff_client.get(reverse("admin:labeling_project_export", args=[project.pk, "csv"])).status_code == 404


@pytest.mark.django_db
@pytest.mark.parametrize(
    "url",
    [
        lambda project: reverse("admin:labeling_project_import"),
        lambda project: reverse("admin:labeling_project_export", args=[project.pk, "trl"]),
        lambda project: reverse("admin:labeling_project_export", args=[project.pk, "raw"]),
    ],
    ids=["import", "export-trl", "export-raw"],
)
def test_a_rater_is_sent_to_the_admin_login(client, alice, project, url):
    client.force_login(alice)

    response = client.get(url(project))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))
    response = client.post(url(project), {"file": upload(pairs_file(1)), "project": "demo"})
    assert response.status_code == 302
    assert not Comparison.objects.exists()


@pytest.mark.django_db
def test_staff_without_the_permissions_get_403(client, project, clerk):
    client.force_login(clerk)

    assert client.get(reverse("admin:labeling_project_import")).status_code == 403
    assert client.get(reverse("admin:labeling_project_export", args=[project.pk, "raw"])).status_code == 403

    clerk.user_permissions.add(
        Permission.objects.get(codename="add_comparison"), Permission.objects.get(codename="view_judgment")
    )
    assert client.get(reverse("admin:labeling_project_import")).status_code == 200
    assert client.get(reverse("admin:labeling_project_export", args=[project.pk, "raw"])).status_code == 200


@pytest.mark.django_db
def test_judgments_and_leases_cannot_be_added_or_changed(staff_client, judged_comparison):
    judgment = Judgment.objects.first()
    for model in ("judgment", "assignment"):
        assert staff_client.get(reverse(f"admin:labeling_{model}_add")).status_code == 403
    response = staff_client.post(
        reverse("admin:labeling_judgment_change", args=[judgment.pk]), {"outcome": "b", "strength": 1}
    )
    assert response.status_code == 403
    judgment.refresh_from_db()
    assert judgment.outcome == "a"


@pytest.mark.django_db
def test_only_superusers_may_delete_judgments(client, judged_comparison, clerk):
    clerk.user_permissions.add(*Permission.objects.filter(content_type__app_label="labeling"))
    client.force_login(clerk)
    judgment = Judgment.objects.first()

    response = client.post(reverse("admin:labeling_judgment_delete", args=[judgment.pk]), {"post": "yes"})

    assert response.status_code == 403
    assert Judgment.objects.filter(pk=judgment.pk).exists()


@pytest.mark.django_db
def test_deleting_a_judgment_reopens_its_comparison(staff_client, judged_comparison, alice):
    judgment = Judgment.objects.get(rater=alice)

    response = staff_client.post(reverse("admin:labeling_judgment_delete", args=[judgment.pk]), {"post": "yes"})

    assert response.status_code == 302
    judged_comparison.refresh_from_db()
    assert judged_comparison.judgments_count == 1
    assert judged_comparison.status == Comparison.Status.OPEN


@pytest.mark.django_db
def test_bulk_deleting_judgments_recounts_every_comparison(staff_client, judged_comparison):
    response = staff_client.post(
        reverse("admin:labeling_judgment_changelist"),
        {"action": "delete_selected", "_selected_action": list(Judgment.objects.values_list("pk", flat=True)),
         "post": "yes"},
    )

    assert response.status_code == 302
    judged_comparison.refresh_from_db()
    assert (judged_comparison.judgments_count, judged_comparison.status) == (0, Comparison.Status.OPEN)


@pytest.mark.django_db
def test_comparisons_can_be_retired_and_reopened(staff_client, judged_comparison, project):
    open_one = ComparisonFactory(prompt__project=project)
    url = reverse("admin:labeling_comparison_changelist")
    ids = [judged_comparison.pk, open_one.pk]

    staff_client.post(url, {"action": "retire", "_selected_action": ids})
    assert set(Comparison.objects.values_list("status", flat=True)) == {Comparison.Status.RETIRED}

    staff_client.post(url, {"action": "reopen", "_selected_action": ids})
    judged_comparison.refresh_from_db()
    open_one.refresh_from_db()
    assert judged_comparison.status == Comparison.Status.COMPLETE  # it has all its judgments
    assert open_one.status == Comparison.Status.OPEN


@pytest.mark.django_db
def test_the_priority_filter_narrows_the_comparison_list(staff_client, project):
    high = ComparisonFactory(prompt__project=project, priority=2.5)
    ComparisonFactory(prompt__project=project, priority=0)

    response = staff_client.get(reverse("admin:labeling_comparison_changelist"), {"priority": "positive"})

    assert [c.pk for c in response.context["cl"].result_list] == [high.pk]
