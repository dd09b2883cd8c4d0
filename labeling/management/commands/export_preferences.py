from django.core.management.base import BaseCommand, CommandError

from labeling.exporting import FORMATS, export_preferences
from labeling.models import Project


class Command(BaseCommand):
    help = (
        "Export a project's preferences as JSONL: trl (one line per comparison with a decisive majority, "
        "TRL's conversational preference format) or raw (one line per judgment, raters pseudonymised). "
        "trl majorities and margins use the project's judgment weighting (equal, reliability or exclude_flagged); "
        "excluded raters' judgments leave both formats. Counts, including comparisons left out and why, and the "
        "weighting when it is not equal weights with nobody excluded, go to standard error."
    )

    def add_arguments(self, parser):
        parser.add_argument("--project", required=True, help="Project slug.")
        parser.add_argument("--format", required=True, choices=FORMATS)
        parser.add_argument("--output", help="File to write (default: standard output).")

    def handle(self, *args, **options):
        try:
            project = Project.objects.get(slug=options["project"])
        except Project.DoesNotExist:
            raise CommandError(f"No project with slug {options['project']!r}.") from None
        if options["output"]:
            try:
                with open(options["output"], "w", encoding="utf-8", newline="\n") as out:
                    result = export_preferences(project=project, format=options["format"], out=out)
            except OSError as error:
                raise CommandError(f"Cannot write {options['output']}: {error}") from None
        else:
            # Every line ends with a newline, so the wrapper adds nothing to it.
            result = export_preferences(project=project, format=options["format"], out=self.stdout)
        self.stderr.write(result.summary())
