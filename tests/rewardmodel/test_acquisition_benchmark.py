"""benchmarks/acquisition.py end to end on a tiny randomly initialised backbone: simulated raters answer through
assignment and judgments, the loop retrains after each batch, and every budget gets a point on the curve."""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from labeling.models import Judgment, Project
from rewardmodel.models import RewardModelVersion
from tests.rewardmodel.core.conftest import WORDS

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("acquisition_benchmark", ROOT / "benchmarks" / "acquisition.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


@pytest.fixture
def hh_file(tmp_path):
    """HH lines in the tiny vocabulary: the reply with "marker" is the chosen one."""
    rng = np.random.default_rng(0)
    filler = WORDS[WORDS.index("the") : -1]

    def words(k):
        return " ".join(rng.choice(filler, size=k))

    lines = []
    for _ in range(60):
        prompt = f"\n\nHuman: {words(5)}?"
        chosen, rejected = f"{words(2)} marker {words(2)}", words(5)
        lines.append(
            json.dumps({"chosen": f"{prompt}\n\nAssistant: {chosen}", "rejected": f"{prompt}\n\nAssistant: {rejected}"})
        )
    path = tmp_path / "tiny_hh.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def args_for(bench, tmp_path, hh_file, backbone, *extra):
    return bench.parser().parse_args(
        [
            "--data", str(hh_file), "--backbone", backbone, "--max-length", "48", "--test-pairs", "20",
            "--batch", "10", "--cache-dir", str(tmp_path / "cache"), "--results-dir", str(tmp_path / "results"),
            "--plot", str(tmp_path / "acquisition.svg"), *extra,
        ]
    )  # fmt: skip


@pytest.mark.django_db
@pytest.mark.parametrize("task, seeds, budgets", [("hh", 2, [10, 20]), ("oracle", 1, [10, 30])])
def test_it_runs_every_strategy_and_seed_and_gives_one_point_per_budget(
    bench, tmp_path, hh_file, tiny_backbone_dir, task, seeds, budgets, capsys
):
    args = args_for(
        bench, tmp_path, hh_file, tiny_backbone_dir,
        "--task", task, "--strategies", "random,doptimal:0.5", "--seeds", str(seeds),
        "--budgets", ",".join(map(str, budgets)),
    )  # fmt: skip

    summary = bench.run(args)

    data = json.loads((tmp_path / "results" / f"curves-{task}-cheap.json").read_text())
    for spec in ("random", "doptimal:0.5"):
        curves = data["results"][spec]
        assert len(curves) == seeds
        for curve in curves:
            labels = [n for n, _ in curve]
            assert labels == list(range(10, budgets[-1] + 1, 10))  # a point per batch of 10, budgets among them
            assert all(len(correct) == 20 for _, correct in curve)
        assert sorted(summary["table"][spec]) == budgets
        for row in summary["table"][spec].values():
            assert 0.0 <= row["ci"][0] <= row["accuracy"] <= row["ci"][1] <= 1.0
    last = budgets[-1]
    assert "vs_random" in summary["table"]["doptimal:0.5"][last] and "vs_random" not in summary["table"]["random"][last]
    assert summary["labels_needed"]["random"] <= last
    out = capsys.readouterr().out
    assert f"labels needed to reach random's accuracy at {last} labels" in out
    assert (tmp_path / "acquisition.svg").read_text().startswith("<?xml")
    # Every simulated project is gone again, its judgments with it.
    assert not Project.objects.filter(slug__startswith="bench-acq-").exists()
    assert not Judgment.objects.exists()


@pytest.mark.django_db
def test_its_raters_answer_through_assignment_and_the_loop_retrains_after_each_batch(
    bench, hh_file, tiny_backbone_dir, tmp_path
):
    from rewardmodel.core.config import TrainConfig

    pairs = bench.load_pairs(hh_file)
    pool, test = bench.split(pairs, test=20)
    config = TrainConfig(backbone=tiny_backbone_dir, max_length=48, device="cpu")
    learner = bench.CheapLearner(bench.cached_embeddings(bench.all_items(pairs), config, tmp_path))

    curve = bench.simulate(
        pool=pool, test=test, truth=bench.Truth("hh"), learner=learner, strategy="uncertainty", seed=0,
        budgets=[25], batch=10, keep=True,
    )  # fmt: skip

    project = Project.objects.get(slug__startswith="bench-acq-")
    judgments = Judgment.objects.filter(project=project)
    assert [n for n, _ in curve] == [10, 20, 25]  # the last batch stops at the budget
    assert judgments.count() == 25 and judgments.values("rater").distinct().count() == 1
    # Each answer is the reference label, given through the screen's left/right.
    for judgment in judgments.select_related("comparison"):
        assert judgment.outcome == judgment.comparison.reference_label
    versions = RewardModelVersion.objects.filter(project=project)
    assert versions.count() == 3 and versions.filter(status="active").count() == 1
    open_reasons = set(project.comparisons.filter(status="open").values_list("selected_by", flat=True))
    assert open_reasons <= {"uncertainty", "exploration"} and "uncertainty" in open_reasons


@pytest.mark.django_db
def test_its_full_mode_fine_tunes_through_the_pipeline_after_each_batch(
    bench, tmp_path, hh_file, tiny_backbone_dir, tiny_training
):
    args = args_for(
        bench, tmp_path, hh_file, tiny_backbone_dir, "--task", "hh", "--mode", "full", "--strategies", "random",
        "--seeds", "1", "--budgets", "10,20",
    )  # fmt: skip

    summary = bench.run(args)

    data = json.loads((tmp_path / "results" / "curves-hh-full.json").read_text())
    assert [n for n, _ in data["results"]["random"][0]] == [10, 20]
    assert sorted(summary["table"]["random"]) == [10, 20]
    # run_retrain saved a checkpoint per version (it read them back to score the test pairs); none is left.
    assert data["results"]["random"][0][1][1] and not list(tiny_training.MODEL_ROOT.glob("bench-acq-*/*"))


def test_its_intervals_cover_the_mean_and_a_budget_past_the_pool_reads_the_last_point(bench):
    curves = [[(10, [1, 0, 1, 1]), (20, [1, 1, 1, 1])], [(10, [0, 0, 1, 1]), (17, [1, 1, 0, 1])]]
    assert bench.at_labels(curves, 20).tolist() == [[1, 1, 1, 1], [1, 1, 0, 1]]  # seed 2's pool ran out at 17
    assert bench.at_labels(curves, 15) is None

    summary = bench.summarise({"random": curves, "doptimal": curves}, [10, 20])
    row = summary["table"]["doptimal"][10]
    assert row["accuracy"] == pytest.approx(5 / 8)
    assert row["ci"][0] < 5 / 8 < row["ci"][1]
    assert row["vs_random"] == 0.0 and row["vs_random_ci"] == (0.0, 0.0)  # the same curves: no difference
    assert summary["labels_needed"] == {"random": 20, "doptimal": 20, "_goal": pytest.approx(7 / 8)}
