import json
import os
import pickle
from pathlib import Path

import pytest

from rewardmodel.core.checkpoint import CheckpointError, default_model_root, load_checkpoint, save_checkpoint
from rewardmodel.core.config import TrainConfig
from rewardmodel.core.scoring import score
from rewardmodel.core.train import train

from .conftest import marker_pairs


@pytest.fixture(scope="module")
def trained(tiny_backbone):
    config = TrainConfig(backbone=tiny_backbone, max_length=48, batch_size=8, learning_rate=1e-3, device="cpu")
    return train(config, marker_pairs(48), marker_pairs(16, seed=1))


@pytest.fixture
def saved(trained, tmp_path) -> Path:
    return save_checkpoint(
        tmp_path / "models",
        "demo",
        1,
        trained.model,
        trained.tokenizer,
        trained.config,
        trained.metrics,
        data_snapshot={"judgments": 48, "last_judgment_id": 1234},
    )


def items():
    return [(e.conversation, r) for e in marker_pairs(12, seed=3) for r in (e.response_a, e.response_b)]


def test_a_round_trip_gives_identical_scores(trained, saved):
    model, tokenizer, metadata = load_checkpoint(saved)

    assert score(model, tokenizer, items(), trained.config) == score(
        trained.model, trained.tokenizer, items(), trained.config
    )
    assert saved == saved.parent.parent / "demo" / "1"
    assert metadata["config"] == trained.config.to_dict()
    assert metadata["metrics"]["eval"]["n"] == 16
    assert metadata["data_snapshot"] == {"judgments": 48, "last_judgment_id": 1234}
    assert set(metadata["libraries"]) >= {"python", "torch", "transformers", "safetensors", "tokenizers"}
    assert len(metadata["sha256"]["model.safetensors"]) == 64
    assert sorted(p.name for p in saved.iterdir() if p.suffix in (".bin", ".pt", ".pth")) == []


def test_it_refuses_a_corrupted_weights_file(saved):
    weights = saved / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))

    with pytest.raises(
        CheckpointError, match=r"model\.safetensors does not match the sha256 .* corrupt or was tampered"
    ):
        load_checkpoint(saved)


def test_it_refuses_a_tampered_sha256(saved):
    metadata = json.loads((saved / "metadata.json").read_text())
    metadata["sha256"]["model.safetensors"] = "0" * 64
    (saved / "metadata.json").write_text(json.dumps(metadata))

    with pytest.raises(CheckpointError, match="recorded 0000"):
        load_checkpoint(saved)


class _Boobytrap:
    def __reduce__(self):
        return (os.system, (f"touch {self.sentinel}",))


@pytest.mark.parametrize("name", ["pytorch_model.bin", "model.pt", "optimizer.pth", "extra.pkl"])
def test_it_never_unpickles_a_file_in_the_checkpoint(saved, tmp_path, name):
    trap = _Boobytrap()
    trap.sentinel = tmp_path / "pickle-was-loaded"
    (saved / name).write_bytes(pickle.dumps(trap))

    with pytest.raises(CheckpointError, match=f"refusing to load .*{name}.* safetensors only"):
        load_checkpoint(saved)

    assert not trap.sentinel.exists()


def test_it_refuses_weights_that_metadata_does_not_list(saved):
    (saved / "model.safetensors").rename(saved / "model-00001-of-00001.safetensors")

    with pytest.raises(CheckpointError, match="does not list: model-00001-of-00001.safetensors"):
        load_checkpoint(saved)


def test_it_refuses_a_folder_without_metadata(tmp_path, trained):
    trained.model.save_pretrained(tmp_path / "plain")

    with pytest.raises(CheckpointError, match="has no metadata.json"):
        load_checkpoint(tmp_path / "plain")


def test_it_never_overwrites_a_version(saved, trained):
    with pytest.raises(FileExistsError, match="already exists"):
        save_checkpoint(saved.parent.parent, "demo", 1, trained.model, trained.tokenizer, trained.config, {}, {})


def test_a_failed_save_leaves_no_folder_behind(trained, tmp_path):
    class BrokenTokenizer:
        def save_pretrained(self, directory):
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path, "demo", 2, trained.model, BrokenTokenizer(), trained.config, {}, {})

    assert list((tmp_path / "demo").iterdir()) == []


@pytest.mark.parametrize("project", ["../escape", "a/b", ".hidden", ""])
def test_it_refuses_a_project_name_that_is_not_a_plain_folder_name(trained, tmp_path, project):
    with pytest.raises(ValueError, match="not a safe folder name"):
        save_checkpoint(tmp_path, project, 1, trained.model, trained.tokenizer, trained.config, {}, {})


def test_the_model_root_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("MODEL_ROOT", "/srv/models")
    assert default_model_root() == Path("/srv/models")
    monkeypatch.delenv("MODEL_ROOT")
    assert default_model_root() == Path("var/models")
