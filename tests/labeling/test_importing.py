import gzip
import json
from collections import Counter
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.db.models import Q

from labeling.importing import ImportFileError, LabeledPair, import_pairs, importer, parse_labeled_pairs, spread_pairs
from labeling.importing.formats import canonical_conversation
from labeling.models import Comparison, Project, Prompt, Response
from tests.factories import ComparisonFactory, sha256_json

HH_DEV = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "hh_harmless_dev.jsonl"


def jsonl(*objects) -> list[str]:
    return [json.dumps(obj) + "\n" for obj in objects]


def hh(*turns: str) -> str:
    """hh("hi", "hello", "bye", "ciao") -> "\\n\\nHuman: hi\\n\\nAssistant: hello..." (alternating, Human first)."""
    return "".join(f"\n\n{'Human' if i % 2 == 0 else 'Assistant'}: {text}" for i, text in enumerate(turns))


def pair(n: int, **extra) -> dict:
    return {"prompt": f"Question {n}?", "response_a": f"Answer {n} A.", "response_b": f"Answer {n} B.", **extra}


def counts() -> tuple[int, int, int, int]:
    return (Project.objects.count(), Prompt.objects.count(), Response.objects.count(), Comparison.objects.count())


@pytest.mark.django_db
def test_it_imports_pairs_with_string_and_multi_turn_prompts(project):
    turns = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Name a colour."},
    ]
    lines = jsonl(
        pair(1, label="a", model_a="m-1", model_b="m-2", metadata={"split": "dev"}, id="q1"),
        {"prompt": turns, "response_a": "Red.", "response_b": "Blue.", "label": "tie"},
    )

    result = import_pairs(project_slug="demo", lines=lines)

    assert (result.format, result.lines, result.duplicates) == ("pairs", 2, 0)
    assert (result.prompts_created, result.responses_created, result.comparisons_created) == (2, 4, 2)
    first = Comparison.objects.select_related("prompt", "response_a", "response_b").get(prompt__external_id="q1")
    assert first.project == project
    assert first.prompt.conversation == [{"role": "user", "content": "Question 1?"}]
    assert first.prompt.content_hash == sha256_json(first.prompt.conversation)
    assert first.prompt.metadata == {"split": "dev"}
    assert (first.response_a.text, first.response_a.source) == ("Answer 1 A.", "m-1")
    assert (first.response_b.text, first.response_b.source) == ("Answer 1 B.", "m-2")
    assert (first.reference_label, first.selected_by, first.status) == ("a", "import", Comparison.Status.OPEN)
    second = Comparison.objects.select_related("prompt").exclude(pk=first.pk).get()
    assert second.prompt.conversation == turns
    assert second.reference_label == "tie"


@pytest.mark.django_db
def test_it_creates_the_project_when_the_slug_is_new():
    result = import_pairs(project_slug="fresh", lines=jsonl(pair(1)), project_name="Fresh pairs")

    project = Project.objects.get(slug="fresh")
    assert result.project == project
    assert project.name == "Fresh pairs"
    assert Comparison.objects.get().project == project
    import_pairs(project_slug="bare", lines=jsonl(pair(1)))
    assert Project.objects.get(slug="bare").name == "bare"


@pytest.mark.django_db
def test_it_does_not_rename_an_existing_project(project):
    import_pairs(project_slug="demo", lines=jsonl(pair(1)), project_name="Another name")

    project.refresh_from_db()
    assert project.name == "Demo"


@pytest.mark.django_db
def test_it_rejects_an_invalid_slug_before_reading_the_file():
    with pytest.raises(ValidationError):
        import_pairs(project_slug="not a slug!", lines=jsonl(pair(1)))
    assert counts() == (0, 0, 0, 0)


@pytest.mark.django_db
def test_it_splits_hh_dialogues_into_the_shared_prompt_and_the_two_final_replies(project):
    shared = ("How do I bake bread?", "Do you have yeast?", "Yes, I do.")
    line = {"chosen": hh(*shared, "Then mix flour, water and yeast."), "rejected": hh(*shared, "Buy some.")}

    result = import_pairs(project_slug="demo", lines=jsonl(line))

    assert (result.format, result.prompts_created, result.responses_created, result.comparisons_created) == (
        "hh",
        1,
        2,
        1,
    )
    comparison = Comparison.objects.select_related("prompt", "response_a", "response_b").get()
    assert comparison.prompt.conversation == [
        {"role": "user", "content": "How do I bake bread?"},
        {"role": "assistant", "content": "Do you have yeast?"},
        {"role": "user", "content": "Yes, I do."},
    ]
    by_label = {"a": comparison.response_a, "b": comparison.response_b}
    chosen = by_label[comparison.reference_label]
    rejected = comparison.response_b if chosen == comparison.response_a else comparison.response_a
    assert chosen.text == "Then mix flour, water and yeast."
    assert rejected.text == "Buy some."
    assert {chosen.source, rejected.source} == {"hh-rlhf"}


@pytest.mark.django_db
def test_it_randomises_which_hh_reply_becomes_a_but_the_same_way_every_time(project):
    lines = jsonl(*({"chosen": hh(f"Q{n}", f"good {n}"), "rejected": hh(f"Q{n}", f"bad {n}")} for n in range(40)))

    import_pairs(project_slug="demo", lines=lines)
    import_pairs(project_slug="other", lines=lines)

    labels = Counter(Comparison.objects.filter(project=project).values_list("reference_label", flat=True))
    assert labels["a"] > 5 and labels["b"] > 5
    for comparison in Comparison.objects.filter(project=project).select_related("response_a", "response_b"):
        chosen = comparison.response_a if comparison.reference_label == "a" else comparison.response_b
        assert chosen.text.startswith("good")
    order = {
        slug: list(
            Comparison.objects.filter(project__slug=slug)
            .order_by("prompt__content_hash")
            .values_list("reference_label", flat=True)
        )
        for slug in ("demo", "other")
    }
    assert order["demo"] == order["other"]


@pytest.mark.django_db
def test_it_keeps_inline_speaker_names_as_text_and_merges_a_split_assistant_reply(project):
    # Both quirks of the real data: "Human:" inside a turn (no blank line before
    # it), and a final reply that itself contains "\n\nAssistant:".
    prefix = hh("Tell me a story.", "Once upon a time.  Human: go on", "And then?")
    line = {
        "chosen": prefix + "\n\nAssistant: They left.\n\nAssistant: The end.",
        "rejected": prefix + "\n\nAssistant: No.",
    }

    import_pairs(project_slug="demo", lines=jsonl(line))

    prompt = Prompt.objects.get()
    assert prompt.conversation[1] == {"role": "assistant", "content": "Once upon a time.  Human: go on"}
    assert prompt.conversation[-1] == {"role": "user", "content": "And then?"}
    assert set(Response.objects.values_list("text", flat=True)) == {"They left.\n\nThe end.", "No."}


@pytest.mark.django_db
def test_it_skips_hh_lines_whose_final_replies_are_empty_or_identical_and_says_which(project):
    lines = jsonl(
        {"chosen": hh("Q1", "fine"), "rejected": hh("Q1", "bad")},
        {"chosen": hh("Q2", ""), "rejected": hh("Q2", "bad")},
        {"chosen": hh("Q3", "same"), "rejected": hh("Q3", "same ")},
    )

    result = import_pairs(project_slug="demo", lines=lines)

    assert result.skipped == [
        (2, "the chosen final reply is empty"),
        (3, "the chosen and rejected final replies are the same text"),
    ]
    assert (result.lines, result.comparisons_created, result.duplicates) == (3, 1, 0)
    assert Prompt.objects.count() == 1


@pytest.mark.django_db
def test_it_rejects_hh_dialogues_that_differ_before_the_final_reply(project):
    lines = jsonl(
        {"chosen": hh("Q1", "fine"), "rejected": hh("Q1", "bad")},
        {"chosen": hh("Q", "A1", "Q2", "x"), "rejected": hh("Q", "A2", "Q2", "y")},
    )

    with pytest.raises(ImportFileError) as error:
        import_pairs(project_slug="demo", lines=lines)

    assert str(error.value) == "line 2: the chosen and rejected dialogues differ before their final Assistant reply"
    assert Prompt.objects.count() == 0


@pytest.mark.django_db
def test_it_stores_every_response_and_compares_all_pairs_under_the_cap(project):
    line = {"prompt": "Pick one.", "responses": [{"text": t, "model": f"m{t}"} for t in "ABCD"]}

    result = import_pairs(project_slug="demo", lines=jsonl(line), max_pairs_per_prompt=6)

    assert (result.format, result.responses_created, result.comparisons_created) == ("responses", 4, 6)
    assert set(Response.objects.values_list("source", flat=True)) == {"mA", "mB", "mC", "mD"}
    pairs = {frozenset(p) for p in Comparison.objects.values_list("response_a__text", "response_b__text")}
    assert len(pairs) == 6


@pytest.mark.django_db
def test_it_caps_pairs_per_prompt_and_spreads_them_over_the_responses(project, settings):
    settings.LABELING_MAX_PAIRS_PER_PROMPT = 3
    line = {"prompt": "Pick one.", "responses": [{"text": f"Reply {i}"} for i in range(6)] + [{"text": "Reply 0"}]}

    result = import_pairs(project_slug="demo", lines=jsonl(line))

    assert (result.responses_created, result.comparisons_created) == (6, 3)
    compared = Counter()
    for a, b in Comparison.objects.values_list("response_a__text", "response_b__text"):
        compared.update([a, b])
    assert len(compared) == 6  # every response is in one comparison
    assert import_pairs(project_slug="wide", lines=jsonl(line), max_pairs_per_prompt=8).comparisons_created == 8


def test_spread_pairs_connects_the_responses_before_repeating_any():
    assert spread_pairs(6, 4) == [(0, 1), (2, 3), (4, 5), (0, 2)]
    assert spread_pairs(3, 10) == [(0, 1), (0, 2), (1, 2)]
    chosen = spread_pairs(8, 7)
    groups = {i: {i} for i in range(8)}
    for i, j in chosen:
        merged = groups[i] | groups[j]
        for k in merged:
            groups[k] = merged
    assert len(groups[0]) == 8  # 7 pairs are exactly enough to link 8 responses


@pytest.mark.django_db
@pytest.mark.parametrize(
    "line, detected",
    [
        ({"chosen": hh("Q", "yes"), "rejected": hh("Q", "no")}, "hh"),
        (pair(1), "pairs"),
        ({"prompt": "Q", "responses": [{"text": "yes"}, {"text": "no"}]}, "responses"),
    ],
)
def test_it_detects_the_format_from_the_first_line(project, line, detected):
    assert import_pairs(project_slug="demo", lines=["\n", *jsonl(line)]).format == detected


@pytest.mark.django_db
@pytest.mark.parametrize(
    "lines",
    [
        jsonl(*({"chosen": hh("Q", f"yes {n}"), "rejected": hh("Q", f"no {n}")} for n in range(5))),
        jsonl(*(pair(n) for n in range(5))),
        jsonl(*({"prompt": f"Q{n}", "responses": [{"text": f"{n}{x}"} for x in "abcd"]} for n in range(5))),
    ],
    ids=["hh", "pairs", "responses"],
)
def test_a_second_import_of_the_same_file_adds_nothing(project, lines):
    first = import_pairs(project_slug="demo", lines=lines)
    before = counts()

    again = import_pairs(project_slug="demo", lines=lines)

    assert counts() == before
    assert first.comparisons_created > 0
    assert (again.prompts_created, again.responses_created, again.comparisons_created) == (0, 0, 0)
    assert again.duplicates == again.lines == 5


@pytest.mark.django_db
def test_it_matches_a_pair_in_either_order_and_adds_only_what_is_new(project):
    import_pairs(project_slug="demo", lines=jsonl(pair(1)))
    reversed_pair = {"prompt": "Question 1?", "response_a": "Answer 1 B.", "response_b": "Answer 1 A."}
    new_reply = {"prompt": "Question 1?", "response_a": "Answer 1 A.", "response_b": "Answer 1 C."}

    result = import_pairs(project_slug="demo", lines=jsonl(reversed_pair, reversed_pair, new_reply))

    assert (result.prompts_created, result.responses_created, result.comparisons_created) == (0, 1, 1)
    assert result.duplicates == 2
    assert Comparison.objects.count() == 2
    assert Prompt.objects.count() == 1


@pytest.mark.django_db
def test_it_matches_rows_that_were_not_made_by_an_import(project):
    existing = ComparisonFactory(prompt__project=project)
    line = {
        "prompt": existing.prompt.conversation,
        "response_a": existing.response_b.text,
        "response_b": existing.response_a.text,
    }

    result = import_pairs(project_slug="demo", lines=jsonl(line))

    assert result.duplicates == 1
    assert Comparison.objects.count() == 1


@pytest.mark.django_db
def test_rows_made_after_an_import_get_fresh_ids(project):
    # The importer allocates ids itself; the tables' own counters must move past them.
    ComparisonFactory(prompt__project=project)
    import_pairs(project_slug="demo", lines=jsonl(pair(1), pair(2)))
    Prompt.objects.filter(content_hash=sha256_json([{"role": "user", "content": "Question 2?"}])).delete()

    later = ComparisonFactory(prompt__project=project)

    assert later.prompt_id > max(Prompt.objects.exclude(pk=later.prompt_id).values_list("pk", flat=True))
    assert later.pk > max(Comparison.objects.exclude(pk=later.pk).values_list("pk", flat=True))
    assert import_pairs(project_slug="demo", lines=jsonl(pair(2))).comparisons_created == 1


@pytest.mark.django_db
def test_it_reads_bytes_with_a_byte_order_mark_and_crlf_endings(project):
    lines = [
        ("\ufeff" + json.dumps(pair(1)) + "\r\n").encode(),
        (json.dumps(pair(2, prompt="Ça va?")) + "\r\n").encode(),
    ]

    result = import_pairs(project_slug="demo", lines=lines)

    assert result.comparisons_created == 2
    assert Prompt.objects.filter(conversation=[{"role": "user", "content": "Ça va?"}]).exists()


GOOD = json.dumps(pair(100))
MALFORMED = [
    ('{"prompt": "Q", "response_a": "x",', "not valid JSON"),
    ('["prompt", "response_a"]', "expected a JSON object, got a list"),
    ('{"prompt": "Q", "response_a": "x"}', "missing field 'response_b'"),
    ('{"prompt": "Q", "response_a": 3, "response_b": "y"}', "'response_a' must be a string, got a number"),
    ('{"prompt": "Q", "response_a": "  ", "response_b": "y"}', "'response_a' is empty"),
    ('{"prompt": "Q", "response_a": "same", "response_b": "same"}', "response_a and response_b are the same text"),
    ('{"prompt": "", "response_a": "x", "response_b": "y"}', "'prompt' is empty"),
    ('{"prompt": 7, "response_a": "x", "response_b": "y"}', "'prompt' must be a string or a non-empty list of turns"),
    (
        '{"prompt": [{"role": "bot", "content": "hi"}], "response_a": "x", "response_b": "y"}',
        "prompt turn 1 has role 'bot'",
    ),
    (
        '{"prompt": [{"role": "user", "content": ""}], "response_a": "x", "response_b": "y"}',
        "prompt turn 1 has empty or non-text content",
    ),
    (
        '{"prompt": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}], "response_a": "x", '
        '"response_b": "y"}',
        "the prompt must end with a user turn",
    ),
    (
        '{"prompt": [{"role": "user", "content": "a"}, {"role": "system", "content": "b"}, {"role": "user", '
        '"content": "c"}], "response_a": "x", "response_b": "y"}',
        "prompt turn 2: a system turn may only come first",
    ),
    (
        '{"prompt": [{"role": "user", "text": "a"}], "response_a": "x", "response_b": "y"}',
        "prompt turn 1 must be an object with exactly 'role' and 'content'",
    ),
    ('{"prompt": "Q", "response_a": "x", "response_b": "y", "label": "A"}', "unknown label 'A'"),
    ('{"prompt": "Q", "response_a": "x", "response_b": "y", "lable": "a"}', "unknown field 'lable'"),
    ('{"prompt": "Q", "response_a": "x", "response_b": "y", "metadata": [1]}', "'metadata' must be an object"),
    ('{"prompt": "Q", "response_a": "x", "response_b": "y", "model_a": 5}', "'model_a' must be a string"),
    ('{"prompt": "Q", "response_a": "x\\u0000", "response_b": "y"}', "'response_a' contains a NUL character"),
    ('{"prompt": "Q", "response_a": "\\ud800", "response_b": "y"}', "invalid Unicode"),
    (
        '{"prompt": "Q", "response_a": "x", "response_b": "y", "metadata": {"k": ["\\u0000"]}}',
        "'metadata' contains a NUL character",
    ),
    (
        '{"prompt": [{"role": "user", "content": "\\udfff"}], "response_a": "x", "response_b": "y"}',
        "prompt turn 1 contains invalid Unicode",
    ),
    ('{"prompt": "Q", "response_a": "x", "response_b": "y", "metadata": {"score": NaN}}', "NaN is not allowed"),
    (
        '{"chosen": "\\n\\nHuman: Q\\n\\nAssistant: a", "rejected": "\\n\\nHuman: Q\\n\\nAssistant: b"}',
        "this is a hh line but the file is pairs; formats cannot be mixed",
    ),
    ('{"prompt": "Q", "responses": [{"text": "x"}]}', "this is a responses line but the file is pairs"),
    (
        '{"prompt": "Q", "response_a": "x", "response_b": "y", "gold": true}',
        "a gold pair needs a decisive 'label' ('a' or 'b') as its known answer; there is none",
    ),
    (
        '{"prompt": "Q", "response_a": "x", "response_b": "y", "gold": true, "label": "tie"}',
        "a gold pair needs a decisive 'label' ('a' or 'b') as its known answer; it is 'tie'",
    ),
    (
        '{"prompt": "Q", "response_a": "x", "response_b": "y", "gold": "yes", "label": "a"}',
        "'gold' must be true or false, got a string",
    ),
    (
        '{"prompt": "Q", "response_a": "x", "response_b": "y", "gold": 1, "label": "a"}',
        "'gold' must be true or false, got a number",
    ),
    (
        '{"prompt": "Q", "response_a": "x", "response_b": "y", "gold": null, "label": "a"}',
        "'gold' must be true or false, got null",
    ),
]


@pytest.mark.django_db
@pytest.mark.parametrize("bad, message", MALFORMED, ids=[m for _, m in MALFORMED])
def test_it_rejects_a_malformed_line_by_number_and_writes_nothing(bad, message):
    lines = [GOOD + "\n", "\n", bad + "\n", GOOD + "\n"]

    with pytest.raises(ImportFileError) as error:
        import_pairs(project_slug="new-project", lines=lines)

    assert error.value.line == 3
    assert message in error.value.message
    assert str(error.value) == f"line 3: {error.value.message}"
    assert counts() == (0, 0, 0, 0)


RESPONSES_MALFORMED = [
    (
        '{"prompt": "Q", "responses": [{"text": "x"}, {"text": "x"}]}',
        "a responses line needs at least 2 distinct responses, got 1",
    ),
    ('{"prompt": "Q", "responses": "x"}', "'responses' must be a list, got a string"),
    ('{"prompt": "Q", "responses": [{"text": "x"}, "y"]}', "responses[2] must be an object"),
    ('{"prompt": "Q", "responses": [{"text": "x"}, {"model": "m"}]}', "responses[2] is missing field 'text'"),
    (
        '{"prompt": "Q", "responses": [{"text": "x"}, {"text": "y", "score": 1}]}',
        "responses[2] has unknown field 'score'",
    ),
    ('{"prompt": "Q", "responses": [{"text": "x"}, {"text": ""}]}', "'responses[2].text' is empty"),
]


@pytest.mark.django_db
@pytest.mark.parametrize("bad, message", RESPONSES_MALFORMED, ids=[m for _, m in RESPONSES_MALFORMED])
def test_it_rejects_a_malformed_responses_line(project, bad, message):
    good = '{"prompt": "Q0", "responses": [{"text": "x"}, {"text": "y"}]}'
    before = counts()

    with pytest.raises(ImportFileError) as error:
        import_pairs(project_slug="demo", lines=[good, bad])

    assert error.value.line == 2
    assert message in error.value.message
    assert counts() == before


HH_MALFORMED = [
    ('{"chosen": "\\n\\nHuman: Q\\n\\nAssistant: a"}', "missing field 'rejected'"),
    ('{"chosen": 1, "rejected": "x"}', "'chosen' must be a string, got a number"),
    (
        '{"chosen": "Hello\\n\\nAssistant: a", "rejected": "Hello\\n\\nAssistant: b"}',
        "the chosen dialogue does not start with 'Human:'",
    ),
    (
        '{"chosen": "\\n\\nHuman: Q\\n\\nAssistant: a\\n\\nHuman: more", '
        '"rejected": "\\n\\nHuman: Q\\n\\nAssistant: b"}',
        "the chosen dialogue does not end with an Assistant reply",
    ),
    ('{"chosen": "\\n\\nAssistant: a", "rejected": "\\n\\nAssistant: b"}', "no Human turn before the final"),
    (
        '{"chosen": "\\n\\nHuman: \\n\\nAssistant: a", "rejected": "\\n\\nHuman: \\n\\nAssistant: b"}',
        "an empty Human turn in the prompt",
    ),
    (
        '{"chosen": "\\n\\nHuman: Q\\u0000\\n\\nAssistant: a", "rejected": "\\n\\nHuman: Q\\n\\nAssistant: b"}',
        "the chosen dialogue contains a NUL character",
    ),
]


@pytest.mark.django_db
@pytest.mark.parametrize("bad, message", HH_MALFORMED, ids=[m for _, m in HH_MALFORMED])
def test_it_rejects_a_malformed_hh_line(project, bad, message):
    good = json.dumps({"chosen": hh("Q", "yes"), "rejected": hh("Q", "no")})

    with pytest.raises(ImportFileError) as error:
        import_pairs(project_slug="demo", lines=[good, bad])

    assert error.value.line == 2
    assert message in error.value.message
    assert Prompt.objects.count() == 0


@pytest.mark.django_db
def test_it_rejects_a_file_of_another_format_than_the_one_asked_for(project):
    with pytest.raises(ImportFileError, match=r"^line 1: this is a pairs line but the file is hh"):
        import_pairs(project_slug="demo", lines=jsonl(pair(1)), format="hh")


@pytest.mark.django_db
@pytest.mark.parametrize("lines", [[], ["\n", "  \n"]])
def test_it_rejects_an_empty_file(lines):
    with pytest.raises(ImportFileError, match="the file has no JSON lines"):
        import_pairs(project_slug="demo", lines=lines)
    assert counts() == (0, 0, 0, 0)


@pytest.mark.django_db
def test_it_rejects_a_line_whose_keys_fit_no_format():
    with pytest.raises(ImportFileError, match=r"^line 1: cannot tell the format from the keys \(question\)"):
        import_pairs(project_slug="demo", lines=['{"question": "Q"}'])


@pytest.mark.django_db
def test_it_writes_in_bulk_not_once_per_line(project, django_assert_max_num_queries):
    lines = jsonl(*(pair(n) for n in range(600)))

    with django_assert_max_num_queries(40):
        result = import_pairs(project_slug="demo", lines=lines)

    assert result.comparisons_created == 600
    with django_assert_max_num_queries(40):
        assert import_pairs(project_slug="demo", lines=lines).duplicates == 600


@pytest.mark.django_db
def test_it_imports_the_real_hh_harmless_dev_file():
    if not HH_DEV.exists():
        pytest.skip(f"{HH_DEV} is not here")
    with HH_DEV.open("rb") as lines:
        result = import_pairs(project_slug="hh", lines=lines)

    # Three lines have an empty chosen reply; one prompt is asked twice.
    assert (result.lines, len(result.skipped), result.duplicates) == (1850, 3, 0)
    assert (result.prompts_created, result.responses_created, result.comparisons_created) == (1846, 3694, 1847)
    assert [line for line, _ in result.skipped] == [398, 572, 921]

    # Short replies ("You're welcome!") recur under different prompts: key by both.
    by_pair = {
        (c.prompt.conversation[-1]["content"], frozenset((c.response_a.text, c.response_b.text))): c
        for c in Comparison.objects.select_related("prompt", "response_a", "response_b")
    }
    checked_multi_turn = 0
    for raw in HH_DEV.read_text().splitlines():
        line = json.loads(raw)
        # The plain reading of a line: all before the last "\n\nAssistant:" is the prompt.
        chosen_prefix, _, chosen = line["chosen"].rpartition("\n\nAssistant:")
        rejected_prefix, _, rejected = line["rejected"].rpartition("\n\nAssistant:")
        chosen, rejected = chosen.strip(), rejected.strip()
        if chosen_prefix != rejected_prefix or not chosen:
            continue  # the quirky lines, covered by the tests above
        last_question = chosen_prefix.rpartition("\n\nHuman:")[2].strip()
        comparison = by_pair[(last_question, frozenset((chosen, rejected)))]
        reference = comparison.response_a if comparison.reference_label == "a" else comparison.response_b
        assert reference.text == chosen
        conversation = comparison.prompt.conversation
        assert conversation[-1]["role"] == "user"
        if chosen_prefix.count("\n\nHuman:") > 1:
            checked_multi_turn += 1
            assert [t["role"] for t in conversation[:2]] == ["user", "assistant"]
    assert checked_multi_turn > 1000

    with HH_DEV.open("rb") as lines:
        again = import_pairs(project_slug="hh", lines=lines)
    assert (again.comparisons_created, again.duplicates) == (0, 1847)


@pytest.mark.django_db
def test_labeled_pairs_are_parsed_without_touching_the_database(django_assert_num_queries):
    lines = jsonl(
        {"chosen": hh("Q", "good"), "rejected": hh("Q", "bad")},
        {"chosen": hh("Q", "good"), "rejected": hh("Q", "bad")},
    )

    with django_assert_num_queries(0):
        (pair_,) = parse_labeled_pairs(lines)

    assert pair_.conversation == [{"role": "user", "content": "Q"}]
    chosen = pair_.response_a if pair_.label == "a" else pair_.response_b
    assert chosen == "good"
    assert {pair_.response_a, pair_.response_b} == {"good", "bad"}
    assert parse_labeled_pairs(jsonl(pair(1, label="tie"), pair(2)), format="pairs") == [
        LabeledPair([{"role": "user", "content": "Question 1?"}], "Answer 1 A.", "Answer 1 B.", "tie"),
        LabeledPair([{"role": "user", "content": "Question 2?"}], "Answer 2 A.", "Answer 2 B.", ""),
    ]
    with pytest.raises(ImportFileError, match="^line 1: "):
        parse_labeled_pairs(["{"])


@pytest.mark.django_db
def test_labeled_pairs_put_hh_replies_in_the_order_the_import_stores(project):
    lines = jsonl(*({"chosen": hh(f"Q{n}", f"good {n}"), "rejected": hh(f"Q{n}", f"bad {n}")} for n in range(10)))

    parsed = {(p.response_a, p.response_b, p.label) for p in parse_labeled_pairs(lines)}
    import_pairs(project_slug="demo", lines=lines)

    stored = set(Comparison.objects.values_list("response_a__text", "response_b__text", "reference_label"))
    assert parsed == stored


def gold_of(text_a: str) -> tuple[bool, str, str]:
    """(is_gold, gold_label, reference_label) of the comparison whose A or B is text_a."""
    comparison = Comparison.objects.get(Q(response_a__text=text_a) | Q(response_b__text=text_a))
    return comparison.is_gold, comparison.gold_label, comparison.reference_label


@pytest.mark.django_db
def test_a_gold_pairs_line_makes_a_gold_comparison_with_its_label_as_the_answer(project):
    lines = jsonl(pair(1, gold=True, label="b"), pair(2, gold=False, label="a"), pair(3, label="a"))

    result = import_pairs(project_slug="demo", lines=lines)

    assert gold_of("Answer 1 A.") == (True, "b", "b")
    assert gold_of("Answer 2 A.") == (False, "", "a")
    assert gold_of("Answer 3 A.") == (False, "", "a")
    assert result.gold_marked == 1
    assert result.summary().endswith("3 comparisons created; 0 duplicate lines; 1 comparisons marked gold")
    gold = Comparison.objects.get(is_gold=True)
    assert gold.status == Comparison.Status.OPEN and gold.project == project


@pytest.mark.django_db
def test_a_gold_line_makes_a_stored_comparison_gold_in_its_own_a_b_order(project):
    import_pairs(project_slug="demo", lines=jsonl(pair(1)))
    # The same pair, written the other way round: its "a" is the stored comparison's B.
    swapped = {"prompt": "Question 1?", "response_a": "Answer 1 B.", "response_b": "Answer 1 A."}

    result = import_pairs(project_slug="demo", lines=jsonl(swapped | {"gold": True, "label": "a"}))

    stored = Comparison.objects.select_related("response_b").get()
    assert (stored.is_gold, stored.gold_label) == (True, "b")
    assert stored.response_b.text == "Answer 1 B."
    assert (result.comparisons_created, result.gold_marked, result.duplicates) == (0, 1, 0)
    # Importing it again changes nothing: the line is a duplicate now.
    again = import_pairs(project_slug="demo", lines=jsonl(swapped | {"gold": True, "label": "a"}))
    assert (again.gold_marked, again.duplicates) == (0, 1)
    # Another answer on a later import replaces the stored one; a line without "gold" never unmarks.
    import_pairs(project_slug="demo", lines=jsonl(swapped | {"gold": True, "label": "b"}))
    assert gold_of("Answer 1 A.")[:2] == (True, "a")
    import_pairs(project_slug="demo", lines=jsonl(pair(1, label="b")))
    assert gold_of("Answer 1 A.")[:2] == (True, "a")


@pytest.mark.django_db
def test_a_stored_comparison_that_becomes_gold_is_open_again(project):
    import_pairs(project_slug="demo", lines=jsonl(pair(1)))
    Comparison.objects.update(status=Comparison.Status.COMPLETE, judgments_count=2)

    import_pairs(project_slug="demo", lines=jsonl(pair(1, gold=True, label="a")))

    assert Comparison.objects.get().status == Comparison.Status.OPEN  # gold is served to every rater


@pytest.mark.django_db
def test_a_gold_line_counts_for_its_pair_wherever_it_comes_in_the_file(project):
    swapped = {"prompt": "Question 1?", "response_a": "Answer 1 B.", "response_b": "Answer 1 A."}
    lines = jsonl(pair(1, label="tie"), swapped | {"gold": True, "label": "b"})

    result = import_pairs(project_slug="demo", lines=lines)

    stored = Comparison.objects.select_related("response_a").get()
    assert stored.response_a.text == "Answer 1 A."  # the first line's order
    assert (stored.is_gold, stored.gold_label, stored.reference_label) == (True, "a", "tie")
    assert result.duplicates == 0


@pytest.mark.django_db
def test_two_gold_lines_that_disagree_on_a_pair_are_malformed(project):
    swapped = {"prompt": "Question 1?", "response_a": "Answer 1 B.", "response_b": "Answer 1 A."}
    lines = jsonl(pair(1, gold=True, label="a"), pair(2), swapped | {"gold": True, "label": "a"})

    with pytest.raises(ImportFileError) as error:
        import_pairs(project_slug="demo", lines=lines)

    assert str(error.value) == "line 3: line 1 makes this pair gold with the other answer"
    assert counts() == (1, 0, 0, 0)


@pytest.mark.django_db
def test_hh_and_responses_lines_take_no_gold_field(project):
    line = {"chosen": hh("Q", "yes"), "rejected": hh("Q", "no"), "gold": True}
    with pytest.raises(ImportFileError, match="unknown field 'gold'"):
        import_pairs(project_slug="demo", lines=jsonl(line))
    with pytest.raises(ImportFileError, match="unknown field 'gold'"):
        import_pairs(project_slug="demo", lines=jsonl({"prompt": "Q", "responses": [{"text": "x"}], "gold": True}))


@pytest.mark.django_db
def test_gold_from_labels_makes_decisive_labels_gold_and_leaves_ties_ordinary(project):
    lines = jsonl(pair(1, label="a"), pair(2, label="b"), pair(3, label="tie"), pair(4))

    result = import_pairs(project_slug="demo", lines=lines, gold_from_labels=True)

    assert [gold_of(f"Answer {n} A.") for n in (1, 2, 3, 4)] == [
        (True, "a", "a"),
        (True, "b", "b"),
        (False, "", "tie"),
        (False, "", ""),
    ]
    assert (result.gold_marked, result.gold_ties) == (2, 1)
    assert result.summary().endswith(
        "; 2 comparisons marked gold; 1 tie labels not made gold (a tie is no known answer)"
    )


@pytest.mark.django_db
def test_gold_from_labels_makes_an_hh_files_stored_comparisons_gold_on_a_second_import(project):
    lines = jsonl(*({"chosen": hh("Q", f"yes {n}"), "rejected": hh("Q", f"no {n}")} for n in range(6)))
    import_pairs(project_slug="demo", lines=lines)
    assert not Comparison.objects.filter(is_gold=True).exists()

    result = import_pairs(project_slug="demo", lines=lines, gold_from_labels=True)

    assert result.comparisons_created == 0 and result.gold_marked == 6
    stored = Comparison.objects.select_related("response_a", "response_b")
    assert all(c.is_gold and c.gold_label == c.reference_label for c in stored)
    # The answer is the reply people chose, whichever side it is stored on.
    chosen = {c.response_a.text if c.gold_label == "a" else c.response_b.text for c in stored}
    assert chosen == {f"yes {n}" for n in range(6)}
    assert {c.gold_label for c in stored} == {"a", "b"}


@pytest.mark.django_db
def test_gold_writes_in_bulk_too(project, django_assert_max_num_queries):
    lines = jsonl(*(pair(n, label="a") for n in range(600)))
    import_pairs(project_slug="demo", lines=lines)

    with django_assert_max_num_queries(40):
        result = import_pairs(project_slug="demo", lines=lines, gold_from_labels=True)

    assert result.gold_marked == 600
    assert Comparison.objects.filter(is_gold=True, gold_label="a").count() == 600


@pytest.mark.django_db
def test_the_command_imports_a_file_and_prints_a_summary(tmp_path, capsys):
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(jsonl(pair(1), pair(2))))

    call_command("import_pairs", str(path), "--project", "cli", "--name", "From the CLI")

    out = capsys.readouterr().out
    assert out.strip() == (
        "Imported 2 lines (pairs) into project 'cli': 2 prompts, 4 responses, 2 comparisons created; 0 duplicate lines."
    )
    assert Project.objects.get(slug="cli").name == "From the CLI"
    assert Comparison.objects.filter(project__slug="cli").count() == 2


@pytest.mark.django_db
def test_the_command_reads_gzip_and_reports_skipped_lines(tmp_path, capsys):
    path = tmp_path / "hh.jsonl.gz"
    lines = jsonl(
        {"chosen": hh("Q", "yes"), "rejected": hh("Q", "no")},
        {"chosen": hh("Q2", ""), "rejected": hh("Q2", "x")},
    )
    path.write_bytes(gzip.compress("".join(lines).encode()))

    call_command("import_pairs", str(path), "--project", "hh", "--format", "hh")

    captured = capsys.readouterr()
    assert "line 2: skipped: the chosen final reply is empty" in captured.err
    assert "1 comparisons created" in captured.out
    assert Comparison.objects.count() == 1


@pytest.mark.django_db
def test_the_command_turns_labels_into_gold_when_asked(tmp_path, capsys):
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(jsonl(pair(1, label="a"), pair(2, label="tie"))))

    call_command("import_pairs", str(path), "--project", "cli", "--gold-from-labels")

    out = capsys.readouterr().out
    assert "; 1 comparisons marked gold; 1 tie labels not made gold (a tie is no known answer)." in out
    assert list(Comparison.objects.filter(is_gold=True).values_list("gold_label", flat=True)) == ["a"]


@pytest.mark.django_db
def test_the_command_fails_with_the_line_and_writes_nothing(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(GOOD + "\n" + '{"prompt": "Q", "response_a": "x", "response_b": "x"}\n')

    with pytest.raises(CommandError, match=r"bad.jsonl: line 2: response_a and response_b are the same text"):
        call_command("import_pairs", str(path), "--project", "cli")

    assert counts() == (0, 0, 0, 0)


@pytest.mark.django_db
def test_the_command_fails_cleanly_on_a_missing_file(tmp_path):
    with pytest.raises(CommandError, match="Cannot read"):
        call_command("import_pairs", str(tmp_path / "nope.jsonl"), "--project", "cli")


# --- reading in chunks ------------------------------------------------------------------------------------


@pytest.fixture(params=[None, 1, 2], ids=["one-chunk", "chunks-of-1", "chunks-of-2"])
def chunked(request, monkeypatch):
    """The same import read as one chunk, and as chunks of one and two lines: a file means the same whatever
    the chunk size (the default, 4,000 lines, is one chunk for these files)."""
    if request.param:
        monkeypatch.setattr(importer, "CHUNK_LINES", request.param)


@pytest.mark.django_db
def test_a_pair_repeated_in_a_later_chunk_is_one_comparison_and_a_duplicate_line(project, chunked):
    swapped = {"prompt": "Question 1?", "response_a": "Answer 1 B.", "response_b": "Answer 1 A."}
    lines = jsonl(pair(1, label="a"), pair(2), swapped, pair(1), pair(3))

    result = import_pairs(project_slug="demo", lines=lines)

    assert (result.prompts_created, result.responses_created, result.comparisons_created) == (3, 6, 3)
    assert result.duplicates == 2
    assert (
        Comparison.objects.get(prompt__conversation=[{"role": "user", "content": "Question 1?"}]).reference_label == "a"
    )


@pytest.mark.django_db
def test_gold_from_labels_takes_the_first_label_and_a_later_gold_line_overrules_it(project, chunked):
    swapped = {"prompt": "Question 1?", "response_a": "Answer 1 B.", "response_b": "Answer 1 A."}
    lines = jsonl(
        pair(1, label="a"),  # made gold "a" from its label...
        pair(2, label="tie"),  # a tie: counted, left ordinary...
        swapped | {"gold": True, "label": "a"},  # ...until this gold line says B (in the stored order)
        pair(2, label="a"),  # not the first label of pair 2: changes nothing
        {"prompt": "Question 2?", "response_a": "Answer 2 A.", "response_b": "Answer 2 B.", "gold": True, "label": "b"},
    )

    result = import_pairs(project_slug="demo", lines=lines, gold_from_labels=True)

    assert gold_of("Answer 1 A.") == (True, "b", "a")
    assert gold_of("Answer 2 A.") == (True, "b", "tie")
    assert (result.gold_marked, result.gold_ties, result.duplicates) == (2, 0, 1)


@pytest.mark.django_db
def test_gold_lines_in_different_chunks_must_agree_and_the_first_bad_line_is_named(project, chunked):
    lines = jsonl(pair(1, gold=True, label="a"), pair(2), pair(1, gold=True, label="b"), {"prompt": "Q"})

    with pytest.raises(ImportFileError) as error:
        import_pairs(project_slug="demo", lines=lines)

    assert str(error.value) == "line 3: line 1 makes this pair gold with the other answer"
    assert counts() == (1, 0, 0, 0)


@pytest.mark.django_db
def test_a_bad_line_after_written_chunks_leaves_nothing_behind(chunked):
    lines = jsonl(*(pair(n) for n in range(5))) + ['{"prompt": "Q", "response_a": "x"}\n']

    with pytest.raises(ImportFileError, match="^line 6: missing field 'response_b'"):
        import_pairs(project_slug="fresh", lines=lines)

    assert counts() == (0, 0, 0, 0)


@pytest.mark.django_db
def test_a_stored_comparison_is_made_gold_from_a_later_chunk(project, chunked):
    import_pairs(project_slug="demo", lines=jsonl(pair(1), pair(2)))

    result = import_pairs(project_slug="demo", lines=jsonl(pair(3), pair(2, gold=True, label="b"), pair(1, label="a")))

    assert gold_of("Answer 2 A.")[:2] == (True, "b") and gold_of("Answer 1 A.")[:2] == (False, "")
    assert (result.comparisons_created, result.gold_marked, result.duplicates) == (1, 1, 1)


@pytest.mark.django_db
def test_progress_is_reported_after_each_chunk_up_to_the_whole_file(project, monkeypatch):
    monkeypatch.setattr(importer, "CHUNK_LINES", 4)
    lines = [line.encode() for line in jsonl(*(pair(n) for n in range(10)))] + [b"\n"]
    seen = []

    import_pairs(project_slug="demo", lines=lines, progress=lambda read, size: seen.append((read, size)))

    assert [read for read, _ in seen] == [4, 8, 10]
    assert [size for _, size in seen] == [sum(map(len, lines[:4])), sum(map(len, lines[:8])), sum(map(len, lines))]


@pytest.mark.django_db
def test_a_number_too_large_to_store_is_malformed(project):
    line = '{"prompt": "Q", "response_a": "x", "response_b": "y", "metadata": {"score": 1e400}}'

    with pytest.raises(ImportFileError, match=r"^line 1: 'metadata' holds a number too large to store"):
        import_pairs(project_slug="demo", lines=[line])


@pytest.mark.django_db
def test_lines_orjson_refuses_are_read_as_the_json_module_reads_them(project):
    big = 2**70
    lines = [
        json.dumps(pair(1, id=big, metadata={"n": big})),  # integers past 64 bits
        '{"prompt": "Q", "response_a": "x", "response_b": "y", "lable": "a"}',
    ]

    with pytest.raises(ImportFileError, match="^line 2: unknown field 'lable'"):
        import_pairs(project_slug="demo", lines=lines)
    result = import_pairs(project_slug="demo", lines=lines[:1])

    prompt = Prompt.objects.get()
    assert result.comparisons_created == 1 and (prompt.external_id, prompt.metadata) == (str(big), {"n": big})


@pytest.mark.parametrize(
    "content",
    [
        "plain",
        'quotes " and \\ backslashes',
        "new\nlines\tand\rreturns",
        "\x01\x1f\x7f control",
        "Ça, 漢字, 🙂",
        "\u2028",
    ],
)
def test_the_canonical_conversation_text_is_json_dumps_sorted(content):
    conversation = [{"role": "system", "content": "Be kind."}, {"role": "user", "content": content}]

    assert canonical_conversation(conversation) == json.dumps(conversation, sort_keys=True, ensure_ascii=False)
