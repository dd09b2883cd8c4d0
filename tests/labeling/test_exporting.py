import io
import json
from datetime import datetime

import pytest
from django.core.management import CommandError, call_command

from labeling.exporting import export_preferences, rater_pseudonym, stream_preferences
from labeling.models import Judgment
from tests.factories import ComparisonFactory, JudgmentFactory, ProjectFactory

A, B, TIE, BOTH_BAD = "a", "b", "tie", "both_bad"


@pytest.fixture
def raters(alice, bob, carol):
    return [alice, bob, carol]


@pytest.fixture
def judged(project, raters):
    """One comparison per case of the export rules, each judged by up to three raters."""
    cases = {
        "a_majority": [(A, 3), (A, 2), (TIE, None)],
        "b_unanimous": [(B, 1), (B, 1)],
        "single_a": [(A, 1)],
        "ties": [(TIE, None), (TIE, None), (A, 1)],
        "both_bad": [(BOTH_BAD, None), (BOTH_BAD, None), (TIE, None)],
        "both_bad_equal": [(BOTH_BAD, None), (TIE, None)],
        "split": [(A, 2), (B, 2)],
        "outvoted_but_stronger": [(A, 1), (A, 1), (B, 3)],
        "unjudged": [],
    }
    comparisons = {}
    for name, votes in cases.items():
        comparison = ComparisonFactory(prompt__project=project)
        for rater, (outcome, strength) in zip(raters, votes, strict=False):
            JudgmentFactory(comparison=comparison, rater=rater, outcome=outcome, strength=strength)
        comparisons[name] = comparison
    # Another project's judgments never leak into this one's export.
    JudgmentFactory(comparison__prompt__project=ProjectFactory(), rater=raters[0], outcome=A, strength=3)
    return comparisons


def export(project, format) -> tuple[list[dict], object]:
    out = io.StringIO()
    result = export_preferences(project=project, format=format, out=out)
    return [json.loads(line) for line in out.getvalue().splitlines()], result


@pytest.mark.django_db
def test_trl_export_writes_decisive_comparisons_in_the_conversational_format(project, judged):
    lines, result = export(project, "trl")

    by_id = {line["comparison_id"]: line for line in lines}
    assert set(by_id) == {judged[name].pk for name in ("a_majority", "b_unanimous", "single_a")}
    a_majority = judged["a_majority"]
    assert by_id[a_majority.pk] == {
        "prompt": a_majority.prompt.conversation,
        "chosen": [{"role": "assistant", "content": a_majority.response_a.text}],
        "rejected": [{"role": "assistant", "content": a_majority.response_b.text}],
        "margin": pytest.approx(5 / 3),  # (3 + 2 + 0) / 3 judgments
        "comparison_id": a_majority.pk,
    }
    b_unanimous = by_id[judged["b_unanimous"].pk]
    assert b_unanimous["chosen"][0]["content"] == judged["b_unanimous"].response_b.text
    assert b_unanimous["rejected"][0]["content"] == judged["b_unanimous"].response_a.text
    assert b_unanimous["margin"] == 1.0
    assert by_id[judged["single_a"].pk]["margin"] == 1.0
    assert result.written == 3


@pytest.mark.django_db
def test_trl_export_counts_what_it_leaves_out_and_why(project, judged):
    _, result = export(project, "trl")

    assert (result.ties, result.both_bad, result.split, result.no_judgments) == (1, 2, 2, 1)
    assert result.summary() == (
        "Wrote 3 comparisons (trl); excluded 1 ties, 2 both-bad, 2 split, 1 without judgments."
    )


@pytest.mark.django_db
def test_raw_export_writes_every_judgment_with_a_pseudonymous_rater(project, judged, raters):
    judgment = Judgment.objects.get(comparison=judged["split"], rater=raters[0])
    Judgment.objects.filter(pk=judgment.pk).update(
        criteria={"helpfulness": "a"}, rationale="A is kinder.", flags=["unsafe"], left="b", time_spent_ms=1234
    )

    out = io.StringIO()
    result = export_preferences(project=project, format="raw", out=out)

    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert result.written == len(lines) == Judgment.objects.filter(project=project).count()
    line = next(line for line in lines if line["judgment_id"] == judgment.pk)
    comparison = judged["split"]
    assert line == {
        "judgment_id": judgment.pk,
        "comparison_id": comparison.pk,
        "prompt_id": comparison.prompt_id,
        "response_a_id": comparison.response_a_id,
        "response_b_id": comparison.response_b_id,
        "rater": rater_pseudonym(raters[0].pk),
        "outcome": "a",
        "strength": 2,
        "criteria": {"helpfulness": "a"},
        "rationale": "A is kinder.",
        "flags": ["unsafe"],
        "time_spent_ms": 1234,
        "left": "b",
        "created_at": judgment.created_at.isoformat(),
    }
    assert datetime.fromisoformat(line["created_at"]) == judgment.created_at
    assert {line["outcome"] for line in lines} == {"a", "b", "tie", "both_bad"}
    assert next(line for line in lines if line["outcome"] == "tie")["strength"] is None


@pytest.mark.django_db
def test_raw_export_names_no_rater_but_keeps_them_apart(project, judged, raters):
    out = io.StringIO()
    export_preferences(project=project, format="raw", out=out)

    text = out.getvalue()
    for rater in raters:
        assert rater.username not in text
        assert rater.email not in text
    pseudonyms = {json.loads(line)["rater"] for line in text.splitlines()}
    assert pseudonyms == {rater_pseudonym(r.pk) for r in raters}
    assert all(len(p) == 16 and int(p, 16) >= 0 for p in pseudonyms)
    assert rater_pseudonym(raters[0].pk) == rater_pseudonym(raters[0].pk)


@pytest.mark.django_db
def test_pseudonyms_depend_on_the_secret_key(settings):
    before = rater_pseudonym(1)
    settings.SECRET_KEY = "another secret key, long enough for the test"
    assert rater_pseudonym(1) != before


@pytest.mark.django_db
@pytest.mark.parametrize("format", ["trl", "raw"])
def test_exports_read_the_database_in_a_constant_number_of_queries(
    project, raters, format, django_assert_max_num_queries
):
    for _ in range(30):
        comparison = ComparisonFactory(prompt__project=project)
        for rater in raters:
            JudgmentFactory(comparison=comparison, rater=rater, outcome=A, strength=2)

    with django_assert_max_num_queries(3):
        lines, result = export(project, format)

    assert result.written == len(lines) == (30 if format == "trl" else 90)


@pytest.mark.django_db
@pytest.mark.parametrize("format", ["trl", "raw"])
def test_streamed_chunks_hold_the_same_lines_as_the_export(project, judged, format):
    out = io.StringIO()
    export_preferences(project=project, format=format, out=out)

    chunks = list(stream_preferences(project=project, format=format, chunk_chars=200))

    assert len(chunks) > 1
    assert "".join(chunks) == out.getvalue()


@pytest.mark.django_db
def test_it_rejects_an_unknown_format(project):
    with pytest.raises(ValueError, match="Unknown export format 'csv'"):
        export_preferences(project=project, format="csv", out=io.StringIO())


@pytest.mark.django_db
def test_the_command_writes_the_file_and_prints_the_counts_to_stderr(project, judged, tmp_path, capsys):
    path = tmp_path / "prefs.jsonl"

    call_command("export_preferences", "--project", "demo", "--format", "trl", "--output", str(path))

    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert len(lines) == 3
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "Wrote 3 comparisons (trl); excluded 1 ties, 2 both-bad, 2 split, 1 without judgments." in captured.err


@pytest.mark.django_db
def test_the_command_writes_to_stdout_without_an_output_file(project, judged, capsys):
    call_command("export_preferences", "--project", "demo", "--format", "raw")

    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == Judgment.objects.filter(project=project).count()
    assert "alice" not in captured.out
    assert "Wrote 19 judgments (raw)." in captured.err


@pytest.mark.django_db
def test_the_command_refuses_an_unknown_project(db):
    with pytest.raises(CommandError, match="No project with slug 'nope'"):
        call_command("export_preferences", "--project", "nope", "--format", "trl")
