"""train_reward_model, evaluate_reward_model and score_responses: what they print and store."""

import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from labeling.models import Response
from rewardmodel.models import ResponseReward, RewardModelVersion
from tests.rewardmodel.conftest import marker_project

pytestmark = pytest.mark.django_db


def run(name, *args):
    out, err = StringIO(), StringIO()
    call_command(name, *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def last_json_line(output: str) -> dict:
    return json.loads(output.strip().splitlines()[-1])


@pytest.fixture
def trained(project, tiny_training):
    tiny_training.REWARD_MODEL_TRAINING = {**tiny_training.REWARD_MODEL_TRAINING, "epochs": 8}
    marker_project(project, prompts=40)
    out, _ = run("train_reward_model", "--project", project.slug)
    return last_json_line(out)


def test_train_prints_the_active_version_and_its_metrics_as_json_on_its_last_line(project, trained):
    assert trained["status"] == "trained"
    assert trained["version"] == 1 and trained["version_status"] == "active"
    assert trained["device"] == "cpu" and trained["judgments"] == 80
    assert {"accuracy", "n", "log_loss", "ece"} <= set(trained["metrics"])
    assert trained["metrics"]["accuracy"] >= 0.9  # raters always prefer the marker; the model learned it
    assert {"train", "evaluate", "score"} <= set(trained["durations"])
    version = RewardModelVersion.objects.get(project=project)
    assert version.status == RewardModelVersion.Status.ACTIVE and version.metrics == trained["metrics"]


def test_train_options_override_the_settings_and_are_recorded(project, tiny_training):
    marker_project(project, prompts=12)
    out, _ = run(
        "train_reward_model", "--project", project.slug, "--epochs", "1", "--lr", "0.0005", "--precision", "bf16"
    )
    assert last_json_line(out)["status"] == "trained"
    config = RewardModelVersion.objects.get(project=project).config
    assert (config["epochs"], config["learning_rate"], config["precision"]) == (1, 0.0005, "bf16")
    assert config["max_length"] == 48  # from the settings, not overridden


def test_train_refuses_bad_options_and_unknown_projects_plainly(project, tiny_training):
    marker_project(project, prompts=4)
    with pytest.raises(CommandError, match="epochs must be at least 1"):
        run("train_reward_model", "--project", project.slug, "--epochs", "0")
    with pytest.raises(CommandError, match="No project with slug 'nope'"):
        run("train_reward_model", "--project", "nope")
    assert not RewardModelVersion.objects.filter(project=project).exists()


def test_train_without_judgments_says_so_and_exits_nonzero(project, tiny_training):
    marker_project(project, prompts=4, judge=False)
    out, err = StringIO(), StringIO()
    with pytest.raises(SystemExit) as exit_:
        call_command("train_reward_model", "--project", project.slug, stdout=out, stderr=err)
    assert exit_.value.code == 1
    assert last_json_line(out.getvalue())["status"] in ("failed", "skipped")
    assert err.getvalue().strip()  # the reason, in words
    assert not RewardModelVersion.objects.filter(project=project, status="active").exists()


def hh_line(question: str, chosen: str, rejected: str) -> str:
    return json.dumps(
        {
            "chosen": f"\n\nHuman: {question}\n\nAssistant: {chosen}",
            "rejected": f"\n\nHuman: {question}\n\nAssistant: {rejected}",
        }
    )


def test_evaluate_reports_accuracy_n_log_loss_and_ece_on_a_labeled_hh_file(project, trained, tmp_path):
    data = tmp_path / "held_out.jsonl"
    # Unseen pairs of the same kind: the human chose the reply with the marker.
    lines = [hh_line(f"question seven {i}", f"three marker five {i}", f"two four six {i}") for i in range(10)]
    data.write_text("\n".join(lines) + "\n")

    out, _ = run("evaluate_reward_model", "--project", project.slug, "--data", str(data))

    result = last_json_line(out)
    assert result["version"] == 1 and result["n"] == 10
    assert result["accuracy"] >= 0.8
    assert result["log_loss"] > 0 and 0 <= result["ece"] <= 1

    # The same pairs with the labels flipped: the model now disagrees with the file.
    flipped = tmp_path / "flipped.jsonl"
    flipped.write_text(
        "\n".join(hh_line(f"question seven {i}", f"two four six {i}", f"three marker five {i}") for i in range(10))
    )
    assert last_json_line(run("evaluate_reward_model", "--project", "demo", "--data", str(flipped))[0])[
        "accuracy"
    ] == pytest.approx(1 - result["accuracy"])


def test_evaluate_reads_labeled_pairs_files_and_skips_unlabeled_lines(project, trained, tmp_path):
    def pair(i, label=None):
        line = {"prompt": f"question nine {i}", "response_a": f"marker {i}", "response_b": f"plain {i}"}
        return json.dumps({**line, "label": label} if label else line)

    data = tmp_path / "pairs.jsonl"
    data.write_text("\n".join([pair(1, "a"), pair(2, "b"), pair(3, "tie"), pair(4)]) + "\n")

    result = last_json_line(run("evaluate_reward_model", "--project", "demo", "--data", str(data))[0])

    assert result["n"] == 3


def test_evaluate_names_the_bad_line_and_refuses_missing_versions(project, trained, tmp_path):
    data = tmp_path / "broken.jsonl"
    data.write_text(hh_line("q", "a", "b") + "\n{not json\n")
    with pytest.raises(CommandError, match="line 2"):
        run("evaluate_reward_model", "--project", "demo", "--data", str(data))
    with pytest.raises(CommandError, match="No such trained version"):
        run("evaluate_reward_model", "--project", "demo", "--version", "7", "--data", str(data))
    with pytest.raises(CommandError, match="Cannot read"):
        run("evaluate_reward_model", "--project", "demo", "--data", str(tmp_path / "missing.jsonl"))


def test_score_responses_stores_one_reward_per_response_for_the_version(project, trained):
    version = RewardModelVersion.objects.get(project=project)
    ResponseReward.objects.filter(version=version).delete()

    out, _ = run("score_responses", "--project", project.slug)

    responses = Response.objects.filter(prompt__project=project).count()
    assert last_json_line(out) == {"version": 1, "responses_scored": responses}
    assert ResponseReward.objects.filter(version=version).count() == responses


def test_score_responses_without_a_trained_version_is_refused(project):
    with pytest.raises(CommandError, match="No such trained version"):
        run("score_responses", "--project", project.slug)
