"""Judgments of a project -> reward-model training and evaluation examples.

Aggregation. Each judgment becomes a soft target P(A preferred) through
core.examples.soft_target (ties 0.5, strength -> margin); "both bad" carries
no preference and is dropped. A comparison judged by several raters becomes
ONE example whose target is the weighted mean of its judgments' targets and
whose weight is the sum of their weights: three raters who agree pull three
times as hard as one, and a 2-1 split becomes a soft target near 0.5 instead
of a coin flip. A judgment weighs what its rater does under the project's
judgment_weighting (labeling.quality.weights.judgment_weights, the same weights
as the TRL export: 1 each with equal weights, so the mean and the count;
0 for excluded raters, whose judgments then leave, like every weight-0 one).
Repeats (a rater's second look, for self-consistency) are never votes.
snapshot["weighting"] records the weighting the version was trained with.

Held-out split. By comparison, from a hash of its id: the same comparison is
always on the same side, so every model version is evaluated on the same
questions (and more of them as raters judge more), which is what makes
"is version 7 better than version 6" answerable.

Reference labels (e.g. HH-RLHF's human choice) count like one more judgment
("clearly" better) when the project opts in (LoopSettings.train_on_reference_labels),
and are always available as a second evaluation: the model against the
dataset's label on held-out comparisons.
"""

import hashlib
from dataclasses import dataclass, field

from django.db.models import Max

from labeling.models import Comparison, Judgment, Project
from labeling.quality.weights import judgment_weights
from rewardmodel.core.examples import PreferenceExample, soft_target
from rewardmodel.loop import loop_settings_for

HELD_OUT_PERCENT = 20
REFERENCE_STRENGTH = 2  # an imported label says "better", not by how much


def is_held_out(comparison_id: int) -> bool:
    digest = hashlib.sha256(f"comparison:{comparison_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % 100 < HELD_OUT_PERCENT


@dataclass
class ProjectDataset:
    train: list[PreferenceExample] = field(default_factory=list)
    held_out: list[PreferenceExample] = field(default_factory=list)  # from raters' judgments
    held_out_reference: list[PreferenceExample] = field(default_factory=list)  # from reference labels
    train_comparison_ids: list[int] = field(default_factory=list)
    held_out_comparison_ids: list[int] = field(default_factory=list)
    snapshot: dict = field(default_factory=dict)


def build_dataset(*, project: Project, include_reference_labels: bool | None = None) -> ProjectDataset:
    """Read the project's judgments (and reference labels) into examples.

    include_reference_labels: None follows the project's loop settings.
    """
    if include_reference_labels is None:
        include_reference_labels = loop_settings_for(project).train_on_reference_labels

    weights = judgment_weights(project=project)
    targets: dict[int, list[tuple[float, float]]] = {}  # comparison id -> [(target, weight)]
    stats = Judgment.objects.filter(project=project).aggregate(last_id=Max("pk"))
    judgments = Judgment.objects.filter(project=project, repeat_of__isnull=True).order_by("comparison_id", "pk")
    n_judgments = n_both_bad = n_weightless = 0
    for comparison_id, rater_id, outcome, strength in judgments.values_list(
        "comparison_id", "rater_id", "outcome", "strength"
    ).iterator(chunk_size=5000):
        n_judgments += 1
        target = soft_target(outcome, strength)
        if target is None:
            n_both_bad += 1
            continue
        weight = weights.of(rater_id)
        if weight == 0:
            n_weightless += 1
            continue
        targets.setdefault(comparison_id, []).append((target, weight))

    reference_targets: dict[int, tuple[float, float]] = {}
    for comparison_id, label in (
        Comparison.objects.filter(project=project).exclude(reference_label="").values_list("pk", "reference_label")
    ):
        reference_targets[comparison_id] = (soft_target(label, REFERENCE_STRENGTH if label != "tie" else None), 1.0)

    wanted = set(targets) | set(reference_targets)
    rows = Comparison.objects.filter(project=project)
    if len(wanted) <= 5000:
        # Beyond this an IN list costs more than reading the project's rows.
        rows = rows.filter(pk__in=wanted)
    texts = {
        pk: (conversation, a, b)
        for pk, conversation, a, b in rows.values_list(
            "pk", "prompt__conversation", "response_a__text", "response_b__text"
        ).iterator(chunk_size=2000)
        if pk in wanted
    }

    dataset = ProjectDataset()
    for comparison_id in sorted(wanted):
        conversation, text_a, text_b = texts[comparison_id]
        held_out = is_held_out(comparison_id)
        evidence = list(targets.get(comparison_id, []))
        reference = reference_targets.get(comparison_id)
        if held_out:
            if evidence:
                dataset.held_out.append(_example(conversation, text_a, text_b, evidence))
                dataset.held_out_comparison_ids.append(comparison_id)
            if reference is not None:
                dataset.held_out_reference.append(_example(conversation, text_a, text_b, [reference]))
            continue
        if include_reference_labels and reference is not None:
            evidence.append(reference)
        if evidence:
            dataset.train.append(_example(conversation, text_a, text_b, evidence))
            dataset.train_comparison_ids.append(comparison_id)

    dataset.snapshot = {
        "judgments": n_judgments,
        "both_bad_dropped": n_both_bad,
        "last_judgment_id": stats["last_id"],
        "train_comparisons": len(dataset.train),
        "held_out_comparisons": len(dataset.held_out),
        "held_out_reference_comparisons": len(dataset.held_out_reference),
        "reference_labels_used_for_training": bool(include_reference_labels),
        "train_comparison_ids_sha256": _ids_digest(dataset.train_comparison_ids),
        "weighting": {**weights.description(), "judgments_left_out": n_weightless},
    }
    return dataset


def _example(conversation, text_a, text_b, targets: list[tuple[float, float]]) -> PreferenceExample:
    total = sum(weight for _, weight in targets)
    return PreferenceExample(
        conversation=conversation,
        response_a=text_a,
        response_b=text_b,
        target=sum(target * weight for target, weight in targets) / total,
        weight=total,
    )


def _ids_digest(ids: list[int]) -> str:
    return hashlib.sha256(",".join(map(str, ids)).encode()).hexdigest()
