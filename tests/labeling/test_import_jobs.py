"""The admin's import in the background: the upload streamed to VAR_DIR/imports/, an ImportJob, the
run_import task on queue "default", a progress bar, and the result or the line-numbered error."""

import json
import os
import threading
import time
from pathlib import Path

import pytest
from django.contrib.auth.models import Permission
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test import Client
from django.urls import reverse

from config.broker import filesystem_transport_options
from labeling import tasks
from labeling.importing import importer
from labeling.importing.jobs import upload_dir
from labeling.models import Comparison, ImportJob, Project, Prompt, Response
from tests.brokers import use_broker
from tests.factories import ProjectFactory, UserFactory
from tests.labeling.import_worker import published, work_off

CLOSED_PORT = "redis://127.0.0.1:1/0"


def pairs(n: int, start: int = 0) -> str:
    return "".join(
        json.dumps({"prompt": f"Q{i}?", "response_a": f"A{i}", "response_b": f"B{i}", "label": "a"}) + "\n"
        for i in range(start, start + n)
    )


def upload(text: str, name: str = "pairs.jsonl") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, text.encode(), content_type="application/jsonl")


def import_url(job: ImportJob) -> str:
    return reverse("admin:labeling_project_import_job", args=[job.pk])


def progress_url(job: ImportJob) -> str:
    return reverse("admin:labeling_project_import_progress", args=[job.pk])


def post_upload(client, text: str, project: str = "demo", follow: bool = False, **fields):
    data = {"file": upload(text), "project": project, **fields}
    return client.post(reverse("admin:labeling_project_import"), data, follow=follow)


def rows_of(slug: str) -> tuple[int, int, int]:
    return (
        Prompt.objects.filter(project__slug=slug).count(),
        Response.objects.filter(prompt__project__slug=slug).count(),
        Comparison.objects.filter(project__slug=slug).count(),
    )


@pytest.fixture
def staff_client(client, admin_user):
    client.force_login(admin_user)
    return client


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of 10 lines, so that a small file is several chunks (written, then rolled back on an error)."""
    monkeypatch.setattr(importer, "CHUNK_LINES", 10)


def importer_of(project: Project, username: str):
    """A project manager of project with the import permission."""
    user = UserFactory(username=username, is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="add_comparison"))
    project.managers.add(user)
    return user


@pytest.mark.django_db
def test_the_upload_is_streamed_to_var_imports_and_deleted_once_imported(
    staff_client, project, import_broker, settings
):
    settings.FILE_UPLOAD_MAX_MEMORY_SIZE = 10 * 2**20  # Django's own handlers would keep this upload in memory
    text = pairs(3000)

    response = post_upload(staff_client, text)

    job = ImportJob.objects.get()
    path = Path(job.path)
    assert response.status_code == 302 and response["Location"] == import_url(job)
    assert path.parent == upload_dir() and path.read_text() == text
    assert (job.size_bytes, job.status, job.options) == (
        len(text),
        ImportJob.Status.QUEUED,
        {"format": None, "gold_from_labels": False},
    )

    assert work_off(import_broker) == [ImportJob.Status.SUCCEEDED]

    job.refresh_from_db()
    assert not path.exists() and not list(upload_dir().glob(f"job-{job.pk}.*"))
    assert rows_of("demo") == (3000, 6000, 3000)
    assert (job.lines_done, job.bytes_done, job.result["comparisons_created"]) == (3000, len(text), 3000)
    assert job.started_at <= job.finished_at


@pytest.mark.django_db
def test_a_bad_line_fails_the_job_by_its_number_and_nothing_is_imported(
    staff_client, project, import_broker, small_chunks
):
    # Three chunks go in before line 36 is read; the transaction takes them back out.
    text = pairs(35) + '{"prompt": "Q", "response_a": "same", "response_b": "same"}\n' + pairs(5, start=35)

    response = post_upload(staff_client, text)
    assert work_off(import_broker) == [ImportJob.Status.FAILED]

    job = ImportJob.objects.get()
    assert job.errors == [{"line": 36, "message": "response_a and response_b are the same text"}]
    assert (job.result, job.lines_done) == ({}, 30)
    assert rows_of("demo") == (0, 0, 0)
    assert not Path(job.path).exists()
    page = staff_client.get(response["Location"]).content.decode()
    assert "Line 36: response_a and response_b are the same text" in page
    assert "Nothing was imported." in page
    assert "hx-trigger" not in page  # a finished job's page stops polling


@pytest.mark.django_db
def test_the_result_page_shows_the_counts_and_the_skipped_lines(staff_client, project, import_broker):
    hh = [
        {"chosen": "\n\nHuman: Q1\n\nAssistant: yes", "rejected": "\n\nHuman: Q1\n\nAssistant: no"},
        {"chosen": "\n\nHuman: Q2\n\nAssistant: ", "rejected": "\n\nHuman: Q2\n\nAssistant: no"},
    ]
    response = post_upload(staff_client, "".join(json.dumps(line) + "\n" for line in hh), format="hh")
    work_off(import_broker)

    page = staff_client.get(response["Location"]).content.decode()

    assert "2 lines (hh) into project &#x27;demo&#x27;: 1 prompts, 2 responses, 1 comparisons created" in page
    assert "Line 2 skipped: the chosen final reply is empty." in page
    assert ImportJob.objects.get().result["skipped_count"] == 1


@pytest.mark.django_db
def test_a_job_handed_over_twice_runs_once(staff_client, project, import_broker):
    post_upload(staff_client, pairs(4))
    job = ImportJob.objects.get()

    assert tasks.run_import.apply(args=[job.pk]).get() == ImportJob.Status.SUCCEEDED
    assert tasks.run_import.apply(args=[job.pk]).get() is None  # done already: left alone
    assert tasks.run_import.apply(args=[10**9]).get() is None  # no such job

    assert rows_of("demo") == (4, 8, 4)
    job.refresh_from_db()
    assert job.result["comparisons_created"] == 4


@pytest.mark.django_db
def test_with_the_broker_down_the_page_says_so_and_the_job_waits_to_be_run(staff_client, project, tmp_path, var_dir):
    with use_broker(CLOSED_PORT, {"max_retries": 0, "socket_connect_timeout": 1, "socket_timeout": 1}):
        started = time.monotonic()
        response = post_upload(staff_client, pairs(3), follow=True)
        assert time.monotonic() - started < 10

    job = ImportJob.objects.get()
    page = response.content.decode()
    assert job.status == ImportJob.Status.QUEUED and Path(job.path).exists()
    assert "The task queue did not take the import" in page
    assert 'value="publish"' in page and 'value="run"' in page

    # Handed over again once a broker is there...
    folder = tmp_path / "broker"
    with use_broker("filesystem://", filesystem_transport_options(folder)):
        staff_client.post(import_url(job), {"action": "publish"})
    assert published(folder / "queue") == [("labeling.tasks.run_import", [job.pk], "default")]
    # ...or run here and now, which a later delivery then leaves alone.
    response = staff_client.post(import_url(job), {"action": "run"}, follow=True)

    job.refresh_from_db()
    assert job.status == ImportJob.Status.SUCCEEDED and rows_of("demo") == (3, 6, 3)
    assert "3 comparisons created" in response.content.decode()
    assert work_off(folder / "queue") == [None]
    assert rows_of("demo") == (3, 6, 3)


@pytest.mark.django_db
def test_only_those_who_may_import_into_the_project_follow_its_imports(client, project, admin_user, import_broker):
    manager = importer_of(project, "maria")
    elsewhere = importer_of(ProjectFactory(slug="other"), "otto")
    clerk = UserFactory(username="clerk", is_staff=True)  # staff, no permission
    client.force_login(manager)
    assert post_upload(client, pairs(2)).status_code == 302
    job = ImportJob.objects.get()
    assert job.created_by == manager

    for user, expected in ((manager, 200), (admin_user, 200), (elsewhere, 404), (clerk, 404)):
        client.force_login(user)
        assert client.get(import_url(job)).status_code == expected, user
        assert client.get(progress_url(job)).status_code == expected, user
    client.force_login(elsewhere)
    assert client.post(import_url(job), {"action": "run"}).status_code == 404
    job.refresh_from_db()
    assert job.status == ImportJob.Status.QUEUED
    # Nor may they upload into a project they do not manage: no job, no file left behind.
    response = post_upload(client, pairs(2), project="demo")
    assert response.status_code == 403
    assert ImportJob.objects.count() == 1 and len(list(upload_dir().glob("upload-*"))) == 1
    client.force_login(clerk)
    assert post_upload(client, pairs(2), project="other").status_code == 403
    client.logout()
    assert client.get(import_url(job)).status_code == 302  # to the admin's login


@pytest.mark.django_db
def test_the_upload_needs_the_csrf_token_even_though_the_admin_does_not_check_it_first(admin_user, import_broker):
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)

    refused = post_upload(client, pairs(2), project="csrf")

    assert refused.status_code == 403
    assert not ImportJob.objects.exists() and not list(upload_dir().glob("upload-*"))
    client.get(reverse("admin:labeling_project_import"))
    token = client.cookies["csrftoken"].value
    assert post_upload(client, pairs(2), project="csrf", csrfmiddlewaretoken=token).status_code == 302
    assert ImportJob.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_the_page_shows_progress_while_the_worker_reads_and_no_rows_until_the_end(
    admin_user, import_broker, monkeypatch
):
    """The worker reads the upload through a pipe that the test fills in two halves: in between, the
    progress page shows how far it has read, and another connection sees none of the rows yet."""
    monkeypatch.setattr(importer, "CHUNK_LINES", 5)
    first, second = pairs(20), pairs(20, start=20)
    client = Client()
    client.force_login(admin_user)
    post_upload(client, first + second, project="piped")
    job = ImportJob.objects.get()
    os.unlink(job.path)
    os.mkfifo(job.path)
    outcome = {}

    def worker():
        try:
            outcome["status"] = tasks.run_import.apply(args=[job.pk]).get()
        finally:
            connection.close()

    thread = threading.Thread(target=worker)
    thread.start()
    try:
        with open(job.path, "w") as pipe:  # opens once the worker has opened its end
            pipe.write(first)
            pipe.flush()
            deadline = time.monotonic() + 60
            while "20 lines read" not in (fragment := client.get(progress_url(job)).content.decode()):
                assert time.monotonic() < deadline, fragment
                time.sleep(0.05)
            percent = int(100 * len(first) / len(first + second))
            assert f'<progress max="100" value="{percent}"' in fragment and "Running" in fragment
            assert 'hx-trigger="every 1s"' in fragment
            assert rows_of("piped") == (0, 0, 0)  # all or nothing: not a row before the end
            pipe.write(second)
    finally:
        thread.join(60)
    assert outcome == {"status": ImportJob.Status.SUCCEEDED}
    assert rows_of("piped") == (40, 80, 40)
    fragment = client.get(progress_url(job)).content.decode()
    assert "40 comparisons created" in fragment and "hx-trigger" not in fragment


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_real_worker_takes_the_job_from_the_default_queue(admin_user, settings, tmp_path):
    from tests.rewardmodel.test_loop_worker import Worker, _database_url, wait_for

    var = tmp_path / "var"
    settings.VAR_DIR = var  # web and worker share it: the upload, the progress file and the broker live there
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CELERY_", "REDIS_"))}
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings",
        DATABASE_URL=_database_url(),
        VAR_DIR=str(var),
        HF_HUB_OFFLINE="1",
        PYTHONUNBUFFERED="1",
    )
    client = Client()
    client.force_login(admin_user)
    n = importer.CHUNK_LINES + 50
    with use_broker("filesystem://", filesystem_transport_options(var / "broker")):
        worker = Worker(env, tmp_path / "worker.log")
        try:
            # More than one chunk: Celery's pool process forks the parser (importing/pipelining.py).
            post_upload(client, pairs(n), project="worked")
            job = ImportJob.objects.get()
            wait_for(
                lambda: ImportJob.objects.get(pk=job.pk).status == ImportJob.Status.SUCCEEDED, 120, "the job", worker
            )
        finally:
            worker.stop()
    assert rows_of("worked") == (n, 2 * n, n)
    assert "the rest of the file is parsed ahead in process" in (tmp_path / "worker.log").read_text()
    assert not Path(job.path).exists()
