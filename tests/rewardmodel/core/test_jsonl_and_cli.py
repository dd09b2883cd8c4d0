import json

import pytest

from rewardmodel.core.checkpoint import load_checkpoint
from rewardmodel.core.cli import main
from rewardmodel.core.examples import holdout_split
from rewardmodel.core.jsonl import read_preferences

from .conftest import marker_pairs


def hh_line(conversation: str, chosen: str, rejected: str) -> str:
    return json.dumps(
        {"chosen": conversation + "\n\nAssistant: " + chosen, "rejected": conversation + "\n\nAssistant: " + rejected}
    )


def test_it_reads_hh_transcripts_into_a_conversation_and_two_replies(tmp_path):
    path = tmp_path / "hh.jsonl"
    path.write_text(
        hh_line("\n\nHuman: why cats\n\nAssistant: why not\n\nHuman: tell me", "sure", "no")
        + "\n\n"  # blank lines are skipped
        + hh_line("\n\nHuman: hi", "Human: extra turn\n\nAssistant: two replies", "one reply")
        + "\n"
    )

    first, second = read_preferences(path)

    assert first.conversation == [
        {"role": "user", "content": "why cats"},
        {"role": "assistant", "content": "why not"},
        {"role": "user", "content": "tell me"},
    ]
    assert (first.response_a, first.response_b, first.target) == ("sure", "no", 1.0)
    assert second.conversation == [{"role": "user", "content": "hi"}]
    assert second.response_a == "Human: extra turn\n\nAssistant: two replies"


def test_it_reads_trl_conversational_preferences(tmp_path):
    path = tmp_path / "trl.jsonl"
    record = {
        "prompt": [{"role": "user", "content": "why cats"}],
        "chosen": [{"role": "assistant", "content": "sure"}],
        "rejected": [{"role": "assistant", "content": "no"}],
    }
    path.write_text(json.dumps(record) + "\n")

    (example,) = read_preferences(path)

    assert (example.conversation, example.response_a, example.response_b) == (record["prompt"], "sure", "no")


def test_a_bad_line_is_reported_with_its_file_and_line_number(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(hh_line("\n\nHuman: hi", "a", "b") + "\n" + json.dumps({"chosen": "no transcript"}) + "\n")

    with pytest.raises(ValueError, match=r"bad.jsonl, line 2: "):
        read_preferences(path)


def test_the_holdout_split_is_deterministic_and_disjoint():
    examples = marker_pairs(50)

    train_a, held_a = holdout_split(examples, eval_fraction=0.2, seed=0)
    train_b, held_b = holdout_split(examples, eval_fraction=0.2, seed=0)

    assert (train_a, held_a) == (train_b, held_b)
    assert len(held_a) == 10 and len(train_a) == 40
    assert not {id(e) for e in train_a} & {id(e) for e in held_a}


def test_the_command_line_trains_saves_and_evaluates(tiny_backbone, tmp_path, capsys):
    data = tmp_path / "pairs.jsonl"
    data.write_text(
        "".join(
            json.dumps({"prompt": e.conversation, "chosen": winner, "rejected": loser}) + "\n"
            for e in marker_pairs(40)
            for winner, loser in [(e.response_a, e.response_b) if e.target == 1.0 else (e.response_b, e.response_a)]
        )
    )

    code = main(
        [
            "train",
            str(data),
            "--project",
            "demo",
            "--version",
            "3",
            "--model-root",
            str(tmp_path / "models"),
            "--backbone",
            tiny_backbone,
            "--max-length",
            "48",
            "--learning-rate",
            "1e-3",
            "--epochs",
            "2",
            "--device",
            "cpu",
        ]
    )

    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["checkpoint"] == str(tmp_path / "models" / "demo" / "3")
    assert printed["metrics"]["eval"]["n"] == 8
    _, _, metadata = load_checkpoint(tmp_path / "models" / "demo" / "3")
    assert metadata["config"]["epochs"] == 2
    assert metadata["data_snapshot"]["pairs"] == 40

    assert main(["evaluate", str(tmp_path / "models" / "demo" / "3"), str(data)]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 40


def test_the_command_line_explains_a_bad_file(tmp_path, capsys):
    data = tmp_path / "pairs.jsonl"
    data.write_text("{not json\n")

    code = main(["train", str(data), "--project", "demo", "--version", "1", "--model-root", str(tmp_path)])

    assert code == 2
    assert "pairs.jsonl, line 1" in capsys.readouterr().err
