import json
import uuid

from django.core.management.base import BaseCommand, CommandError

from labeling.models import Project
from rewardmodel.models import Trigger
from rewardmodel.pipeline import RetrainStatus, run_retrain
from rewardmodel.tasks import publish_retrain


class Command(BaseCommand):
    help = (
        "Train a reward-model version on a project's judgments now (in this process), evaluate it on the "
        "project's held-out split, score its responses, activate it unless it is worse than the active one, "
        "and refresh pairs. The last line printed is the result as JSON."
    )

    def add_arguments(self, parser):
        parser.add_argument("--project", required=True, help="Project slug.")
        parser.add_argument("--epochs", type=int)
        parser.add_argument("--batch-size", type=int)
        parser.add_argument("--max-length", type=int)
        parser.add_argument("--lr", type=float, help="Peak learning rate.")
        parser.add_argument("--backbone", help="A local model directory or hub id (default: bundled MiniLM).")
        parser.add_argument("--device", help='"auto" (default), "cpu", "cuda", "cuda:N".')
        parser.add_argument("--seed", type=int)
        parser.add_argument(
            "--precision",
            help='"auto" (default: bf16 autocast on CUDA, fp32 on CPU), "fp32", or "bf16" (autocast; on CPUs with '
            "native bf16 instructions this trains ~1.6x faster, see rewardmodel/core/README.md).",
        )
        parser.add_argument(
            "--include-reference-labels",
            action="store_true",
            default=None,
            help="Also train on imported reference labels (overrides the project setting for this run).",
        )

    def handle(self, *args, **options):
        try:
            project = Project.objects.get(slug=options["project"])
        except Project.DoesNotExist:
            raise CommandError(f"No project with slug {options['project']!r}.") from None
        overrides = {
            "epochs": options["epochs"],
            "batch_size": options["batch_size"],
            "max_length": options["max_length"],
            "learning_rate": options["lr"],
            "backbone": options["backbone"],
            "device": options["device"],
            "seed": options["seed"],
            "precision": options["precision"],
        }
        try:
            outcome = run_retrain(
                project_id=project.pk,
                owner=f"command-{uuid.uuid4()}",
                trigger=Trigger.COMMAND,
                config_overrides=overrides,
                include_reference_labels=options["include_reference_labels"],
                force=True,
            )
        except ValueError as error:  # a bad option value (TrainConfig validation)
            raise CommandError(str(error)) from None
        if outcome.pending_again:
            # Asked for while this ran (a trigger, a button): the workers take it from here.
            publish_retrain(project_id=project.pk)
        version = outcome.version
        result = {
            "status": outcome.status.value,
            "version": version.version if version else None,
            "version_status": version.status if version else None,
            "device": version.device if version else None,
            "judgments": version.judgments_count if version else 0,
            "metrics": version.metrics if version else {},
            "durations": version.durations if version else {},
        }
        if outcome.status != RetrainStatus.TRAINED:
            self.stderr.write(outcome.detail or (version.error if version else ""))
        self.stdout.write(json.dumps(result, sort_keys=True, default=float))
        if outcome.status != RetrainStatus.TRAINED:
            raise SystemExit(1)
