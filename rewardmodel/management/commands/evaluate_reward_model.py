import json
from pathlib import Path

from django.core.management.base import CommandError

from labeling.importing import ImportFileError, parse_labeled_pairs
from rewardmodel.core.checkpoint import CheckpointError, load_checkpoint
from rewardmodel.core.config import TrainConfig
from rewardmodel.core.evaluate import evaluate
from rewardmodel.core.examples import PreferenceExample
from rewardmodel.core.model import resolve_device
from rewardmodel.management.base import VersionOptionCommand

TARGETS = {"a": 1.0, "b": 0.0, "tie": 0.5}


class Command(VersionOptionCommand):
    help = (
        "Evaluate a reward-model version on a labeled file (hh, or pairs with a label). "
        "The last line printed is JSON with accuracy, n, log_loss and ece."
    )

    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.add_argument("--data", required=True, type=Path, help="A JSONL file in hh or pairs format.")
        parser.add_argument("--format", choices=["hh", "pairs"], help="Default: detected from the first line.")

    def handle(self, *args, **options):
        version = self.trained_version(options)
        try:
            with options["data"].open("rb") as lines:
                pairs = parse_labeled_pairs(lines, format=options["format"])
        except OSError as error:
            raise CommandError(f"Cannot read {options['data']}: {error.strerror}") from None
        except ImportFileError as error:
            raise CommandError(f"{options['data']}, {error}") from None
        examples = [
            PreferenceExample(p.conversation, p.response_a, p.response_b, target=TARGETS[p.label])
            for p in pairs
            if p.label in TARGETS
        ]
        if not examples:
            raise CommandError("The file has no labeled pairs (hh lines, or pairs lines with a label).")
        config = TrainConfig.from_dict(version.config)
        try:
            model, tokenizer, _ = load_checkpoint(
                Path(version.artifact_path), device=str(resolve_device(config.device))
            )
        except CheckpointError as error:
            raise CommandError(f"Version {version.version}'s checkpoint was refused: {error}") from None
        metrics = evaluate(model, tokenizer, examples, config)
        self.stdout.write(json.dumps({"version": version.version, **metrics}, sort_keys=True, default=float))
