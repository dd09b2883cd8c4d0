import json

import pytest
from django.contrib.auth.models import Permission
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from labeling.exporting import rater_pseudonym
from labeling.importing.jobs import upload_dir
from labeling.models import Assignment, Comparison, ImportJob, Judgment, Project, Prompt, Response
from labeling.raters import set_excluded
from tests.factories import AssignmentFactory, ComparisonFactory, JudgmentFactory, UserFactory
from tests.labeling.import_worker import published, work_off

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
def test_changelists_do_not_query_once_per_row(staff_client, project, alice, bob, model, django_assert_max_num_queries):
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
def test_staff_can_import_a_good_file_into_a_new_project(staff_client, import_broker):
    page = staff_client.get(reverse("admin:labeling_project_import"))
    assert page.status_code == 200

    response = staff_client.post(
        reverse("admin:labeling_project_import"),
        {"file": upload(pairs_file(3)), "project": "uploaded", "name": "Uploaded pairs", "format": ""},
    )

    project = Project.objects.get(slug="uploaded")
    job = ImportJob.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:labeling_project_import_job", args=[job.pk])
    assert (job.project, job.status, job.filename) == (project, ImportJob.Status.QUEUED, "pairs.jsonl")
    assert project.name == "Uploaded pairs"
    assert published(import_broker) == [("labeling.tasks.run_import", [job.pk], "default")]
    assert not Comparison.objects.exists()  # the worker imports, not the request

    work_off(import_broker)

    assert Comparison.objects.filter(project=project, reference_label="a").count() == 3
    followed = staff_client.get(response["Location"]).content.decode()
    assert "3 comparisons created" in followed


@pytest.mark.django_db
def test_a_bad_upload_shows_the_line_and_writes_nothing(staff_client, project, import_broker):
    text = pairs_file(2) + '{"prompt": "Q", "response_a": "same", "response_b": "same"}\n'

    response = staff_client.post(
        reverse("admin:labeling_project_import"), {"file": upload(text), "project": "demo", "format": "pairs"}
    )
    work_off(import_broker)

    page = staff_client.get(response["Location"]).content.decode()
    assert "Line 3: response_a and response_b are the same text" in page
    assert "Nothing was imported." in page
    assert (Prompt.objects.count(), Response.objects.count(), Comparison.objects.count()) == (0, 0, 0)


@pytest.mark.django_db
def test_an_upload_with_a_bad_slug_is_refused(staff_client, import_broker):
    response = staff_client.post(
        reverse("admin:labeling_project_import"), {"file": upload(pairs_file(1)), "project": "no spaces"}
    )

    assert response.status_code == 200
    assert not Project.objects.exists() and not ImportJob.objects.exists()
    assert not any(upload_dir().glob("upload-*"))  # the stored upload went with the refused form


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
        assert {line["rater"] for line in lines} == {rater_pseudonym(j.rater_id) for j in Judgment.objects.all()}


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
    # The permissions count on the projects one manages (labeling.access): another's is not found.
    assert client.get(reverse("admin:labeling_project_export", args=[project.pk, "raw"])).status_code == 404
    project.managers.add(clerk)
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
def test_only_admins_may_delete_judgments(client, judged_comparison, clerk):
    # Every labeling permission but the admins' own, on a project clerk manages.
    clerk.user_permissions.add(
        *Permission.objects.filter(content_type__app_label="labeling").exclude(codename="manage_every_project")
    )
    judged_comparison.project.managers.add(clerk)
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
        {
            "action": "delete_selected",
            "_selected_action": list(Judgment.objects.values_list("pk", flat=True)),
            "post": "yes",
        },
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


# --- gold -------------------------------------------------------------------


@pytest.mark.django_db
def test_the_comparison_list_shows_and_filters_gold(staff_client, project):
    gold = ComparisonFactory(prompt__project=project, is_gold=True, gold_label="b")
    ComparisonFactory(prompt__project=project)
    url = reverse("admin:labeling_comparison_changelist")

    response = staff_client.get(url, {"is_gold__exact": "1"})

    assert [c.pk for c in response.context["cl"].result_list] == [gold.pk]
    assert response.context["cl"].list_display[-5:] == [
        "reference_label",
        "is_gold",
        "gold_label",
        "selected_by",
        "created_at",
    ]
    assert [c.pk for c in staff_client.get(url, {"gold_label": "b"}).context["cl"].result_list] == [gold.pk]


def comparison_form(comparison, **fields) -> dict:
    """The change form's fields as the page would post them back."""
    return {
        "priority": comparison.priority,
        "status": comparison.status,
        "selected_by": comparison.selected_by,
        "reference_label": comparison.reference_label,
        "gold_label": comparison.gold_label,
        "judgments-TOTAL_FORMS": "0",
        "judgments-INITIAL_FORMS": "0",
        **({"is_gold": "on"} if comparison.is_gold else {}),
        **fields,
    }


@pytest.mark.django_db
def test_an_admin_sets_a_gold_answer_on_the_change_form(staff_client, judged_comparison):
    url = reverse("admin:labeling_comparison_change", args=[judged_comparison.pk])

    response = staff_client.post(url, comparison_form(judged_comparison, is_gold="on", gold_label="a"))

    assert response.status_code == 302
    judged_comparison.refresh_from_db()
    assert (judged_comparison.is_gold, judged_comparison.gold_label) == (True, "a")
    assert judged_comparison.status == Comparison.Status.OPEN  # it had its judgments; gold stays open

    staff_client.post(url, comparison_form(judged_comparison, is_gold="", gold_label=""))
    judged_comparison.refresh_from_db()
    assert (judged_comparison.is_gold, judged_comparison.status) == (False, Comparison.Status.COMPLETE)


@pytest.mark.django_db
@pytest.mark.parametrize(
    "fields, message",
    [
        ({"is_gold": "on", "gold_label": ""}, "A gold comparison needs its known answer"),
        ({"gold_label": "b"}, "Only a gold comparison has a known answer."),
    ],
)
def test_the_change_form_refuses_gold_without_an_answer_and_an_answer_without_gold(
    staff_client, judged_comparison, fields, message
):
    url = reverse("admin:labeling_comparison_change", args=[judged_comparison.pk])

    response = staff_client.post(url, comparison_form(judged_comparison, **fields))

    assert response.status_code == 200
    assert message in response.content.decode()
    judged_comparison.refresh_from_db()
    assert (judged_comparison.is_gold, judged_comparison.gold_label) == (False, "")


@pytest.mark.django_db
def test_comparisons_can_be_marked_gold_by_their_reference_label_and_unmarked(staff_client, project):
    labelled = ComparisonFactory(prompt__project=project, reference_label="b")
    tie = ComparisonFactory(prompt__project=project, reference_label="tie")
    url = reverse("admin:labeling_comparison_changelist")
    ids = [labelled.pk, tie.pk]

    response = staff_client.post(url, {"action": "mark_as_gold", "_selected_action": ids}, follow=True)

    assert set(Comparison.objects.values_list("pk", "is_gold", "gold_label")) == {
        (labelled.pk, True, "b"),
        (tie.pk, False, ""),
    }
    content = response.content.decode()
    assert "Marked 1 comparisons as gold." in content
    assert "1 had no decisive reference label" in content

    staff_client.post(url, {"action": "unmark_as_gold", "_selected_action": ids})
    assert not Comparison.objects.filter(is_gold=True).exists()


@pytest.mark.django_db
def test_staff_who_may_not_change_comparisons_cannot_mark_gold(client, project, clerk):
    clerk.user_permissions.add(Permission.objects.get(codename="view_comparison"))
    client.force_login(clerk)
    labelled = ComparisonFactory(prompt__project=project, reference_label="a")
    gold = ComparisonFactory(prompt__project=project, is_gold=True, gold_label="a")
    url = reverse("admin:labeling_comparison_changelist")

    assert "mark_as_gold" not in client.get(url).content.decode()
    for action, comparison in (("mark_as_gold", labelled), ("unmark_as_gold", gold)):
        client.post(url, {"action": action, "_selected_action": [comparison.pk]})
    response = client.post(
        reverse("admin:labeling_comparison_change", args=[labelled.pk]),
        comparison_form(labelled, is_gold="on", gold_label="a"),
    )

    assert response.status_code == 403
    assert set(Comparison.objects.values_list("pk", "is_gold")) == {(labelled.pk, False), (gold.pk, True)}


@pytest.mark.django_db
def test_the_import_page_can_turn_labels_into_gold(staff_client, import_broker):
    text = pairs_file(2) + json.dumps({"prompt": "Q?", "response_a": "x", "response_b": "y", "label": "tie"}) + "\n"

    response = staff_client.post(
        reverse("admin:labeling_project_import"),
        {"file": upload(text), "project": "uploaded", "gold_from_labels": "on"},
    )
    work_off(import_broker)
    response = staff_client.get(response["Location"])

    assert set(Comparison.objects.values_list("reference_label", "is_gold", "gold_label")) == {
        ("a", True, "a"),
        ("tie", False, ""),
    }
    assert Comparison.objects.filter(is_gold=True).count() == 2
    assert "2 comparisons marked gold; 1 tie labels not made gold" in response.content.decode()


@pytest.mark.django_db
def test_the_import_page_leaves_labels_alone_unless_asked(staff_client, import_broker):
    staff_client.post(reverse("admin:labeling_project_import"), {"file": upload(pairs_file(2)), "project": "uploaded"})
    work_off(import_broker)

    assert Comparison.objects.filter(reference_label="a").count() == 2
    assert not Comparison.objects.filter(is_gold=True).exists()


# --- weighting --------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("format", ["trl", "raw"])
def test_the_export_download_says_which_weighting_it_used(
    staff_client, judged_comparison, admin_user, alice, bob, format
):
    url = reverse("admin:labeling_project_export", args=[judged_comparison.project_id, format])
    assert staff_client.get(url)["X-Export-Weighting"] == "equal"

    project = judged_comparison.project
    project.judgment_weighting = Project.Weighting.RELIABILITY
    project.save()
    set_excluded(project=project, rater=bob, excluded=True, by=admin_user)
    response = staff_client.get(url)

    assert response["X-Export-Weighting"] == "reliability (raters: 1 excluded)"
    lines = [json.loads(line) for line in b"".join(response.streaming_content).decode().splitlines()]
    if format == "trl":
        assert lines[0]["margin"] == 2.0  # alice's "clearly" alone: bob's "much" is out
    else:
        assert {line["rater"] for line in lines} == {rater_pseudonym(alice.pk)}


@pytest.mark.django_db
def test_an_upload_above_the_import_limit_gets_413_and_imports_nothing(staff_client, settings, import_broker):
    settings.IMPORT_MAX_BYTES = 1024
    response = staff_client.post(
        reverse("admin:labeling_project_import"),
        {"file": upload(pairs_file(50)), "project": "too-big", "name": "Too big", "format": ""},
    )
    assert response.status_code == 413
    assert "limited to" in response.content.decode() and "Nothing was imported" in response.content.decode()
    assert not Project.objects.filter(slug="too-big").exists()
    # Under the limit the same page imports as before.
    settings.IMPORT_MAX_BYTES = 10 * 2**20
    response = staff_client.post(
        reverse("admin:labeling_project_import"),
        {"file": upload(pairs_file(2)), "project": "small", "name": "Small", "format": ""},
    )
    assert response.status_code == 302 and Project.objects.filter(slug="small").exists()
