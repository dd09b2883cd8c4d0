"""Fast refresh between retrains: the embedding cache a retrain leaves, and the head refit that re-ranks the
queue from new judgments without a fine-tune (rewardmodel.refit), on a tiny randomly initialised backbone."""

import shutil
from pathlib import Path

import numpy as np
import pytest

from labeling.models import Comparison, Judgment, Response
from rewardmodel import embedding_cache, pipeline, refit
from rewardmodel.core import head as core_head
from rewardmodel.core.checkpoint import load_checkpoint
from rewardmodel.core.config import TrainConfig
from rewardmodel.core.embeddings import EmbeddingCache, load_cache, save_cache
from rewardmodel.core.scoring import score, score_with_embeddings
from rewardmodel.models import ProjectLoop, ResponseReward, RewardModelVersion
from rewardmodel.refit import RefitStatus, run_head_refit
from rewardmodel.triggers import refit_if_due
from tests.factories import JudgmentFactory, ResponseFactory
from tests.rewardmodel.conftest import marker_project, published

pytestmark = pytest.mark.django_db


def retrain(project):
    outcome = pipeline.run_retrain(project_id=project.pk, owner="test", force=True)
    assert outcome.status == pipeline.RetrainStatus.TRAINED, outcome.detail
    return outcome.version


def rewards_of(version) -> dict[int, float]:
    return dict(ResponseReward.objects.filter(version=version).values_list("response_id", "reward"))


def open_queue(project) -> dict[int, tuple[float, str]]:
    return {
        pk: (priority, selected_by)
        for pk, priority, selected_by in Comparison.objects.filter(project=project, status="open").values_list(
            "pk", "priority", "selected_by"
        )
    }


def prefer_maybe(project, raters, *, count=None, against="") -> list[tuple[int, int]]:
    """Judge open comparisons that have a 'maybe' response (at most count of them; with `against`, only
    those whose other response has that word): the raters now prefer it, every time. Returns the (winner,
    loser) response ids."""
    judged = []
    for comparison in (
        Comparison.objects.filter(project=project, status="open").select_related("response_a", "response_b")
    ).order_by("pk"):
        a, b = comparison.response_a, comparison.response_b
        if "maybe" not in a.text + b.text or (count is not None and len(judged) >= count):
            continue
        if against not in (b.text if "maybe" in a.text else a.text):
            continue
        winner = "a" if "maybe" in a.text else "b"
        for rater in raters:
            JudgmentFactory(comparison=comparison, rater=rater, outcome=winner, strength=3)
        judged.append((a.pk, b.pk) if winner == "a" else (b.pk, a.pk))
    return judged


def agreement(rewards: dict[int, float], judged: list[tuple[int, int]]) -> float:
    """Share of (winner, loser) pairs the rewards rank the raters' way."""
    return float(np.mean([rewards[winner] > rewards[loser] for winner, loser in judged]))


# --- the embeddings: what the head reads, from the scoring pass ---------------------------------------------


@pytest.mark.parametrize("num_heads", [1, 3])
def test_the_scoring_pass_gives_the_rewards_and_core_heads_embeddings_at_once(tiny_backbone_dir, num_heads):
    from rewardmodel.core.model import load_backbone

    model, tokenizer = load_backbone(tiny_backbone_dir, num_heads=num_heads)
    config = TrainConfig(backbone=tiny_backbone_dir, max_length=48, device="cpu", eval_batch_size=2)
    items = [([{"role": "user", "content": f"question {w}"}], f"sure {w} marker") for w in ("one", "two", "three")]

    rewards, embeddings = score_with_embeddings(model, tokenizer, items, config)

    assert embeddings.shape == (3, 32)
    # The same vectors as core.head.embed computes in a pass of its own, and the same rewards as plain scoring.
    assert np.allclose(embeddings.numpy(), core_head.embed(model, tokenizer, items, config), atol=1e-5)
    assert np.allclose(np.asarray(score(model, tokenizer, items, config)), rewards.numpy(), atol=1e-5)


def test_a_cache_is_read_back_only_with_the_fingerprint_it_was_written_with(tmp_path):
    cache = EmbeddingCache(np.array([3, 7]), np.ones((2, 4), np.float32), "abc")
    path = save_cache(tmp_path / "e" / "1.safetensors", cache)

    loaded = load_cache(path, fingerprint="abc")
    assert loaded is not None and loaded.response_ids.tolist() == [3, 7] and loaded.embeddings.shape == (2, 4)
    assert load_cache(path, fingerprint="another checkpoint") is None
    assert load_cache(tmp_path / "missing.safetensors", fingerprint="abc") is None
    path.write_bytes(b"not a safetensors file")
    assert load_cache(path, fingerprint="abc") is None


def test_rows_added_to_a_cache_stay_sorted_and_replace_the_ids_it_had():
    cache = EmbeddingCache(np.array([2, 5]), np.array([[2.0], [5.0]], np.float32), "f")

    merged = cache.with_rows([9, 2, 1], [[9.0], [20.0], [1.0]])

    assert merged.response_ids.tolist() == [1, 2, 5, 9]
    assert merged.embeddings[:, 0].tolist() == [1.0, 20.0, 5.0, 9.0]
    assert merged.rows_of(np.array([5, 4, 9])).tolist() == [2, -1, 3]


# --- the retrain leaves a cache per version ----------------------------------------------------------------


def test_a_retrain_caches_every_responses_embedding_keyed_by_its_checkpoint(project, tiny_training):
    marker_project(project)

    version = retrain(project)

    cache = embedding_cache.load(version)
    assert cache is not None
    assert cache.response_ids.tolist() == sorted(rewards_of(version))
    assert embedding_cache.path_for(version).name == "1.safetensors"
    # They are the version's own backbone's embeddings, as core.head.embed computes them.
    model, tokenizer, meta = load_checkpoint(Path(version.artifact_path))
    response = Response.objects.select_related("prompt").get(pk=cache.response_ids[5])
    config = TrainConfig.from_dict(meta["config"])
    expected = core_head.embed(model, tokenizer, [(response.prompt.conversation, response.text)], config)
    assert np.allclose(cache.embeddings[5], expected[0], atol=1e-5)


def test_the_cache_of_one_version_is_never_read_for_another(project, tiny_training):
    marker_project(project)
    first = retrain(project)
    second = retrain(project)
    assert RewardModelVersion.objects.get(pk=second.pk).status == RewardModelVersion.Status.ACTIVE

    # Pruned: only the active version's (and the newest's, the same here) cache is kept.
    assert not embedding_cache.path_for(first).exists()
    # A file in the right place but made from another checkpoint is no cache.
    shutil.copy(embedding_cache.path_for(second), embedding_cache.path_for(first))
    assert embedding_cache.load(first) is None
    assert embedding_cache.load(second) is not None


# --- the refit -------------------------------------------------------------------------------------------------


@pytest.fixture
def trained(project, tiny_training, alice, bob):
    """A project whose first version is active, with 'maybe' responses in open comparisons nobody judged."""
    project.raters.add(alice, bob)
    marker_project(project)
    version = retrain(project)
    assert Comparison.objects.filter(project=project, status="open", response_a__text__contains="maybe").exists()
    return project, version


def test_new_judgments_re_rank_the_queue_without_a_retrain(trained, alice, bob):
    project, version = trained
    rewards_before, queue_before = rewards_of(version), open_queue(project)
    # Against 'marker', which the version learned to prefer: its rewards rank these pairs the other way.
    judged = prefer_maybe(project, [alice, bob], count=24, against="marker")
    assert len(judged) == 24 and agreement(rewards_before, judged) <= 0.25

    outcome = run_head_refit(project_id=project.pk)

    assert outcome.status == RefitStatus.REFITTED, outcome.detail
    assert RewardModelVersion.objects.filter(project=project).count() == 1  # no new version: no fine-tune
    version.refresh_from_db()
    assert version.status == RewardModelVersion.Status.ACTIVE
    assert version.head_refit["last_judgment_id"] == Judgment.objects.latest("pk").pk
    assert version.head_refit["train_pairs"] > version.data_snapshot["train_comparisons"]
    rewards_after = rewards_of(version)
    assert set(rewards_after) == set(rewards_before)  # every response rescored
    # What the raters said now shows in the rewards: from none of the 24 pairs their way to most (0.92-0.96
    # in runs here; the tiny backbone's training is not bit-for-bit the same from machine to machine).
    assert agreement(rewards_after, judged) >= 0.75, (agreement(rewards_before, judged), version.head_refit)
    # And the queue follows: the open comparisons were re-ranked by the new rewards.
    queue_after = open_queue(project)
    common = set(queue_before) & set(queue_after)
    assert common and any(queue_before[pk][0] != queue_after[pk][0] for pk in common)


def test_a_duplicate_delivery_changes_nothing(trained, alice, bob):
    project, version = trained
    prefer_maybe(project, [alice, bob], count=24)
    assert run_head_refit(project_id=project.pk).status == RefitStatus.REFITTED
    rewards, queue = rewards_of(version), open_queue(project)
    version.refresh_from_db()
    record = version.head_refit

    again = run_head_refit(project_id=project.pk)

    assert again.status == RefitStatus.SKIPPED
    version.refresh_from_db()
    assert version.head_refit == record and rewards_of(version) == rewards and open_queue(project) == queue


def test_a_late_refit_that_read_fewer_judgments_never_overwrites_a_newer_one(trained, alice, bob):
    project, version = trained
    prefer_maybe(project, [alice, bob], count=24)
    assert run_head_refit(project_id=project.pk).status == RefitStatus.REFITTED
    version.refresh_from_db()
    rewards = rewards_of(version)
    cache = embedding_cache.load(version)
    older = {"last_judgment_id": version.data_snapshot["last_judgment_id"]}

    written = refit._write_rewards(version, cache.response_ids, np.zeros((len(cache.response_ids), 1)), older)

    assert not written and rewards_of(version) == rewards


def test_a_refit_that_fails_leaves_the_previous_rewards_and_priorities_serving(trained, alice, bob, monkeypatch):
    project, version = trained
    prefer_maybe(project, [alice, bob], count=24)
    rewards, queue = rewards_of(version), open_queue(project)

    def broken(*args, **kwargs):
        raise FloatingPointError("the fit diverged")

    monkeypatch.setattr(refit, "fit_heads", broken)
    outcome = run_head_refit(project_id=project.pk)

    assert outcome.status == RefitStatus.FAILED
    version.refresh_from_db()
    assert "the fit diverged" in version.head_refit["error"]
    assert rewards_of(version) == rewards and open_queue(project) == queue


def test_without_a_cache_the_refit_does_nothing(trained, alice, bob):
    project, version = trained
    prefer_maybe(project, [alice, bob], count=24)
    embedding_cache.path_for(version).unlink()
    rewards, queue = rewards_of(version), open_queue(project)

    outcome = run_head_refit(project_id=project.pk)

    assert outcome.status == RefitStatus.SKIPPED and "no embedding cache" in outcome.detail
    assert rewards_of(version) == rewards and open_queue(project) == queue


def test_a_refit_embeds_responses_imported_after_the_version_was_trained(trained, alice, bob):
    project, version = trained
    prompt = Comparison.objects.filter(project=project).first().prompt
    late = ResponseFactory(prompt=prompt, text="sure marker good answer late")
    prefer_maybe(project, [alice, bob], count=3)

    outcome = run_head_refit(project_id=project.pk)

    assert outcome.status == RefitStatus.REFITTED and outcome.record["responses_embedded"] == 1
    assert late.pk in rewards_of(version)
    cache = embedding_cache.load(version)
    assert late.pk in cache.response_ids.tolist()
    # Its embedding is the frozen backbone's.
    model, tokenizer, meta = load_checkpoint(Path(version.artifact_path))
    own = core_head.embed(model, tokenizer, [(prompt.conversation, late.text)], TrainConfig.from_dict(meta["config"]))
    assert np.allclose(cache.embeddings[cache.rows_of([late.pk])[0]], own[0], atol=1e-5)


def test_an_ensemble_version_is_refitted_with_as_many_bootstrapped_heads(project, tiny_training, alice, bob):
    tiny_training.REWARD_MODEL_ENSEMBLE_HEADS = 3
    project.raters.add(alice, bob)
    marker_project(project)
    from rewardmodel.models import LoopSettings

    LoopSettings.objects.update_or_create(project=project, defaults={"acquisition": "ensemble"})
    version = retrain(project)
    prefer_maybe(project, [alice, bob], count=24)

    assert run_head_refit(project_id=project.pk).status == RefitStatus.REFITTED

    heads = list(ResponseReward.objects.filter(version=version).values_list("head_rewards", flat=True))
    assert all(len(h) == 3 for h in heads)
    spread = np.array(heads).std(axis=1)
    assert spread.max() > 0  # the heads saw different bootstrap draws


def test_the_refit_uses_the_shared_head_fit(trained, alice, bob, monkeypatch):
    """The refit is core.head's Bradley-Terry MAP fit, not a copy of it."""
    project, _ = trained
    prefer_maybe(project, [alice, bob], count=24)
    calls = []
    real = core_head.fit_heads

    def counted(*args, **kwargs):
        calls.append(kwargs["num_heads"])
        return real(*args, **kwargs)

    monkeypatch.setattr(refit, "fit_heads", counted)
    assert run_head_refit(project_id=project.pk).status == RefitStatus.REFITTED
    assert calls == [1]


# --- the trigger ----------------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_every_refit_every_judgments_one_refit_is_handed_to_the_default_queue(trained, alice, bob, broker):
    from rewardmodel.models import LoopSettings
    from rewardmodel.tasks import wait_for_publisher

    project, _ = trained
    LoopSettings.objects.update_or_create(project=project, defaults={"refit_every": 4, "retrain_every": 0})
    prefer_maybe(project, [alice], count=3)
    assert refit_if_due(project_id=project.pk) is None  # 3 new judgments: not yet

    prefer_maybe(project, [bob], count=1)
    assert refit_if_due(project_id=project.pk) == ""
    assert refit_if_due(project_id=project.pk) is None  # handed over already: not twice
    assert wait_for_publisher()

    assert published(broker) == [("rewardmodel.tasks.refit_heads", [project.pk], {})]
    assert ProjectLoop.objects.get(project=project).refit_requested_at is not None
    # The refit starting takes the request: the next judgments may ask again.
    run_head_refit(project_id=project.pk)
    assert ProjectLoop.objects.get(project=project).refit_requested_at is None


def test_the_refit_task_is_routed_to_the_default_queue(settings):
    assert settings.CELERY_TASK_ROUTES["rewardmodel.tasks.refit_heads"] == {"queue": "default"}


def test_no_refit_is_due_without_an_active_version(project, loop_settings, alice):
    loop_settings.refit_every = 1
    loop_settings.save()
    JudgmentFactory(comparison__prompt__project=project, rater=alice)

    assert refit_if_due(project_id=project.pk) is None
    assert not ProjectLoop.objects.filter(project=project, refit_requested_at__isnull=False).exists()
