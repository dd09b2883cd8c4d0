"""Where a version's embedding cache lives, and how many are kept (rewardmodel.core.embeddings has the format).

One file per version under MODEL_ROOT, beside the project's checkpoints: every
worker that can load a checkpoint can read it, the GPU worker that trained the
version writes it during the scoring pass, and the CPU worker that refits heads
reads it (rewardmodel.refit). A file, not a table: the refit reads all of it at
once (one read of n x d float32, ~1.5 KB a response for MiniLM's 384), which
100,000 rows of blobs would make a slow query and a large table.

Bounded: a project keeps the caches of its active version and of its newest
scored version only (KEEP); older files are deleted when a new one is written.
A cache that is missing or belongs to another checkpoint is no cache: the next
retrain writes one, and until then the refit does nothing.

Nothing here loads torch: core.embeddings imports it, so the functions that
need it import it when called (a web process may import this module).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from django.conf import settings

from rewardmodel.models import RewardModelVersion

if TYPE_CHECKING:
    from rewardmodel.core.embeddings import EmbeddingCache

log = logging.getLogger(__name__)


def path_for(version: RewardModelVersion) -> Path:
    from rewardmodel.core.embeddings import cache_path  # loads torch: only when a cache is used

    return cache_path(Path(settings.MODEL_ROOT), version.project.slug, version.version)


def fingerprint_of(version: RewardModelVersion) -> str | None:
    """The fingerprint of the version's checkpoint; None when it has no readable checkpoint."""
    from rewardmodel.core.embeddings import checkpoint_fingerprint  # loads torch: only when a cache is used

    if not version.artifact_path:
        return None
    try:
        return checkpoint_fingerprint(Path(version.artifact_path))
    except OSError:
        return None


def load(version: RewardModelVersion) -> EmbeddingCache | None:
    """The version's cache, if there is one made from its checkpoint as it is now."""
    from rewardmodel.core.embeddings import load_cache  # loads torch: only when a cache is used

    fingerprint = fingerprint_of(version)
    return None if fingerprint is None else load_cache(path_for(version), fingerprint=fingerprint)


def save(version: RewardModelVersion, cache: EmbeddingCache) -> Path:
    from rewardmodel.core.embeddings import save_cache  # loads torch: only when a cache is used

    return save_cache(path_for(version), cache)


def prune(version: RewardModelVersion) -> list[Path]:
    """Delete the project's cache files except this version's and the active version's; returns what went."""
    keep = {version.version}
    keep.update(
        RewardModelVersion.objects.filter(
            project_id=version.project_id, status=RewardModelVersion.Status.ACTIVE
        ).values_list("version", flat=True)
    )
    folder = path_for(version).parent
    removed = []
    for file in folder.glob("*.safetensors") if folder.is_dir() else []:
        if file.stem.isdigit() and int(file.stem) not in keep:
            file.unlink(missing_ok=True)
            removed.append(file)
    return removed


def save_from_scoring(version: RewardModelVersion, response_ids: list[int], vectors: list) -> Path | None:
    """Write the version's cache from the embeddings of its scoring pass (pipeline.store_rewards).
    Returns the path, or None when the version has no readable checkpoint to key it by."""
    # numpy and torch load only in the process that writes a cache (a worker), never in a web process.
    import numpy as np

    from rewardmodel.core.embeddings import EmbeddingCache  # loads torch, as above

    fingerprint = fingerprint_of(version)
    if fingerprint is None or not vectors:
        return None
    ids = np.asarray(response_ids, dtype=np.int64)
    order = np.argsort(ids, kind="stable")
    return save(version, EmbeddingCache(ids[order], np.concatenate(vectors)[order], fingerprint))
