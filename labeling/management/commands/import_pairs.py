import gzip
import sys

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from labeling.importing import FORMATS, ImportFileError, import_pairs


class Command(BaseCommand):
    help = (
        "Import comparisons from a JSONL file (hh, pairs or responses format; see labeling/importing/formats.py). "
        "The whole file is checked first; a malformed line aborts the import and nothing is written. "
        "Re-importing the same file adds nothing."
    )

    def add_arguments(self, parser):
        parser.add_argument("file", help='Path to a .jsonl (or .jsonl.gz) file, or "-" for standard input.')
        parser.add_argument("--project", required=True, help="Project slug; the project is created if it is new.")
        parser.add_argument("--format", choices=FORMATS, help="File format (default: detected from the first line).")
        parser.add_argument("--name", help="Name of a new project (default: the slug).")
        parser.add_argument(
            "--max-pairs-per-prompt",
            type=int,
            help="Cap on comparisons per line in the responses format (default: LABELING_MAX_PAIRS_PER_PROMPT).",
        )
        parser.add_argument(
            "--gold-from-labels",
            action="store_true",
            help="Make the file's reference labels (hh labels, pairs labels a/b) gold answers, for new and "
            "already stored comparisons alike. Tie labels are no known answer: those stay ordinary comparisons.",
        )

    def handle(self, *args, **options):
        path = options["file"]
        try:
            if path == "-":
                result = self._import(sys.stdin.buffer, options)
            else:
                # HH-RLHF is published as .jsonl.gz; read it without unpacking it first.
                opener = gzip.open if path.endswith(".gz") else open
                with opener(path, "rb") as lines:
                    result = self._import(lines, options)
        except OSError as error:
            raise CommandError(f"Cannot read {path}: {error}") from None
        except ImportFileError as error:
            raise CommandError(f"{path}: {error}; nothing was imported.") from None
        except ValidationError as error:
            raise CommandError(f"{'; '.join(error.messages)}; nothing was imported.") from None
        for line, reason in result.skipped:
            self.stderr.write(f"{path}: line {line}: skipped: {reason}")
        self.stdout.write(f"Imported {result.summary()}.")

    def _import(self, lines, options):
        return import_pairs(
            project_slug=options["project"],
            lines=lines,
            format=options["format"],
            project_name=options["name"],
            max_pairs_per_prompt=options["max_pairs_per_prompt"],
            gold_from_labels=options["gold_from_labels"],
        )
