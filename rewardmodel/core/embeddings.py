"""Embeddings of every response, cached per model version, so that reward heads can be refitted in a second.

A fine-tune moves the whole backbone; between two fine-tunes the backbone is frozen, and reward heads fitted on
its embeddings of the judged responses (core.head.fit_heads: a Bradley-Terry logistic regression on e_a − e_b)
take milliseconds, where a fine-tune takes minutes. The embedding is core.head.embed's: the mean over real
tokens of the backbone's last hidden state, the features the acquisition benchmark's cheap mode fits heads on.
It is captured during the scoring pass the pipeline runs anyway (a hook on the base model: no second forward
pass; the pass then computes the last layer at every position, not only the first token the reward head reads,
which costs that pass ~14%), and stored beside the checkpoint.

Not the classifier's own input (BERT's tanh pooler over [CLS]): a fine-tuned pooler is nearly constant outside
the one direction its head reads (measured on the test suite's tiny BERT: responses differ by 0.5% of the
vectors' norm), so new judgments about anything else would have nothing to move; the mean of token states
keeps what each response says.

The cache file, one per version (<root>/<project>/embeddings/<version>.safetensors):

    response_ids   int64 (n,)      ascending
    embeddings     float32 (n, d)  row i belongs to response_ids[i]
    metadata       {"fingerprint": sha256 of the checkpoint's metadata.json, "format": "1"}

safetensors, not .npy/.npz: no pickle path at all, and the same library as the checkpoints. A file whose
fingerprint is not its version's checkpoint's (a checkpoint written again, a stale copy) is ignored, so the
cache is keyed by the version and the exact weights that made it. Written to a temporary file and renamed,
so a reader sees the old file or the new one.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from .checkpoint import METADATA_FILE, checkpoint_dir

logger = logging.getLogger(__name__)

FORMAT = "1"


class _Captured:
    def __init__(self):
        self.states: torch.Tensor | None = None

    def pop(self, attention_mask: torch.Tensor) -> torch.Tensor:
        """(rows, hidden) CPU float32: the last forward pass's last hidden state, mean-pooled over real tokens
        (exactly core.head.embed's pooling)."""
        states, self.states = self.states, None
        if states is None:
            raise RuntimeError("the base model was not called in the forward pass")
        mask = attention_mask.to(states.device).unsqueeze(-1).float()
        return ((states.float() * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)).cpu()


@contextlib.contextmanager
def capture_embeddings(model):
    """Within this block, every forward pass of the reward model leaves its embeddings in the yielded object's
    pop(attention_mask)."""
    captured = _Captured()

    def hook(_module, _args, output):
        captured.states = output[0].detach() if isinstance(output, tuple) else output.last_hidden_state.detach()

    handle = model.base_model.register_forward_hook(hook)
    try:
        yield captured
    finally:
        handle.remove()


# --- the cache -------------------------------------------------------------------


@dataclass(frozen=True)
class EmbeddingCache:
    response_ids: np.ndarray  # int64 (n,), ascending
    embeddings: np.ndarray  # float32 (n, d)
    fingerprint: str  # checkpoint_fingerprint() of the version's checkpoint

    def rows_of(self, response_ids: np.ndarray) -> np.ndarray:
        """Row index of each response id; -1 where the cache has none."""
        response_ids = np.asarray(response_ids, dtype=np.int64)
        if not len(self.response_ids):
            return np.full(len(response_ids), -1, dtype=np.int64)
        at = np.minimum(np.searchsorted(self.response_ids, response_ids), len(self.response_ids) - 1)
        return np.where(self.response_ids[at] == response_ids, at, -1)

    def with_rows(self, response_ids, embeddings) -> EmbeddingCache:
        """This cache plus (or, for ids it has, with replaced) rows; still sorted by id."""
        ids = np.concatenate([self.response_ids, np.asarray(response_ids, dtype=np.int64)])
        vectors = np.concatenate([self.embeddings, np.asarray(embeddings, dtype=np.float32).reshape(-1, self.dim)])
        # The last occurrence of an id wins: reverse, take first occurrences, sort.
        _, first = np.unique(ids[::-1], return_index=True)
        keep = np.sort(len(ids) - 1 - first)
        order = keep[np.argsort(ids[keep], kind="stable")]
        return EmbeddingCache(ids[order], vectors[order], self.fingerprint)

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])


def cache_path(root: Path, project: str, version: int) -> Path:
    """<root>/<project>/embeddings/<version>.safetensors, beside the project's checkpoints."""
    return checkpoint_dir(root, project, version).parent / "embeddings" / f"{version}.safetensors"


def checkpoint_fingerprint(checkpoint: Path) -> str:
    """sha256 of the checkpoint's metadata.json, which records the sha256 of every weight file (and when it was
    written): a different checkpoint, even of the same version number, has a different fingerprint."""
    return hashlib.sha256((Path(checkpoint) / METADATA_FILE).read_bytes()).hexdigest()


def save_cache(path: Path, cache: EmbeddingCache) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, staging = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    os.close(fd)
    try:
        save_file(
            {
                "response_ids": np.ascontiguousarray(cache.response_ids, dtype=np.int64),
                "embeddings": np.ascontiguousarray(cache.embeddings, dtype=np.float32),
            },
            staging,
            metadata={"fingerprint": cache.fingerprint, "format": FORMAT},
        )
        os.replace(staging, path)  # atomic on one filesystem
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(staging)
        raise
    return path


def load_cache(path: Path, *, fingerprint: str) -> EmbeddingCache | None:
    """The cache at path if it was made from the checkpoint with this fingerprint; None if missing or not."""
    path = Path(path)
    try:
        with safe_open(path, framework="np") as file:
            header = file.metadata() or {}
            tensors = {key: file.get_tensor(key) for key in file.keys()}  # noqa: SIM118 (not a dict)
    except FileNotFoundError:
        return None
    except (OSError, SafetensorError, ValueError) as error:
        logger.warning("ignoring the unreadable embedding cache %s: %s", path, error)
        return None
    if header.get("fingerprint") != fingerprint or header.get("format") != FORMAT:
        logger.info("ignoring the embedding cache %s: made from another checkpoint", path)
        return None
    try:
        cache = EmbeddingCache(
            tensors["response_ids"].astype(np.int64),
            tensors["embeddings"].astype(np.float32),
            fingerprint,
        )
    except KeyError as missing:
        logger.warning("ignoring the embedding cache %s: it lacks %s", path, missing)
        return None
    if cache.embeddings.ndim != 2 or len(cache.embeddings) != len(cache.response_ids):
        logger.warning("ignoring the embedding cache %s: its arrays do not fit together", path)
        return None
    return cache
