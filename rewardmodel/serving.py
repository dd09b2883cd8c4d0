"""Scoring with a project's active reward model, for the score API.

A checkpoint is loaded once per process and kept in a small LRU cache keyed
by version id: activation switches the active version's id, so the next request
loads the new model and the old one ages out. Loading goes through
core.checkpoint.load_checkpoint, which verifies every file's sha256 and refuses pickle
files; nothing here unpickles.

Web processes score on the CPU (REWARD_MODEL_SERVING_DEVICE, default "cpu"):
the GPUs belong to the training workers. One model serves one request at a
time (a lock per model), because concurrent forward passes on the CPU only
fight over the same cores and each gets slower. torch itself loads with the
first model a process serves, not when the process starts.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings

from labeling.models import Project
from rewardmodel.core.config import TrainConfig
from rewardmodel.models import RewardModelVersion

log = logging.getLogger(__name__)

# Models kept in memory per process: the active one, plus the one it replaced
# while requests that started before the switch finish.
CACHE_SIZE = 2


class NoActiveVersion(Exception):
    """The project has no active reward model version yet."""


class ModelUnavailable(Exception):
    """The active version's checkpoint cannot be loaded (missing, corrupt, tampered with)."""


@dataclass
class LoadedModel:
    version_id: int
    version: int
    artifact_path: str
    model: object
    tokenizer: object
    config: TrainConfig  # the one the model was trained with
    lock: threading.Lock = field(default_factory=threading.Lock)


_cache: OrderedDict[int, LoadedModel] = OrderedDict()
_cache_lock = threading.Lock()


def active_version(project: Project) -> RewardModelVersion:
    version = (
        RewardModelVersion.objects.filter(project=project, status=RewardModelVersion.Status.ACTIVE)
        .only("id", "project_id", "version", "status", "artifact_path")
        .first()
    )
    if version is None:
        raise NoActiveVersion(
            f"Project {project.slug!r} has no active reward model yet: train one (Retrain now) or activate a "
            "ready version, then try again."
        )
    return version


def score_responses(*, project: Project, conversation: list[dict], responses: list[str]) -> tuple[int, list[float]]:
    """(version number, one reward per response) from the project's active version.

    An ensemble model gives one reward per head; each response gets their mean, as stored rewards do.
    """
    # torch loads on the first score request of a web process, not when it starts (as in _load).
    from rewardmodel.core.scoring import mean_reward, score

    loaded = model_for(active_version(project))
    with loaded.lock:
        rewards = score(loaded.model, loaded.tokenizer, [(conversation, text) for text in responses], loaded.config)
    return loaded.version, [mean_reward(r) for r in rewards]


def model_for(version: RewardModelVersion) -> LoadedModel:
    """The version's model, from the cache or loaded from its checkpoint."""
    with _cache_lock:
        # Loading under the lock: two requests racing for a fresh version must
        # not load it twice (twice the memory, twice the wait).
        loaded = _cache.get(version.pk)
        if loaded is not None and loaded.artifact_path == version.artifact_path:
            _cache.move_to_end(version.pk)
            return loaded
        loaded = _load(version)
        _cache[version.pk] = loaded
        _cache.move_to_end(version.pk)
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
        return loaded


def clear_cache() -> None:
    with _cache_lock:
        _cache.clear()


def cached_version_ids() -> list[int]:
    with _cache_lock:
        return list(_cache)


def _load(version: RewardModelVersion) -> LoadedModel:
    # torch and transformers load with the first model a web process serves,
    # not when it starts: most web processes never score.
    from rewardmodel.core.checkpoint import CheckpointError, load_checkpoint

    if not version.artifact_path:
        raise ModelUnavailable(f"Version {version.version} has no checkpoint on record.")
    try:
        model, tokenizer, metadata = load_checkpoint(
            Path(version.artifact_path), device=settings.REWARD_MODEL_SERVING_DEVICE
        )
    except (CheckpointError, OSError, ValueError) as error:
        log.error(
            "could not load the checkpoint of reward model %s at %s: %s", version.pk, version.artifact_path, error
        )
        raise ModelUnavailable(
            f"The active reward model (version {version.version}) could not be loaded; an admin needs to check its "
            "checkpoint (see the server log)."
        ) from error
    config = TrainConfig.from_dict(metadata.get("config") or {})
    return LoadedModel(version.pk, version.version, version.artifact_path, model, tokenizer, config)
