"""Fast refresh between retrains: refit the active version's reward heads on its cached embeddings, rescore,
and re-rank the queue, in about a second instead of a fine-tune's minutes.

A retrain fine-tunes the whole backbone; the priorities it leaves then age
until the next one (retrain_every judgments later, or the nightly schedule).
The refit keeps that version's backbone frozen and fits only the linear reward
heads (core.head.fit_heads, the Bradley-Terry MAP fit) on the vectors the
heads read, which the pipeline cached for every response as it scored them
(core.embeddings, rewardmodel.embedding_cache). tasks.refit_heads runs it on
queue "default" (a CPU is enough) every refit_every judgments
(rewardmodel.triggers).

`run_head_refit` for a project:

1. take the refit request, so that judgments from now on may ask for the next;
2. the active version and its embedding cache; nothing new to learn from (no
   judgment newer than what the version has seen: a duplicate delivery, or a
   retrain that got there first) -> skipped;
3. responses imported after the cache was written get embedded with the
   version's frozen backbone, at most EMBED_PER_REFIT per run (the checkpoint
   is loaded once per worker process, as serving does); any beyond that stay
   unscored and rank after the scored pairs, as acquisition already does;
4. the judgments through dataset.build_dataset (the same aggregation, rater
   weighting and held-out split as a retrain) -> pairs of cached embeddings;
5. fit as many heads as the version has (an ensemble's heads on their own
   bootstrap draws, so "ensemble"/BALD keep reading real disagreement);
   the refit's accuracy on the held-out judgments goes on record;
6. rewards of every cached response replace the version's (one transaction
   under the project row lock, and only while the version is still active and
   no refit that read newer judgments has written: an old or duplicate
   delivery never overwrites a newer fit);
7. refresh_pairs re-ranks the queue.

Failure: nothing is written before step 6, so a crash, a missing cache or a
bad fit leaves the previous rewards and priorities serving; the error goes on
the version's head_refit record. A failure inside step 7 leaves the new
rewards with a queue partly re-ranked (acquisition's "Locks"), which the next
refit or retrain completes.

The refit's heads are their own small reward model on the version's frozen
features (core.head), not a patch of the fine-tuned head: the score API keeps
serving the version's checkpoint as trained, and the next retrain stores the
fine-tuned rewards again. A refit steers which pairs raters see, nothing else.
"""

import logging
import time
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
from django.db import OperationalError, transaction
from django.utils import timezone

from labeling.models import Comparison, Project, Response
from rewardmodel import embedding_cache, loop
from rewardmodel.acquisition import refresh_pairs
from rewardmodel.core.config import TrainConfig
from rewardmodel.core.head import Heads, fit_heads, score_heads
from rewardmodel.dataset import build_dataset
from rewardmodel.models import ResponseReward, RewardModelVersion

log = logging.getLogger(__name__)

# Responses without a cached embedding that one refit embeds (a forward pass of the frozen backbone each;
# MiniLM on two CPU cores does ~20 a second at the demo's lengths). The rest wait for the next refit.
EMBED_PER_REFIT = 32
MIN_PAIRS = 2


class RefitStatus(StrEnum):
    REFITTED = "refitted"  # new rewards written and the queue re-ranked
    SKIPPED = "skipped"  # nothing to do: no active version, no cache, no new judgment, too few pairs
    STALE = "stale"  # the version stopped serving, or a newer refit wrote first: nothing written
    FAILED = "failed"  # a step raised: the previous rewards and priorities keep serving


@dataclass
class RefitOutcome:
    status: RefitStatus
    detail: str = ""
    record: dict | None = None  # what went on the version's head_refit


def run_head_refit(*, project_id: int) -> RefitOutcome:
    """Refit the active version's heads on cached embeddings, rescore the responses, re-rank the queue."""
    loop.take_refit_request(project_id=project_id)
    version = (
        RewardModelVersion.objects.select_related("project")
        .filter(project_id=project_id, status=RewardModelVersion.Status.ACTIVE)
        .first()
    )
    if version is None:
        return RefitOutcome(RefitStatus.SKIPPED, "no active version to refit")
    seen = loop.last_judgment_read(version.data_snapshot, version.head_refit)
    if loop.judgments_after(version.project, seen) == 0:
        return RefitOutcome(RefitStatus.SKIPPED, "no judgment newer than what the active version has seen")
    try:
        return _refit(version)
    except OperationalError:
        raise  # the database went away: the task retries
    except Exception as error:
        log.exception("refitting the heads of %s failed", version)
        _record_error(version, f"{type(error).__name__}: {error}")
        return RefitOutcome(RefitStatus.FAILED, str(error))


def _refit(version: RewardModelVersion) -> RefitOutcome:
    started = time.perf_counter()
    durations = {}

    def lap(name):
        durations[name] = round(time.perf_counter() - started - sum(durations.values()), 3)

    cache = embedding_cache.load(version)
    if cache is None:
        return RefitOutcome(
            RefitStatus.SKIPPED, "the active version has no embedding cache (the next retrain writes one)"
        )
    cache, embedded = _with_new_responses(version, cache)
    lap("embeddings")

    config = TrainConfig.from_dict(version.config)
    dataset = build_dataset(project=version.project)
    sides = {
        pk: (a, b)
        for pk, a, b in Comparison.objects.filter(project=version.project_id).values_list(
            "pk", "response_a_id", "response_b_id"
        )
    }
    train = _pairs(cache, sides, dataset.train_comparison_ids, dataset.train)
    held_out = _pairs(cache, sides, dataset.held_out_comparison_ids, dataset.held_out)
    lap("read_data")
    if len(train.target) < MIN_PAIRS:
        return RefitOutcome(RefitStatus.SKIPPED, f"only {len(train.target)} judged pairs with cached embeddings")

    heads = fit_heads(
        cache.embeddings[train.a],
        cache.embeddings[train.b],
        target=train.target,
        weight=train.weight,
        num_heads=config.num_heads,
        seed=config.seed,
    )
    rewards = score_heads(heads, cache.embeddings)  # (responses, H)
    lap("fit")

    record = {
        "last_judgment_id": dataset.snapshot["last_judgment_id"],
        "judgments": dataset.snapshot["judgments"],
        "train_pairs": int(len(train.target)),
        "heads": heads.num_heads,
        "responses_scored": int(len(cache.response_ids)),
        "responses_embedded": embedded,
        "held_out": _held_out_accuracy(held_out, heads, cache),
        "at": timezone.now().isoformat(),
    }
    if not _write_rewards(version, cache.response_ids, rewards, record):
        return RefitOutcome(RefitStatus.STALE, "the version stopped serving or a newer refit wrote first", record)
    lap("write")
    result = refresh_pairs(project=version.project, version=version)
    lap("refresh_pairs")
    record.update(seconds=round(time.perf_counter() - started, 3), durations=durations)
    record["comparisons_updated"] = result.comparisons_updated
    RewardModelVersion.objects.filter(pk=version.pk).update(head_refit=record)
    return RefitOutcome(RefitStatus.REFITTED, f"{record['train_pairs']} pairs in {record['seconds']} s", record)


def _with_new_responses(version: RewardModelVersion, cache):
    """The cache plus embeddings of up to EMBED_PER_REFIT project responses it lacks (saved back)."""
    rows = list(
        Response.objects.filter(prompt__project=version.project_id)
        .order_by("pk")
        .values_list("pk", "prompt__conversation", "text")
    )
    ids = np.fromiter((pk for pk, _, _ in rows), dtype=np.int64, count=len(rows))
    missing = [rows[i] for i in np.flatnonzero(cache.rows_of(ids) < 0)[:EMBED_PER_REFIT]]
    if not missing:
        return cache, 0
    # Loaded once per worker process and verified, as for the score API (serving.model_for).
    from rewardmodel import serving
    from rewardmodel.core.head import embed

    loaded = serving.model_for(version)
    with loaded.lock:
        vectors = embed(
            loaded.model, loaded.tokenizer, [(conversation, text) for _, conversation, text in missing], loaded.config
        )
    cache = cache.with_rows([pk for pk, _, _ in missing], vectors)
    embedding_cache.save(version, cache)
    return cache, len(missing)


@dataclass
class _Pairs:
    a: np.ndarray  # cache row of each pair's response A
    b: np.ndarray
    target: np.ndarray  # P(A preferred)
    weight: np.ndarray


def _pairs(cache, sides: dict[int, tuple[int, int]], comparison_ids: list[int], examples) -> _Pairs:
    """The dataset's examples as cache rows; pairs with a response the cache lacks are left out."""
    a = cache.rows_of(np.array([sides[pk][0] for pk in comparison_ids], dtype=np.int64))
    b = cache.rows_of(np.array([sides[pk][1] for pk in comparison_ids], dtype=np.int64))
    keep = (a >= 0) & (b >= 0)
    target = np.array([e.target for e in examples], dtype=float)
    weight = np.array([e.weight for e in examples], dtype=float)
    return _Pairs(a[keep], b[keep], target[keep], weight[keep])


def _held_out_accuracy(pairs: _Pairs, heads: Heads, cache) -> dict:
    """The refit's accuracy on the held-out judgments (ties left out; a zero margin counts half), with n."""
    decided = pairs.target != 0.5
    if not decided.any():
        return {"n": 0, "accuracy": None}
    truth = pairs.target[decided] > 0.5
    diff = cache.embeddings[pairs.a[decided]] - cache.embeddings[pairs.b[decided]]
    margin = score_heads(heads, diff).mean(axis=1)  # linear: the difference of the rewards
    return {"n": int(decided.sum()), "accuracy": float(np.mean(np.where(margin == 0, 0.5, (margin > 0) == truth)))}


def _write_rewards(version: RewardModelVersion, response_ids, rewards: np.ndarray, record: dict) -> bool:
    """Replace the version's rewards, if it still serves and no newer refit wrote; False when not."""
    heads = rewards.shape[1] > 1
    new_rows = [
        ResponseReward(
            version_id=version.pk,
            response_id=pk,
            reward=float(row.mean()),
            head_rewards=[float(x) for x in row] if heads else None,
        )
        for pk, row in zip(response_ids.tolist(), rewards, strict=True)
    ]
    with transaction.atomic():
        # Activation takes this lock too: the status read below stays true until we commit.
        Project.objects.select_for_update().filter(pk=version.project_id).first()
        current = (
            RewardModelVersion.objects.filter(pk=version.pk)
            .values_list("status", "data_snapshot", "head_refit")
            .first()
        )
        if current is None or current[0] != RewardModelVersion.Status.ACTIVE:
            return False
        written = loop.last_judgment_read(current[1], current[2])
        if written is not None and (record["last_judgment_id"] or 0) < written:
            return False
        ResponseReward.objects.filter(version=version).delete()
        ResponseReward.objects.bulk_create(new_rows, batch_size=2000)
        RewardModelVersion.objects.filter(pk=version.pk).update(head_refit=record)
    return True


def _record_error(version: RewardModelVersion, error: str) -> None:
    record = dict(version.head_refit or {})
    record.update(error=error, failed_at=timezone.now().isoformat())
    RewardModelVersion.objects.filter(pk=version.pk).update(head_refit=record)
