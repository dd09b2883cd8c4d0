import json

from django.core.management.base import BaseCommand, CommandError

from labeling.models import Project
from labeling.quality import service


class Command(BaseCommand):
    help = (
        "Compute and store a project's rater quality figures and source leaderboard now, in this process "
        "(what the scheduled task does every 10 minutes), and print a one-line JSON summary."
    )

    def add_arguments(self, parser):
        parser.add_argument("--project", required=True, help="Project slug.")

    def handle(self, *args, **options):
        project = Project.objects.filter(slug=options["project"]).first()
        if project is None:
            raise CommandError(f"No project with slug {options['project']!r}.")
        report = service.compute_quality(project=project)
        self.stdout.write(json.dumps(service.summary(project=project, report=report)))
