import json

from django.core.management.base import CommandError

from labeling.models import Project
from rewardmodel.management.base import VersionOptionCommand
from rewardmodel.models import RewardModelVersion
from rewardmodel.pipeline import score_with_checkpoint


class Command(VersionOptionCommand):
    help = "Score every response of a project with its active reward model (or --version N) and store the rewards."

    def add_arguments(self, parser):
        parser.add_argument("--project", required=True, help="Project slug.")
        parser.add_argument("--version", type=int, help="Version number (default: the active one).")

    def handle(self, *args, **options):
        project = Project.objects.filter(slug=options["project"]).first()
        if project is None:
            raise CommandError(f"No project with slug {options['project']!r}.")
        versions = RewardModelVersion.objects.filter(project=project)
        if options["version"]:
            version = versions.filter(version=options["version"]).first()
        else:
            version = versions.filter(status=RewardModelVersion.Status.ACTIVE).first()
        if version is None or not version.artifact_path:
            raise CommandError("No such trained version (train one with train_reward_model).")
        count = score_with_checkpoint(version)
        self.stdout.write(json.dumps({"version": version.version, "responses_scored": count}))
