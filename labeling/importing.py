"""Import files -> rows: pure parsing of the whole file first, then one atomic bulk write.

One JSON object per line (JSONL); blank lines are skipped. Three formats:

  hh         {"chosen": dialogue, "rejected": dialogue}, Anthropic's HH-RLHF layout.
  pairs      {"prompt": str | [turns], "response_a": str, "response_b": str,
              optional "label": "a"|"b"|"tie", "model_a", "model_b", "metadata": {...}, "id"}
  responses  {"prompt": str | [turns], "responses": [{"text": str, "model": str, "metadata": {...}}, ...],
              optional "metadata", "id"}

A turn is {"role": "user"|"assistant"|"system", "content": str}; a string prompt is
one user turn. A prompt must end with a user turn (the responses answer it) and may
start with a system turn. "metadata" is kept on the prompt and "id" becomes
Prompt.external_id; both are taken from the first line that brings the prompt.

HH dialogues are "\\n\\nHuman: ...\\n\\nAssistant: ..." texts. They are split on those
markers only where a blank line precedes them, so "Human:" written inside a turn
stays text (the data has such turns). Consecutive turns of one role are merged into
one turn, as a chat template expects alternating roles; in the real data this is
how an assistant reply that itself contains "\\n\\nAssistant:" reads. The two
dialogues must then be identical but for their final assistant turn: that shared
prefix is the prompt, the two final turns are the responses, and a line where the
dialogues differ earlier is malformed. The human label becomes the comparison's
reference_label, and which reply becomes A is decided by a hash of the two texts:
random-looking and balanced, yet the same on every import. A line whose final
replies are empty or identical carries no comparison a rater could make; it is
skipped and reported (ImportResult.skipped) rather than failing the file, because
published HH files contain such lines (3 of 1,850 in harmless-base test) and
cannot be fixed by whoever imports them. In our own formats the same defects are
errors: the author of the file can fix them.

Every malformed line aborts the import with ImportFileError("line N: what is
wrong") before anything is written. Then rows are matched by content hash
(Prompt: sha256 of the canonical conversation JSON, per project; Response: sha256
of the text, per prompt; Comparison: the unordered pair of responses), so
importing a file twice adds nothing, and whatever is new is written with bulk
inserts inside one transaction.
"""

import hashlib
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import combinations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_slug
from django.db import connection, models, transaction
from django.utils import timezone

from labeling.models import Comparison, Project, Prompt, Response

FORMATS = ("hh", "pairs", "responses")
ROLES = ("user", "assistant", "system")
LABELS = ("a", "b", "tie")
HH_SOURCE = "hh-rlhf"
_KEYS = {
    "hh": ({"chosen", "rejected"}, set()),
    "pairs": ({"prompt", "response_a", "response_b"}, {"label", "model_a", "model_b", "metadata", "id"}),
    "responses": ({"prompt", "responses"}, {"metadata", "id"}),
}
_MAX_SOURCE = Response._meta.get_field("source").max_length
_MAX_EXTERNAL_ID = Prompt._meta.get_field("external_id").max_length
_HH_MARKERS = {"Human": "user", "Assistant": "assistant"}
_HH_TURN_SPLIT = re.compile(r"\n\n(Human|Assistant):")
_WRITE_BATCH = 1000


class ImportFileError(ValueError):
    """A line of the file is malformed; str() is "line N: what is wrong"."""

    def __init__(self, line: int, message: str):
        super().__init__(f"line {line}: {message}")
        self.line = line
        self.message = message


class _Malformed(Exception):
    """Raised by the field checks; the line loop adds the line number."""


class _Skip(Exception):
    """An HH line with no comparison in it (see the module docstring)."""


@dataclass
class ImportResult:
    project: Project
    format: str
    lines: int  # non-blank lines read
    prompts_created: int
    responses_created: int
    comparisons_created: int
    duplicates: int  # lines that added nothing (everything in them was already there)
    skipped: list[tuple[int, str]] = field(default_factory=list)  # (line, why): hh lines with no comparison

    def summary(self) -> str:
        text = (
            f"{self.lines} lines ({self.format}) into project {self.project.slug!r}: "
            f"{self.prompts_created} prompts, {self.responses_created} responses, "
            f"{self.comparisons_created} comparisons created; {self.duplicates} duplicate lines"
        )
        return text + (f"; {len(self.skipped)} lines skipped" if self.skipped else "")


def import_pairs(
    *,
    project_slug: str,
    lines: Iterable[str | bytes],
    format: str | None = None,
    project_name: str | None = None,
    max_pairs_per_prompt: int | None = None,
) -> ImportResult:
    """Parse every line, then write what is new in one transaction.

    The project is created (named project_name, or the slug) when the slug is new;
    an existing project is not renamed. format None detects it from the first
    line's keys. max_pairs_per_prompt caps the comparisons made from one
    `responses` line (default settings.LABELING_MAX_PAIRS_PER_PROMPT).
    Raises ImportFileError for a malformed line, ValidationError for a bad slug
    or name; either way nothing is written.
    """
    if format is not None and format not in FORMATS:
        raise ValueError(f"Unknown format {format!r}; expected one of {', '.join(FORMATS)}.")
    cap = settings.LABELING_MAX_PAIRS_PER_PROMPT if max_pairs_per_prompt is None else max_pairs_per_prompt
    if cap < 1:
        raise ValueError("max_pairs_per_prompt must be at least 1.")
    validate_slug(project_slug)
    if len(project_slug) > Project._meta.get_field("slug").max_length:
        raise ValidationError("The project slug is too long.")
    plan = _parse(lines, format=format, cap=cap)
    return _write(plan, project_slug=project_slug, project_name=project_name or project_slug)


@dataclass(frozen=True)
class LabeledPair:
    conversation: list[dict]
    response_a: str
    response_b: str
    label: str  # "a", "b", "tie", or "" when the line has none


def parse_labeled_pairs(lines: Iterable[str | bytes], *, format: str | None = None) -> list[LabeledPair]:
    """The pairs in a file with their labels, checked exactly as import_pairs checks them, with
    no database access: for scoring a model on held-out data. Duplicate pairs appear once; an hh
    pair's A/B order is the one import_pairs would store. Raises ImportFileError."""
    if format is not None and format not in FORMATS:
        raise ValueError(f"Unknown format {format!r}; expected one of {', '.join(FORMATS)}.")
    plan = _parse(lines, format=format, cap=settings.LABELING_MAX_PAIRS_PER_PROMPT)
    return [
        LabeledPair(
            conversation=plan.prompts[c.prompt_hash].conversation,
            response_a=plan.responses[(c.prompt_hash, c.a_hash)].text,
            response_b=plan.responses[(c.prompt_hash, c.b_hash)].text,
            label=c.label,
        )
        for c in plan.comparisons.values()
    ]


# --- Parsing: no database access below this line until _write. ---


@dataclass(slots=True)
class _PromptRow:
    conversation: list
    metadata: dict
    external_id: str
    line: int  # the first line that brought it


@dataclass(slots=True)
class _ResponseRow:
    text: str
    source: str
    metadata: dict
    line: int


@dataclass(slots=True)
class _ComparisonRow:
    prompt_hash: str
    a_hash: str
    b_hash: str
    label: str
    line: int


@dataclass
class _Plan:
    """Everything the file asks for, deduplicated by content hash, in file order."""

    format: str = ""
    lines: int = 0
    skipped: list = field(default_factory=list)
    prompts: dict = field(default_factory=dict)  # prompt hash -> _PromptRow
    responses: dict = field(default_factory=dict)  # (prompt hash, response hash) -> _ResponseRow
    comparisons: dict = field(default_factory=dict)  # (prompt hash, lower hash, higher hash) -> _ComparisonRow

    def prompt(self, conversation, line, metadata=None, external_id="") -> str:
        digest = _sha256(json.dumps(conversation, sort_keys=True, ensure_ascii=False))
        if digest not in self.prompts:
            self.prompts[digest] = _PromptRow(conversation, metadata or {}, external_id, line)
        return digest

    def response(self, prompt_hash, text, line, source="", metadata=None) -> str:
        digest = _sha256(text)
        self.responses.setdefault((prompt_hash, digest), _ResponseRow(text, source, metadata or {}, line))
        return digest

    def comparison(self, prompt_hash, a_hash, b_hash, label, line) -> None:
        key = (prompt_hash, *sorted((a_hash, b_hash)))
        self.comparisons.setdefault(key, _ComparisonRow(prompt_hash, a_hash, b_hash, label, line))


def _parse(lines: Iterable[str | bytes], *, format: str | None, cap: int) -> _Plan:
    plan = _Plan(format=format or "")
    for number, obj in _records(lines):
        plan.lines += 1
        try:
            detected = _detect(obj)
            if not plan.format:
                if detected is None:
                    raise _Malformed(
                        f"cannot tell the format from the keys ({', '.join(sorted(obj)) or 'none'}): expected "
                        "chosen/rejected (hh), prompt/response_a/response_b (pairs) or prompt/responses (responses)"
                    )
                plan.format = detected
            elif detected is not None and detected != plan.format:
                raise _Malformed(f"this is a {detected} line but the file is {plan.format}; formats cannot be mixed")
            _check_keys(obj, plan.format)
            if plan.format == "hh":
                _parse_hh(obj, plan, number)
            elif plan.format == "pairs":
                _parse_pair(obj, plan, number)
            else:
                _parse_responses(obj, plan, number, cap)
        except _Malformed as error:
            raise ImportFileError(number, str(error)) from None
        except _Skip as skip:
            plan.skipped.append((number, str(skip)))
    if plan.lines == 0:
        raise ImportFileError(1, "the file has no JSON lines (it is empty or blank)")
    return plan


def _records(lines: Iterable[str | bytes]) -> Iterator[tuple[int, dict]]:
    for number, raw in enumerate(lines, start=1):
        if isinstance(raw, bytes):
            try:
                raw = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise ImportFileError(number, "not valid UTF-8") from None
        if number == 1:
            raw = raw.removeprefix("\ufeff")  # a byte-order mark some editors write
        if not raw.strip():
            continue
        try:
            obj = _DECODER.decode(raw)
        except ValueError as error:
            raise ImportFileError(number, f"not valid JSON ({error})") from None
        except RecursionError:
            raise ImportFileError(number, "JSON nested too deeply") from None
        if not isinstance(obj, dict):
            raise ImportFileError(number, f"expected a JSON object, got {_json_type(obj)}")
        yield number, obj


def _reject_constant(name):
    raise ValueError(f"{name} is not allowed")


# One decoder for every line: json.loads(..., parse_constant=...) would build a new one per call.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def _detect(obj: dict) -> str | None:
    if "chosen" in obj or "rejected" in obj:
        return "hh"
    if "response_a" in obj or "response_b" in obj:
        return "pairs"
    if "responses" in obj:
        return "responses"
    return None


def _check_keys(obj: dict, format: str) -> None:
    required, optional = _KEYS[format]
    missing = sorted(required - obj.keys())
    if missing:
        raise _Malformed(f"missing field {', '.join(repr(k) for k in missing)}")
    unknown = sorted(obj.keys() - required - optional)
    if unknown:
        allowed = ", ".join(sorted(required | optional))
        raise _Malformed(f"unknown field {', '.join(repr(k) for k in unknown)} (a {format} line has: {allowed})")


def _parse_hh(obj: dict, plan: _Plan, line: int) -> None:
    chosen = _hh_turns(obj["chosen"], "chosen")
    rejected = _hh_turns(obj["rejected"], "rejected")
    if chosen[:-1] != rejected[:-1]:
        raise _Malformed("the chosen and rejected dialogues differ before their final Assistant reply")
    prompt = chosen[:-1]
    if not prompt:
        raise _Malformed("no Human turn before the final Assistant reply")
    for turn in prompt:
        if not turn["content"]:
            raise _Malformed(f"an empty {'Human' if turn['role'] == 'user' else 'Assistant'} turn in the prompt")
    chosen_text, rejected_text = chosen[-1]["content"], rejected[-1]["content"]
    for name, text in (("chosen", chosen_text), ("rejected", rejected_text)):
        if not text:
            raise _Skip(f"the {name} final reply is empty")
    if chosen_text == rejected_text:
        raise _Skip("the chosen and rejected final replies are the same text")
    prompt_hash = plan.prompt(prompt, line)
    chosen_hash = plan.response(prompt_hash, chosen_text, line, source=HH_SOURCE)
    rejected_hash = plan.response(prompt_hash, rejected_text, line, source=HH_SOURCE)
    if hashlib.sha256((chosen_hash + rejected_hash).encode()).digest()[0] & 1:
        plan.comparison(prompt_hash, chosen_hash, rejected_hash, "a", line)
    else:
        plan.comparison(prompt_hash, rejected_hash, chosen_hash, "b", line)


def _hh_turns(dialogue, name: str) -> list[dict]:
    if not isinstance(dialogue, str):
        raise _Malformed(f"{name!r} must be a string, got {_json_type(dialogue)}")
    _check_text(dialogue, f"the {name} dialogue")
    # Split on the markers that start a line after a blank one; a dialogue may
    # also begin with a bare "Human:".
    parts = _HH_TURN_SPLIT.split("\n\n" + dialogue.lstrip())
    if parts[0].strip():
        raise _Malformed(f"the {name} dialogue does not start with 'Human:'")
    turns: list[dict] = []
    for marker, content in zip(parts[1::2], parts[2::2], strict=True):
        role, content = _HH_MARKERS[marker], content.strip()
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"] = "\n\n".join(c for c in (turns[-1]["content"], content) if c)
        else:
            turns.append({"role": role, "content": content})
    if not turns or turns[-1]["role"] != "assistant":
        raise _Malformed(f"the {name} dialogue does not end with an Assistant reply")
    return turns


def _parse_pair(obj: dict, plan: _Plan, line: int) -> None:
    conversation = _conversation(obj["prompt"])
    text_a = _response_text(obj["response_a"], "response_a")
    text_b = _response_text(obj["response_b"], "response_b")
    if text_a.strip() == text_b.strip():
        raise _Malformed("response_a and response_b are the same text")
    label = obj.get("label")
    if label is None:
        label = ""
    elif label not in LABELS:
        raise _Malformed(f"unknown label {label!r}: expected one of {', '.join(LABELS)}")
    prompt_hash = plan.prompt(conversation, line, _metadata(obj.get("metadata")), _external_id(obj.get("id")))
    a_hash = plan.response(prompt_hash, text_a, line, source=_source(obj.get("model_a"), "model_a"))
    b_hash = plan.response(prompt_hash, text_b, line, source=_source(obj.get("model_b"), "model_b"))
    plan.comparison(prompt_hash, a_hash, b_hash, label, line)


def _parse_responses(obj: dict, plan: _Plan, line: int, cap: int) -> None:
    conversation = _conversation(obj["prompt"])
    items = obj["responses"]
    if not isinstance(items, list):
        raise _Malformed(f"'responses' must be a list, got {_json_type(items)}")
    distinct: dict[str, tuple] = {}
    for index, item in enumerate(items, start=1):
        where = f"responses[{index}]"
        if not isinstance(item, dict):
            raise _Malformed(f"{where} must be an object {{\"text\", \"model\"}}, got {_json_type(item)}")
        unknown = sorted(item.keys() - {"text", "model", "metadata"})
        if unknown:
            raise _Malformed(f"{where} has unknown field {', '.join(repr(k) for k in unknown)}")
        if "text" not in item:
            raise _Malformed(f"{where} is missing field 'text'")
        text = _response_text(item["text"], f"{where}.text")
        source = _source(item.get("model"), f"{where}.model")
        distinct.setdefault(text, (source, _metadata(item.get("metadata"), f"{where}.metadata")))
    if len(distinct) < 2:
        raise _Malformed(f"a responses line needs at least 2 distinct responses, got {len(distinct)}")
    prompt_hash = plan.prompt(conversation, line, _metadata(obj.get("metadata")), _external_id(obj.get("id")))
    hashes = [
        plan.response(prompt_hash, text, line, source=source, metadata=metadata)
        for text, (source, metadata) in distinct.items()
    ]
    for i, j in spread_pairs(len(hashes), cap):
        plan.comparison(prompt_hash, hashes[i], hashes[j], "", line)


def spread_pairs(n: int, cap: int) -> list[tuple[int, int]]:
    """Which pairs (i < j) of n responses to compare, at most cap of them.

    Greedy and deterministic, so a re-import picks the same pairs: each next pair
    first joins two groups not yet linked by comparisons (a Bradley-Terry fit can
    only rank responses it can connect), then touches the least-compared
    responses; remaining ties go to the earliest pair.

    >>> spread_pairs(6, 4)
    [(0, 1), (2, 3), (4, 5), (0, 2)]
    """
    remaining = list(combinations(range(n), 2))
    if cap >= len(remaining):
        return remaining
    group, degree, chosen = list(range(n)), [0] * n, []
    for _ in range(cap):
        i, j = min(
            remaining,
            key=lambda p: (group[p[0]] == group[p[1]], max(degree[p[0]], degree[p[1]]), degree[p[0]] + degree[p[1]], p),
        )
        remaining.remove((i, j))
        chosen.append((i, j))
        degree[i] += 1
        degree[j] += 1
        old, new = group[j], group[i]
        group = [new if g == old else g for g in group]
    return chosen


def _conversation(value) -> list[dict]:
    if isinstance(value, str):
        if not value.strip():
            raise _Malformed("'prompt' is empty")
        _check_text(value, "'prompt'")
        return [{"role": "user", "content": value}]
    if not isinstance(value, list) or not value:
        raise _Malformed(f"'prompt' must be a string or a non-empty list of turns, got {_json_type(value)}")
    turns = []
    for index, turn in enumerate(value, start=1):
        where = f"prompt turn {index}"
        if not isinstance(turn, dict) or set(turn) != {"role", "content"}:
            raise _Malformed(f"{where} must be an object with exactly 'role' and 'content'")
        role, content = turn["role"], turn["content"]
        if role not in ROLES:
            raise _Malformed(f"{where} has role {role!r}: expected one of {', '.join(ROLES)}")
        if role == "system" and index != 1:
            raise _Malformed(f"{where}: a system turn may only come first")
        if not isinstance(content, str) or not content.strip():
            raise _Malformed(f"{where} has empty or non-text content")
        _check_text(content, where)
        turns.append({"role": role, "content": content})
    if turns[-1]["role"] != "user":
        raise _Malformed("the prompt must end with a user turn (the responses answer it)")
    return turns


def _response_text(value, name: str) -> str:
    if not isinstance(value, str):
        raise _Malformed(f"{name!r} must be a string, got {_json_type(value)}")
    if not value.strip():
        raise _Malformed(f"{name!r} is empty")
    _check_text(value, repr(name))
    return value


def _source(value, name: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > _MAX_SOURCE:
        raise _Malformed(f"{name!r} must be a string of at most {_MAX_SOURCE} characters")
    _check_text(value, repr(name))
    return value


def _metadata(value, name: str = "metadata") -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _Malformed(f"{name!r} must be an object, got {_json_type(value)}")
    _check_json(value, repr(name))
    return value


def _check_json(value, where: str) -> None:
    if isinstance(value, str):
        _check_text(value, where)
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_text(key, where)
            _check_json(item, where)
    elif isinstance(value, list):
        for item in value:
            _check_json(item, where)


def _external_id(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, str | int) or len(str(value)) > _MAX_EXTERNAL_ID:
        raise _Malformed(f"'id' must be a string or integer of at most {_MAX_EXTERNAL_ID} characters")
    _check_text(str(value), "'id'")
    return str(value)


def _check_text(text: str, where: str) -> None:
    # PostgreSQL stores neither NUL characters nor lone surrogates (json.loads
    # lets both through from \u escapes); catch them here, not mid-write.
    # Every text is checked before it is hashed or stored.
    if "\x00" in text:
        raise _Malformed(f"{where} contains a NUL character")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise _Malformed(f"{where} contains invalid Unicode (a lone surrogate)") from None


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _json_type(value) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number"
    )


# --- Writing: one transaction, bulk lookups and bulk inserts. ---


def _write(plan: _Plan, *, project_slug: str, project_name: str) -> ImportResult:
    with transaction.atomic():
        project, created = _lock_or_create_project(project_slug, project_name)
        # A project made just now has no rows to match against.
        prompt_ids = {} if created else _prompt_ids(project, list(plan.prompts))
        existing_prompt_ids = list(prompt_ids.values())
        new_prompts = _save_prompts(project, plan, prompt_ids)
        response_ids = _response_ids(existing_prompt_ids)
        new_responses = _save_responses(plan, prompt_ids, response_ids)
        new_comparisons = _save_comparisons(project, plan, prompt_ids, response_ids, existing_prompt_ids)
    adding_lines = {row.line for rows in (new_prompts, new_responses, new_comparisons) for row in rows}
    return ImportResult(
        project=project,
        format=plan.format,
        lines=plan.lines,
        prompts_created=len(new_prompts),
        responses_created=len(new_responses),
        comparisons_created=len(new_comparisons),
        duplicates=plan.lines - len(plan.skipped) - len(adding_lines),
        skipped=plan.skipped,
    )


def _lock_or_create_project(slug: str, name: str) -> tuple[Project, bool]:
    # The row lock makes two imports into one project take turns, so neither
    # inserts a row the other has just matched as missing.
    project = Project.objects.select_for_update().filter(slug=slug).first()
    if project is not None:
        return project, False
    project = Project(slug=slug, name=name)
    project.full_clean()
    project.save()
    return project, True


def _save_prompts(project: Project, plan: _Plan, prompt_ids: dict) -> list[_PromptRow]:
    """Insert the prompts not in prompt_ids (hash -> id), and add their ids to it."""
    new = [(digest, row) for digest, row in plan.prompts.items() if digest not in prompt_ids]
    ids = _insert(
        Prompt,
        ("project", "conversation", "metadata", "external_id", "content_hash"),
        [(project.pk, row.conversation, row.metadata, row.external_id, digest) for digest, row in new],
    )
    prompt_ids.update(zip((digest for digest, _ in new), ids, strict=True))
    return [row for _, row in new]


def _save_responses(plan: _Plan, prompt_ids: dict, response_ids: dict) -> list[_ResponseRow]:
    """Insert the responses not in response_ids ((prompt id, hash) -> id), and add their ids to it."""
    new = []
    for (prompt_hash, digest), row in plan.responses.items():
        prompt_id = prompt_ids[prompt_hash]
        if (prompt_id, digest) not in response_ids:
            new.append((prompt_id, digest, row))
    ids = _insert(
        Response,
        ("prompt", "text", "source", "metadata", "content_hash"),
        [(prompt_id, row.text, row.source, row.metadata, digest) for prompt_id, digest, row in new],
    )
    response_ids.update(zip(((prompt_id, digest) for prompt_id, digest, _ in new), ids, strict=True))
    return [row for _, _, row in new]


def _save_comparisons(project, plan: _Plan, prompt_ids: dict, response_ids: dict, existing_prompt_ids: list):
    # Only prompts that existed before can have comparisons already.
    taken: set[tuple[int, int]] = set()
    for batch in _batches(existing_prompt_ids):
        for a, b in Comparison.objects.filter(prompt_id__in=batch).values_list("response_a_id", "response_b_id"):
            taken.add((min(a, b), max(a, b)))
    new_rows, values = [], []
    for row in plan.comparisons.values():
        prompt_id = prompt_ids[row.prompt_hash]
        a, b = response_ids[(prompt_id, row.a_hash)], response_ids[(prompt_id, row.b_hash)]
        if (min(a, b), max(a, b)) not in taken:
            new_rows.append(row)
            values.append((project.pk, prompt_id, a, b, row.label, "import"))
    _insert(Comparison, ("project", "prompt", "response_a", "response_b", "reference_label", "selected_by"), values)
    return new_rows


def _prompt_ids(project: Project, hashes: list[str]) -> dict[str, int]:
    ids: dict[str, int] = {}
    for batch in _batches(hashes):
        ids.update(Prompt.objects.filter(project=project, content_hash__in=batch).values_list("content_hash", "pk"))
    return ids


def _response_ids(prompt_ids: list[int]) -> dict[tuple[int, str], int]:
    ids = {}
    for batch in _batches(prompt_ids):
        for prompt_id, digest, pk in Response.objects.filter(prompt_id__in=batch).values_list(
            "prompt_id", "content_hash", "pk"
        ):
            ids[(prompt_id, digest)] = pk
    return ids


def _insert(model, field_names: tuple[str, ...], rows: list[tuple]) -> list[int]:
    """Insert rows of raw values (ids for foreign keys) and return their new ids, in order.

    Every other field gets its default. bulk_create builds a model instance and
    prepares every field of every row in Python, and on PostgreSQL Django binds
    each parameter client-side: that made 100,000 pairs (400,000 rows) take
    minutes. Here the defaults and the creation time are prepared once, only
    JSON is encoded per row, the ids are allocated up front (so no query has to
    find the rows again), and rows go in through COPY (PostgreSQL) or
    executemany (SQLite), both streamed in C.
    """
    if not rows:
        return []
    meta = model._meta
    given = [meta.pk] + [meta.get_field(name) for name in field_names]
    now = timezone.now()
    defaults = [
        (f.column, _encode(f, now if _is_timestamp(f) else f.get_default()))
        for f in meta.concrete_fields
        if f not in given
    ]
    columns = ", ".join(connection.ops.quote_name(c) for c in [f.column for f in given] + [c for c, _ in defaults])
    table = connection.ops.quote_name(meta.db_table)
    tail = tuple(value for _, value in defaults)
    json_at = [i for i, f in enumerate(given) if isinstance(f, models.JSONField)]
    ids = _allocate_ids(model, len(rows))

    def prepared(start, batch):
        for pk, row in zip(ids[start : start + len(batch)], batch, strict=True):
            row = [pk, *row]
            for i in json_at:
                row[i] = json.dumps(row[i])
            yield (*row, *tail)

    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            with cursor.cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                for row in prepared(0, rows):
                    copy.write_row(row)
        else:
            sql = f"INSERT INTO {table} ({columns}) VALUES ({', '.join(['%s'] * (len(given) + len(defaults)))})"
            for start in range(0, len(rows), _WRITE_BATCH):
                cursor.executemany(sql, list(prepared(start, rows[start : start + _WRITE_BATCH])))
    return ids


def _allocate_ids(model, n: int) -> list[int]:
    table = model._meta.db_table
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # The ids the table's own sequence would have given these rows.
            cursor.execute(
                "SELECT nextval(pg_get_serial_sequence(%s, %s)) FROM generate_series(1, %s)",
                [connection.ops.quote_name(table), model._meta.pk.column, n],
            )
            return [pk for (pk,) in cursor.fetchall()]
        if connection.vendor == "sqlite":
            # The transaction holds SQLite's write lock (IMMEDIATE mode), so
            # nobody else takes these ids; AUTOINCREMENT never reuses one, so
            # start past the highest ever given, not only the highest present.
            pk = connection.ops.quote_name(model._meta.pk.column)
            cursor.execute(
                f"SELECT max(coalesce((SELECT max({pk}) FROM {connection.ops.quote_name(table)}), 0),"
                " coalesce((SELECT seq FROM sqlite_sequence WHERE name = %s), 0))",
                [table],
            )
            start = cursor.fetchone()[0] + 1
            return list(range(start, start + n))
    raise NotImplementedError(f"Importing into {connection.vendor} is not supported.")


def _encode(field, value):
    # Rows reach the database as text; JSON is encoded as Django's own JSONField would.
    return json.dumps(value) if isinstance(field, models.JSONField) else field.get_db_prep_save(value, connection)


def _is_timestamp(field) -> bool:
    return getattr(field, "auto_now_add", False) or getattr(field, "auto_now", False)


def _batches(items: list, size: int | None = None) -> Iterator[list]:
    # Lookups by IN (...): SQLite takes 999 parameters per statement as Django sees it.
    size = size or min(connection.features.max_query_params or 5000, 5000) - 10
    for start in range(0, len(items), size):
        yield items[start : start + size]
