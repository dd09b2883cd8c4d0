"""Celery tasks of the human side: recomputing rater quality, and imports uploaded through the admin. The
only labeling module that touches Celery.

Tasks are thin: they take ids and call labeling.quality.service or labeling.importing.jobs. Their names are
public (the beat entry of migration 0005_quality_schedule and CELERY_TASK_ROUTES refer to them); all run on
queue "default", since they only read and write rows and do numpy work:

- `labeling.tasks.compute_quality(project_id)`: compute and store one project's figures;
- `labeling.tasks.compute_quality_for_active_projects()`: every 10 minutes, hand over one compute_quality per
  active project with a judgment newer than its stored figures (or whose exclusions changed).
- `labeling.tasks.run_import(job_id)`: import the file of one ImportJob (labeling/importing/jobs.py).

Publishing (`publish_compute_quality`, `publish_run_import`) never blocks a caller on a broker that is down:
one attempt (retry=False, and the short socket timeouts of settings), the error returned in words. Nothing
is lost when it fails: the schedule finds the project again on its next round; an import job stays queued,
and its page offers to hand it over again or to run it there and then.
"""

import logging

from celery import shared_task
from django.db import OperationalError

from labeling.importing import jobs
from labeling.models import Project
from labeling.quality import service

log = logging.getLogger(__name__)


@shared_task(bind=True, max_retries=3, acks_late=True)
def compute_quality(self, project_id: int) -> dict | None:
    project = Project.objects.filter(pk=project_id).first()
    if project is None:  # deleted since it was published
        return None
    try:
        report = service.compute_quality(project=project)
    except OperationalError as error:
        # The database went away for a moment: back off and try again.
        raise self.retry(exc=error, countdown=30 * 2**self.request.retries) from error
    result = service.summary(project=project, report=report)
    log.info("rater quality of %s: %s", project.slug, result)
    return result


@shared_task
def compute_quality_for_active_projects() -> int:
    """The schedule: publish a computation for every project whose figures are out of date. Returns how
    many were handed over."""
    return sum(not publish_compute_quality(project_id=pk) for pk in service.projects_needing_quality())


def publish_compute_quality(*, project_id: int) -> str:
    """Hand "compute this project's quality" to the workers. Returns "" or why the broker refused."""
    try:
        compute_quality.apply_async(args=[project_id], retry=False)
    except Exception as error:  # kombu and redis raise OperationalError, OSError, ConnectionError...
        log.warning("could not publish the quality computation of project %s: %s", project_id, error)
        return f"{type(error).__name__}: {error}"
    return ""


@shared_task(acks_late=True)
def run_import(job_id: int) -> str | None:
    """Import one ImportJob's file. A job that is not queued (run already, or running elsewhere) is left
    alone, so a job handed over twice runs once. Returns the job's final status, or None."""
    job = jobs.run_import_job(job_id=job_id)
    return None if job is None else job.status


def publish_run_import(*, job_id: int) -> str:
    """Hand "import this job's file" to the workers. Returns "" or why the broker refused."""
    try:
        run_import.apply_async(args=[job_id], retry=False)
    except Exception as error:  # as in publish_compute_quality
        log.warning("could not publish import job %s: %s", job_id, error)
        return f"{type(error).__name__}: {error}"
    return ""
