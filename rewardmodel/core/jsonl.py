"""Preference files -> PreferenceExample, for the command line and the benchmark.

Two line formats, one JSON object per line:
- Anthropic HH: {"chosen": "\\n\\nHuman: ...\\n\\nAssistant: ...", "rejected": "..."}, two transcripts that share
  every turn but the last assistant reply.
- TRL conversational preference with an explicit prompt: {"prompt": [messages], "chosen": [messages],
  "rejected": [messages]}, where chosen/rejected hold the assistant reply (one message).
Either way the chosen response becomes response_a with target 1.0 (a plain, hard preference).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from .examples import PreferenceExample

_HH_TURN = re.compile(r"\n\n(Human|Assistant): ")
_HH_REPLY = "\n\nAssistant: "


def read_preferences(path: Path, *, limit: int | None = None) -> list[PreferenceExample]:
    examples = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            if limit is not None and len(examples) >= limit:
                break
            try:
                examples.append(_example_from(json.loads(line)))
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"{path}, line {number}: {exc}") from None
    return examples


def _example_from(record: dict) -> PreferenceExample:
    if "prompt" in record:
        prompt, chosen, rejected = record["prompt"], record["chosen"], record["rejected"]
        if isinstance(prompt, str):
            prompt = [{"role": "user", "content": prompt}]
        return PreferenceExample(list(prompt), _reply_text(chosen), _reply_text(rejected), target=1.0)
    conversation, chosen, rejected = split_hh_pair(record["chosen"], record["rejected"])
    return PreferenceExample(conversation, chosen, rejected, target=1.0)


def split_hh_pair(chosen: str, rejected: str) -> tuple[list[dict[str, str]], str, str]:
    """The shared conversation and the two replies of an HH pair.

    The replies start at the last "Assistant:" turn the two transcripts share; everything after it is the reply,
    even when a transcript holds more than one assistant turn there (a few HH lines do).

    >>> split_hh_pair("\\n\\nHuman: hi\\n\\nAssistant: hello", "\\n\\nHuman: hi\\n\\nAssistant: go away")
    ([{'role': 'user', 'content': 'hi'}], 'hello', 'go away')
    """
    shared = len(os.path.commonprefix([chosen, rejected]))
    cut = chosen.rfind(_HH_REPLY, 0, shared)
    if cut < 0:
        raise ValueError("expected two HH transcripts ('\\n\\nHuman: ...\\n\\nAssistant: ...') sharing a prompt")
    conversation = parse_hh_turns(chosen[:cut])
    return conversation, chosen[cut + len(_HH_REPLY) :], rejected[cut + len(_HH_REPLY) :]


def parse_hh_turns(text: str) -> list[dict[str, str]]:
    parts = _HH_TURN.split(text)
    if parts[0].strip() or len(parts) < 3:
        raise ValueError("an HH transcript must start with '\\n\\nHuman: '")
    roles = {"Human": "user", "Assistant": "assistant"}
    return [{"role": roles[parts[i]], "content": parts[i + 1]} for i in range(1, len(parts), 2)]


def _reply_text(reply) -> str:
    if isinstance(reply, str):
        return reply
    if isinstance(reply, list) and len(reply) == 1 and reply[0].get("role") == "assistant":
        return reply[0]["content"]
    raise ValueError("'chosen' and 'rejected' must each be a string or one assistant message")
