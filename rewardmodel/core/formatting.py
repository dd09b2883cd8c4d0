"""(conversation, response) -> token ids, keeping the response under judgment.

A reward model that never sees the response it is scoring learns nothing, so truncation takes the *oldest*
conversation tokens first. A response that alone would not fit is cut at its end, and the latest part of the
conversation (the question being answered) keeps up to a quarter of the budget.
"""

from __future__ import annotations

from collections.abc import Sequence

from .examples import Conversation

_ROLE_NAMES = {"user": "Human", "assistant": "Assistant", "system": "System"}


def transcript(conversation: Conversation) -> str:
    """The plain HH-style transcript, ending with the cue for the response: "Human: ...\\n\\nAssistant:"."""
    turns = [f"{_ROLE_NAMES.get(m['role'], m['role'].title())}: {m['content']}" for m in conversation]
    return "\n\n".join([*turns, "Assistant:"])


def split_prompt_and_response(tokenizer, conversation: Conversation, response: str) -> tuple[str, str]:
    """The text before the response and the response's own text, rendered the way the backbone expects.

    With a chat template, the response part also carries the template's end-of-turn markup, which a decoder
    backbone's last-token reward head reads.
    """
    if getattr(tokenizer, "chat_template", None):
        prompt = tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template(
            [*conversation, {"role": "assistant", "content": response}], tokenize=False
        )
        if full.startswith(prompt):
            return prompt, full[len(prompt) :]
        # Some templates rewrite earlier turns once an answer follows (e.g. they drop reasoning); the
        # generation prompt plus the raw response is then the honest split.
        return prompt, response
    return transcript(conversation), " " + response


class SequenceEncoder:
    """Turns (conversation, response) pairs into token ids of at most max_length, in batches.

    >>> enc = SequenceEncoder(tokenizer, max_length=256)              # doctest: +SKIP
    >>> enc.encode([(conversation, "Sure, here is how.")])            # doctest: +SKIP
    [[101, 2529, 1024, ..., 102]]
    """

    def __init__(self, tokenizer, max_length: int):
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.uses_chat_template = bool(getattr(tokenizer, "chat_template", None))
        if self.uses_chat_template:
            # The template's text already holds the special tokens (BOS, turn markers).
            self.prefix, self.suffix = [], []
        else:
            self.prefix, self.suffix = _special_tokens_around(tokenizer)
        self.budget = max_length - len(self.prefix) - len(self.suffix)
        if self.budget < 4:
            raise ValueError(f"max_length={max_length} leaves no room for text after the special tokens")

    def encode(self, items: Sequence[tuple[Conversation, str]]) -> list[list[int]]:
        prompts, responses = [], []
        for conversation, response in items:
            prompt, answer = split_prompt_and_response(self.tokenizer, conversation, response)
            prompts.append(prompt)
            responses.append(answer)
        # One batched call per side: the fast tokenizers parallelise it, and each side is tokenized on its own so
        # that the cut between them is exact.
        prompt_ids = self._tokenize(prompts)
        response_ids = self._tokenize(responses)
        return [self._fit(p, r) for p, r in zip(prompt_ids, response_ids, strict=True)]

    def _tokenize(self, texts: list[str]) -> list[list[int]]:
        if not texts:
            return []
        return self.tokenizer(texts, add_special_tokens=False, truncation=False, verbose=False)["input_ids"]

    def _fit(self, prompt: list[int], response: list[int]) -> list[int]:
        budget = self.budget
        keep_response = min(len(response), budget - min(len(prompt), budget // 4))
        keep_prompt = min(len(prompt), budget - keep_response)
        return [*self.prefix, *prompt[len(prompt) - keep_prompt :], *response[:keep_response], *self.suffix]


def _special_tokens_around(tokenizer) -> tuple[list[int], list[int]]:
    """The ids a tokenizer puts before and after one sequence (BERT: [CLS] ... [SEP]; GPT-2: none)."""
    bare = tokenizer("hello", add_special_tokens=False)["input_ids"]
    wrapped = tokenizer("hello", add_special_tokens=True)["input_ids"]
    for start in range(len(wrapped) - len(bare) + 1):
        if wrapped[start : start + len(bare)] == bare:
            return wrapped[:start], wrapped[start + len(bare) :]
    raise ValueError(f"cannot tell where {type(tokenizer).__name__} puts its special tokens")
