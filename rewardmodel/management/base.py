from django.core.management.base import BaseCommand


class VersionOptionCommand(BaseCommand):
    """A command whose --version N names a reward-model version.

    Django gives every command a --version flag of its own (print Django's version and exit); argparse
    would refuse to add a second one, so this parser lets the command's option replace Django's.
    """

    def create_parser(self, prog_name, subcommand, **kwargs):
        return super().create_parser(prog_name, subcommand, conflict_handler="resolve", **kwargs)
