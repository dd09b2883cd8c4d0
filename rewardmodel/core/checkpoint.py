"""Checkpoints: one folder per project and version, safetensors only, written atomically, verified on load.

    <root>/<project>/<version>/
        model.safetensors        the weights (sharded models: several *.safetensors plus their index)
        config.json              the transformers model config
        tokenizer.json, ...      the tokenizer
        metadata.json            training config, metrics, data snapshot, library versions, sha256 of every file

Nothing here unpickles: weights are safetensors, metadata is JSON, and a folder holding any pickle-format file
(*.bin, *.pt, *.pth, *.pkl, *.pickle, *.ckpt) is refused before anything is read.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shutil
import tempfile
from datetime import UTC, datetime
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

from transformers import AutoModelForSequenceClassification, AutoTokenizer

from .config import TrainConfig

METADATA_FILE = "metadata.json"
FORMAT_VERSION = 1
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
_PROJECT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
_LIBRARIES = ("torch", "transformers", "tokenizers", "safetensors")


class CheckpointError(Exception):
    """A checkpoint folder that must not be loaded: tampered, corrupt, incomplete or holding pickle files."""


def default_model_root() -> Path:
    """The MODEL_ROOT environment variable, else var/models (relative to the working directory)."""
    return Path(os.environ.get("MODEL_ROOT") or "var/models")


def checkpoint_dir(root: Path, project: str, version: int) -> Path:
    if not _PROJECT_NAME.match(str(project)):
        raise ValueError(f"project name {project!r} is not a safe folder name (letters, digits, '_', '.', '-')")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"version must be a positive integer, got {version!r}")
    return Path(root) / str(project) / str(version)


def save_checkpoint(
    root: Path,
    project: str,
    version: int,
    model,
    tokenizer,
    config: TrainConfig,
    metrics: dict[str, Any],
    data_snapshot: dict[str, Any],
) -> Path:
    """Write <root>/<project>/<version>/ and return its path; an existing version is never overwritten.

    Everything is written into a temporary folder beside the final one and renamed into place, so a reader
    sees either no folder or a complete one, even if this process dies half-way.
    """
    final = checkpoint_dir(root, project, version)
    if final.exists():
        raise FileExistsError(f"checkpoint {final} already exists; versions are never overwritten")
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{version}.", suffix=".partial", dir=final.parent))
    try:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        files = sorted(p for p in staging.rglob("*") if p.is_file())
        if not any(p.suffix == ".safetensors" for p in files):
            raise CheckpointError(f"{type(model).__name__}.save_pretrained wrote no safetensors file")
        meta = {
            "format_version": FORMAT_VERSION,
            "project": str(project),
            "version": version,
            "created_at": datetime.now(UTC).isoformat(),
            "config": config.to_dict(),
            "metrics": metrics,
            "data_snapshot": data_snapshot,
            "libraries": {"python": platform.python_version(), **{n: _version_of(n) for n in _LIBRARIES}},
            "sha256": {p.relative_to(staging).as_posix(): _sha256(p) for p in files},
        }
        _write_durably(staging / METADATA_FILE, json.dumps(meta, indent=2, sort_keys=True, default=float))
        for p in files:
            _fsync(p)
        os.rename(staging, final)  # atomic on one filesystem; fails if another writer got there first
        _fsync(final.parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return final


def load_checkpoint(path: Path, *, device: str = "cpu"):
    """(model in eval mode, tokenizer, metadata) from a folder save_checkpoint wrote, after verifying it.

    Raises CheckpointError when the folder holds a pickle file, lacks metadata.json, holds a safetensors file
    metadata.json does not list, or any listed file's sha256 differs from the recorded one.
    """
    meta = verify_checkpoint(path)
    model = AutoModelForSequenceClassification.from_pretrained(
        path, use_safetensors=True, local_files_only=True, trust_remote_code=False
    )
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=False)
    model.to(device).eval()
    return model, tokenizer, meta


def verify_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint's metadata, once every check of load_checkpoint has passed."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"no checkpoint folder at {path}")
    pickles = sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.suffix.lower() in PICKLE_SUFFIXES)
    if pickles:
        raise CheckpointError(
            f"refusing to load {path}: it holds pickle-format file(s) {', '.join(pickles)}, which can run code "
            "when loaded; checkpoints here are safetensors only"
        )
    try:
        meta = json.loads((path / METADATA_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path} has no {METADATA_FILE}: not a checkpoint written by save_checkpoint") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path / METADATA_FILE} is not valid JSON: {exc}") from None
    recorded = meta.get("sha256") if isinstance(meta, dict) else None
    if not isinstance(recorded, dict) or not recorded:
        raise CheckpointError(f"{path / METADATA_FILE} records no sha256 checksums")
    unlisted = sorted(
        p.relative_to(path).as_posix()
        for p in path.rglob("*.safetensors")
        if p.relative_to(path).as_posix() not in recorded
    )
    if unlisted:
        raise CheckpointError(f"{path} holds weights that {METADATA_FILE} does not list: {', '.join(unlisted)}")
    for name, expected in sorted(recorded.items()):
        file = (path / name).resolve()
        if path.resolve() not in file.parents:
            raise CheckpointError(f"{METADATA_FILE} lists {name!r}, which is outside {path}")
        if not file.is_file():
            raise CheckpointError(f"{path} is incomplete: {name} is missing")
        actual = _sha256(file)
        if actual != expected:
            raise CheckpointError(
                f"{path / name} does not match the sha256 recorded in {METADATA_FILE} "
                f"(recorded {expected}, file has {actual}): the checkpoint is corrupt or was tampered with"
            )
    return meta


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_durably(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _version_of(package: str) -> str | None:
    try:
        return importlib_metadata.version(package)
    except importlib_metadata.PackageNotFoundError:
        return None
