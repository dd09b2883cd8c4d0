"""Checks on the single values of an import line: prompts, texts, model names,
metadata, ids. Each returns the value as it will be stored, or raises
Malformed with a message that names the field; the line loop in formats.py adds
the line number. No database access."""

import math

from labeling.models import Prompt, Response

ROLES = ("user", "assistant", "system")
_MAX_SOURCE = Response._meta.get_field("source").max_length
_MAX_EXTERNAL_ID = Prompt._meta.get_field("external_id").max_length


class Malformed(Exception):
    """A value of the line is wrong; str() says which and how."""


class ReadExactly(Exception):
    """The line holds a number orjson reads as a float where the json module, which defines the format,
    reads an integer (past 64 bits): read the line again with the json module."""


_INT64 = 2**63  # orjson reads integers beyond 64 bits as floats; every such float is at least this large


def conversation(value) -> list[dict]:
    """A prompt: a string (one user turn) or a list of turns ending with a user turn."""
    if isinstance(value, str):
        if not value.strip():
            raise Malformed("'prompt' is empty")
        check_text(value, "'prompt'")
        return [{"role": "user", "content": value}]
    if not isinstance(value, list) or not value:
        raise Malformed(f"'prompt' must be a string or a non-empty list of turns, got {json_type(value)}")
    turns = []
    for index, turn in enumerate(value, start=1):
        where = f"prompt turn {index}"
        if not isinstance(turn, dict) or set(turn) != {"role", "content"}:
            raise Malformed(f"{where} must be an object with exactly 'role' and 'content'")
        role, content = turn["role"], turn["content"]
        if role not in ROLES:
            raise Malformed(f"{where} has role {role!r}: expected one of {', '.join(ROLES)}")
        if role == "system" and index != 1:
            raise Malformed(f"{where}: a system turn may only come first")
        if not isinstance(content, str) or not content.strip():
            raise Malformed(f"{where} has empty or non-text content")
        check_text(content, where)
        turns.append({"role": role, "content": content})
    if turns[-1]["role"] != "user":
        raise Malformed("the prompt must end with a user turn (the responses answer it)")
    return turns


def response_text(value, name: str) -> str:
    if not isinstance(value, str):
        raise Malformed(f"{name!r} must be a string, got {json_type(value)}")
    if not value.strip():
        raise Malformed(f"{name!r} is empty")
    check_text(value, repr(name))
    return value


def source(value, name: str) -> str:
    """A model name (Response.source); absent is ""."""
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > _MAX_SOURCE:
        raise Malformed(f"{name!r} must be a string of at most {_MAX_SOURCE} characters")
    check_text(value, repr(name))
    return value


def metadata(value, name: str = "metadata") -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise Malformed(f"{name!r} must be an object, got {json_type(value)}")
    _check_json(value, repr(name))
    return value


def external_id(value) -> str:
    """A line's "id" (Prompt.external_id): a string or an integer; absent is ""."""
    if value is None:
        return ""
    _check_number(value)
    if isinstance(value, bool) or not isinstance(value, str | int) or len(str(value)) > _MAX_EXTERNAL_ID:
        raise Malformed(f"'id' must be a string or integer of at most {_MAX_EXTERNAL_ID} characters")
    check_text(str(value), "'id'")
    return str(value)


def check_text(text: str, where: str) -> None:
    # PostgreSQL stores neither NUL characters nor lone surrogates (json.loads
    # lets both through from \u escapes); catch them here, not mid-write.
    # Every text is checked before it is hashed or stored.
    if "\x00" in text:
        raise Malformed(f"{where} contains a NUL character")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise Malformed(f"{where} contains invalid Unicode (a lone surrogate)") from None


def json_type(value) -> str:
    """How a person would name the JSON type of value: "an object", "a list", ..."""
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number"
    )


def _check_json(value, where: str) -> None:
    if isinstance(value, str):
        check_text(value, where)
    elif isinstance(value, dict):
        for key, item in value.items():
            check_text(key, where)
            _check_json(item, where)
    elif isinstance(value, list):
        for item in value:
            _check_json(item, where)
    elif isinstance(value, float):
        _check_number(value)
        if not math.isfinite(value):
            # json reads 1e400 as infinity, which no JSON column stores.
            raise Malformed(f"{where} holds a number too large to store ({value})")


def _check_number(value) -> None:
    if isinstance(value, float) and abs(value) >= _INT64 and value.is_integer():
        raise ReadExactly
