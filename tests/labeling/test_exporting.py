import io
import json
import os
from datetime import datetime

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from labeling.exporting import export_preferences, rater_pseudonym, stream_preferences
from labeling.models import Judgment, Project, RaterQuality
from labeling.raters import set_excluded
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
    assert result.summary() == ("Wrote 3 comparisons (trl); excluded 1 ties, 2 both-bad, 2 split, 1 without judgments.")


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

    # trl: the weights, the comparisons, the judgments, the texts; raw: the weights, the judgments.
    with django_assert_max_num_queries(4):
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


# --- weighting, exclusions and repeats ----------------------------------------


def trl_by_id(project) -> dict[int, dict]:
    return {line["comparison_id"]: line for line in export(project, "trl")[0]}


def quality(project, rater, *, reliability=None, flagged=False):
    return RaterQuality.objects.create(
        project=project, rater=rater, reliability=reliability, flagged=flagged, computed_at=timezone.now()
    )


def weighted(project, weighting):
    project.judgment_weighting = weighting
    project.save()
    return project


@pytest.mark.django_db
def test_an_excluded_raters_judgments_leave_both_exports_and_come_back_when_included(
    project, judged, raters, admin_user
):
    alice = raters[0]
    before = {format: export_text(project, format) for format in ("trl", "raw")}

    set_excluded(project=project, rater=alice, excluded=True, by=admin_user)

    trl, result = export(project, "trl")
    # a_majority was A 3, A 2, tie: without alice's "much A" it is A 2 against a tie, no majority.
    assert judged["a_majority"].pk not in {line["comparison_id"] for line in trl}
    # single_a had alice's vote alone: now it has none that counts.
    assert judged["single_a"].pk not in {line["comparison_id"] for line in trl}
    assert result.no_judgments == 2
    assert result.weighting == "equal (raters: 1 excluded)"
    assert result.summary().endswith(" Weighting: equal (raters: 1 excluded).")
    raw, raw_result = export(project, "raw")
    assert rater_pseudonym(alice.pk) not in {line["rater"] for line in raw}
    assert len(raw) == Judgment.objects.filter(project=project).exclude(rater=alice).count()
    assert raw_result.summary() == f"Wrote {len(raw)} judgments (raw). Left out the judgments of 1 excluded raters."
    assert Judgment.objects.filter(rater=alice, project=project).count() == 8  # nothing is deleted

    set_excluded(project=project, rater=alice, excluded=False, by=admin_user)
    assert {format: export_text(project, format) for format in ("trl", "raw")} == before


def export_text(project, format) -> str:
    out = io.StringIO()
    export_preferences(project=project, format=format, out=out)
    return out.getvalue()


@pytest.mark.django_db
def test_reliability_weights_decide_majorities_and_margins(project, raters):
    alice, bob, carol = raters
    # Equal: B wins the vote 2-1 but A wins the strengths 3-2: split, left out.
    outvoted = ComparisonFactory(prompt__project=project)
    for rater, outcome, strength in ((alice, A, 3), (bob, B, 1), (carol, B, 1)):
        JudgmentFactory(comparison=outvoted, rater=rater, outcome=outcome, strength=strength)
    # Equal: B 2-1 with margin (2 + 2 - 2) / 3.
    majority = ComparisonFactory(prompt__project=project)
    for rater, outcome in ((alice, A), (bob, B), (carol, B)):
        JudgmentFactory(comparison=majority, rater=rater, outcome=outcome, strength=2)
    assert set(trl_by_id(project)) == {majority.pk}
    quality(project, bob, reliability=0.2)
    quality(project, carol, reliability=0.2)
    # alice has no computed reliability yet: she counts 1.

    weighted(project, Project.Weighting.RELIABILITY)
    lines, result = export(project, "trl")

    by_id = {line["comparison_id"]: line for line in lines}
    assert set(by_id) == {outvoted.pk, majority.pk}
    # W = 1 + 0.2 + 0.2 = 1.4; A weighs 1 > 0.7; strengths 3 * 1 against 1 * 0.2 + 1 * 0.2.
    assert by_id[outvoted.pk]["chosen"][0]["content"] == outvoted.response_a.text
    assert by_id[outvoted.pk]["margin"] == round((3 - 0.4) / 1.4, 6) == 1.857143
    # Now A wins the other one too: (2 - 0.4 - 0.4) / 1.4.
    assert by_id[majority.pk]["chosen"][0]["content"] == majority.response_a.text
    assert by_id[majority.pk]["margin"] == round(1.2 / 1.4, 6)
    assert result.weighting == "reliability (raters: 2 down-weighted)"


@pytest.mark.django_db
def test_exclude_flagged_leaves_a_flagged_rater_out_of_trl_but_not_out_of_raw(project, raters):
    alice, bob, carol = raters
    comparison = ComparisonFactory(prompt__project=project)
    for rater, outcome in ((alice, A), (bob, B), (carol, B)):
        JudgmentFactory(comparison=comparison, rater=rater, outcome=outcome, strength=2)
    quality(project, carol, reliability=0.9, flagged=True)
    quality(project, bob, reliability=0.9)
    assert trl_by_id(project)[comparison.pk]["margin"] == round(2 / 3, 6)

    weighted(project, Project.Weighting.EXCLUDE_FLAGGED)
    trl, result = export(project, "trl")

    assert trl == []
    assert (result.split, result.written) == (1, 0)  # alice against bob
    assert result.weighting == "exclude_flagged (raters: 1 flagged, left out)"
    raw, _ = export(project, "raw")
    assert len(raw) == 3  # raw carries every judgment; only an admin's exclusion takes one out


@pytest.mark.django_db
def test_reliability_without_any_computed_figures_exports_what_equal_does(project, judged):
    equal = export_text(project, "trl")

    weighted(project, Project.Weighting.RELIABILITY)

    assert export_text(project, "trl") == equal
    assert export(project, "trl")[1].weighting == "reliability"


@pytest.mark.django_db
def test_a_repeat_is_no_vote_and_raw_marks_it(project, raters):
    alice, bob, _ = raters
    comparison = ComparisonFactory(prompt__project=project)
    first = JudgmentFactory(comparison=comparison, rater=alice, outcome=A, strength=3)
    JudgmentFactory(comparison=comparison, rater=bob, outcome=A, strength=1)
    repeat = Judgment.objects.create(
        comparison=comparison,
        rater=alice,
        project=project,
        outcome=B,
        strength=3,
        time_spent_ms=900,
        left="b",
        repeat_of=first,
    )

    assert trl_by_id(project)[comparison.pk]["margin"] == 2.0  # (3 + 1) / 2: the repeat's "much B" is not a vote
    raw = {line["judgment_id"]: line for line in export(project, "raw")[0]}
    assert raw[repeat.pk]["repeat_of"] == first.pk
    assert raw[repeat.pk]["outcome"] == B
    assert "repeat_of" not in raw[first.pk]


@pytest.mark.django_db
def test_weighted_exports_read_the_database_in_a_constant_number_of_queries(
    project, raters, admin_user, django_assert_max_num_queries
):
    for _ in range(30):
        comparison = ComparisonFactory(prompt__project=project)
        for rater in raters:
            JudgmentFactory(comparison=comparison, rater=rater, outcome=A, strength=2)
    for rater in raters:
        quality(project, rater, reliability=0.5)
    set_excluded(project=project, rater=raters[0], excluded=True, by=admin_user)
    weighted(project, Project.Weighting.RELIABILITY)

    with django_assert_max_num_queries(5):
        lines, result = export(project, "trl")

    assert result.written == len(lines) == 30
    assert {line["margin"] for line in lines} == {2.0}


@pytest.mark.django_db
def test_the_command_says_which_weighting_it_used(project, judged, raters, admin_user, capsys):
    weighted(project, Project.Weighting.RELIABILITY)
    quality(project, raters[1], reliability=0.5)

    call_command("export_preferences", "--project", "demo", "--format", "trl", "--output", os.devnull)

    assert "Weighting: reliability (raters: 1 down-weighted)." in capsys.readouterr().err
