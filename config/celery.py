"""The Celery app. Workers: `celery -A config worker --queues gpu --concurrency 1
--prefetch-multiplier 1` for training/scoring, `--queues default` for light work;
one `celery -A config beat` per deployment."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("config")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
