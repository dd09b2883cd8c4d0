import pytest
from transformers import AutoTokenizer

from rewardmodel.core.formatting import SequenceEncoder, split_prompt_and_response, transcript


@pytest.fixture
def tokenizer(tiny_backbone):
    return AutoTokenizer.from_pretrained(tiny_backbone)


def words(tokenizer, ids):
    return tokenizer.convert_ids_to_tokens(ids)


def test_it_writes_a_plain_transcript_when_the_tokenizer_has_no_chat_template(tokenizer):
    conversation = [
        {"role": "user", "content": "how are cats"},
        {"role": "assistant", "content": "fine"},
        {"role": "user", "content": "and dogs"},
    ]
    assert transcript(conversation) == "Human: how are cats\n\nAssistant: fine\n\nHuman: and dogs\n\nAssistant:"
    assert split_prompt_and_response(tokenizer, conversation, "great") == (transcript(conversation), " great")


def test_it_keeps_the_whole_response_and_drops_the_oldest_conversation_first(tokenizer):
    old_turns = [{"role": "user", "content": "red blue green " * 10}, {"role": "assistant", "content": "okay"}]
    conversation = [*old_turns, {"role": "user", "content": "why cats"}]
    response = "sure marker one two three"

    (ids,) = SequenceEncoder(tokenizer, max_length=24).encode([(conversation, response)])

    tokens = words(tokenizer, ids)
    assert len(ids) == 24
    assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]"
    assert tokens[-6:-1] == ["sure", "marker", "one", "two", "three"]  # the response, whole, at the end
    assert tokens[-12:-6] == ["human", ":", "why", "cats", "assistant", ":"]  # the question it answers
    assert tokens[1:4] != ["human", ":", "red"]  # the oldest turn is what was cut


def test_it_cuts_a_too_long_response_at_its_end_and_keeps_the_latest_question(tokenizer):
    conversation = [{"role": "user", "content": "red blue green " * 10 + "why cats"}]
    response = "marker " + "one two three " * 20 + "ten"

    (ids,) = SequenceEncoder(tokenizer, max_length=40).encode([(conversation, response)])

    tokens = words(tokenizer, ids)
    assert len(ids) == 40
    budget = 40 - 2
    conversation_part = tokens[1 : 1 + budget // 4]
    assert conversation_part[-4:] == ["why", "cats", "assistant", ":"]  # a quarter of the room for the question
    assert tokens[1 + budget // 4] == "marker"  # the response starts whole...
    assert "ten" not in tokens  # ...and loses its end


def test_short_inputs_are_left_alone(tokenizer):
    conversation = [{"role": "user", "content": "why cats"}]

    (ids,) = SequenceEncoder(tokenizer, max_length=64).encode([(conversation, "sure")])

    assert words(tokenizer, ids) == ["[CLS]", "human", ":", "why", "cats", "assistant", ":", "sure", "[SEP]"]


def test_it_uses_the_chat_template_when_the_tokenizer_has_one(tokenizer):
    tokenizer.chat_template = (
        "{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} . {% endfor %}"
        "{% if add_generation_prompt %}assistant : {% endif %}"
    )
    conversation = [{"role": "user", "content": "red blue green " * 10}, {"role": "user", "content": "why cats"}]

    (ids,) = SequenceEncoder(tokenizer, max_length=12).encode([(conversation, "sure marker")])

    # The template supplies all markup, so no [CLS]/[SEP] are added; the response and its end-of-turn survive.
    assert words(tokenizer, ids) == [
        "green",
        ".",
        "user",
        ":",
        "why",
        "cats",
        ".",
        "assistant",
        ":",
        "sure",
        "marker",
        ".",
    ]
