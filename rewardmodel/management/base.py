from django.core.management.base import BaseCommand, CommandError

from labeling.models import Project
from rewardmodel.models import RewardModelVersion


class VersionOptionCommand(BaseCommand):
    """A command that works on one trained reward-model version: --project SLUG [--version N].

    Django gives every command a --version flag of its own (print Django's version and exit); argparse
    would refuse to add a second one, so this parser lets the command's option replace Django's.
    """

    def create_parser(self, prog_name, subcommand, **kwargs):
        return super().create_parser(prog_name, subcommand, conflict_handler="resolve", **kwargs)

    def add_arguments(self, parser):
        parser.add_argument("--project", required=True, help="Project slug.")
        parser.add_argument("--version", type=int, help="Version number (default: the active one).")

    def trained_version(self, options) -> RewardModelVersion:
        """The version --version names, or the project's active one; it must have a checkpoint."""
        project = Project.objects.filter(slug=options["project"]).first()
        if project is None:
            raise CommandError(f"No project with slug {options['project']!r}.")
        versions = RewardModelVersion.objects.filter(project=project).exclude(artifact_path="")
        if options["version"]:
            version = versions.filter(version=options["version"]).first()
        else:
            version = versions.filter(status=RewardModelVersion.Status.ACTIVE).first()
        if version is None:
            raise CommandError("No such trained version (train one with train_reward_model).")
        return version
