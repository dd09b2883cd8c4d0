"""The default schedule, as django-celery-beat rows that admins can edit."""

from django.db import migrations

RECONCILE = "rewardmodel: publish missed or due retrains (every minute)"
NIGHTLY = "rewardmodel: retrain projects with new judgments (nightly)"


def create_schedule(apps, schema_editor):
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    CrontabSchedule = apps.get_model("django_celery_beat", "CrontabSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    every_minute, _ = IntervalSchedule.objects.get_or_create(every=1, period="minutes")
    nightly, _ = CrontabSchedule.objects.get_or_create(
        minute="30", hour="2", day_of_week="*", day_of_month="*", month_of_year="*", timezone="UTC"
    )
    PeriodicTask.objects.get_or_create(
        name=RECONCILE,
        defaults={"task": "rewardmodel.tasks.reconcile", "interval": every_minute, "queue": "default"},
    )
    PeriodicTask.objects.get_or_create(
        name=NIGHTLY,
        defaults={
            "task": "rewardmodel.tasks.retrain_projects_with_new_judgments",
            "crontab": nightly,
            "queue": "default",
        },
    )


def remove_schedule(apps, schema_editor):
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTask.objects.filter(name__in=[RECONCILE, NIGHTLY]).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("rewardmodel", "0001_initial"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(create_schedule, remove_schedule)]
