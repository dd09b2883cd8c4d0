"""Celery tasks: thin. Load ids, call the pipeline, own the retries.

Queues: `gpu` (retrain, refresh: one at a time per worker, model in memory),
`default` (the periodic reconcile and schedule, which only look at rows).
"""

import logging

from celery import shared_task
from django.db import OperationalError

from rewardmodel import pipeline
from rewardmodel import reconcile as reconcile_module

log = logging.getLogger(__name__)


@shared_task(bind=True, max_retries=5, acks_late=True, reject_on_worker_lost=True)
def retrain(self, project_id: int, trigger: str = "threshold") -> str:
    try:
        outcome = pipeline.run_retrain(project_id=project_id, owner=self.request.id or "", trigger=trigger)
    except OperationalError as error:
        # The database went away for a moment: back off and try again.
        raise self.retry(exc=error, countdown=min(600, 10 * 2**self.request.retries)) from error
    log.info("retrain of project %s: %s %s", project_id, outcome.status, outcome.detail)
    return outcome.status


@shared_task(bind=True, max_retries=5, acks_late=True)
def refresh(self, project_id: int) -> int:
    try:
        result = pipeline.refresh_pairs_for_id(project_id)
    except OperationalError as error:
        raise self.retry(exc=error, countdown=min(600, 10 * 2**self.request.retries)) from error
    return result.comparisons_scored


@shared_task
def reconcile() -> int:
    """Find what the broker missed (frequent, cheap)."""
    return reconcile_module.reconcile()


@shared_task
def retrain_projects_with_new_judgments() -> int:
    """The schedule: retrain every project that has any new judgment."""
    return reconcile_module.retrain_projects_with_new_judgments()
