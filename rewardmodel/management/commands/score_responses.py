import json

from rewardmodel.management.base import VersionOptionCommand
from rewardmodel.pipeline import score_with_checkpoint


class Command(VersionOptionCommand):
    help = "Score every response of a project with its active reward model (or --version N) and store the rewards."

    def handle(self, *args, **options):
        version = self.trained_version(options)
        count = score_with_checkpoint(version)
        self.stdout.write(json.dumps({"version": version.version, "responses_scored": count}))
