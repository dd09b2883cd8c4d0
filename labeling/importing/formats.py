"""The three import formats: lines of a file -> a ParsedFile, with no database access.

One JSON object per line (JSONL); blank lines are skipped. Three formats:

  hh         {"chosen": dialogue, "rejected": dialogue}, Anthropic's HH-RLHF layout.
  pairs      {"prompt": str | [turns], "response_a": str, "response_b": str,
              optional "label": "a"|"b"|"tie", "gold": bool, "model_a", "model_b", "metadata": {...}, "id"}
  responses  {"prompt": str | [turns], "responses": [{"text": str, "model": str, "metadata": {...}}, ...],
              optional "metadata", "id"}

A turn is {"role": "user"|"assistant"|"system", "content": str}; a string prompt is
one user turn. A prompt must end with a user turn (the responses answer it) and may
start with a system turn. "metadata" is kept on the prompt and "id" becomes
Prompt.external_id; both are taken from the first line that brings the prompt.
The format is the one asked for, or detected from the first line's keys; a file
cannot mix them.

Gold. A pairs line with "gold": true makes its comparison gold (a known answer
to measure raters against), and its "label" is that answer, so it must be "a"
or "b": a gold line without a decisive label is malformed, and so is a "gold"
that is not true or false. When one pair appears on several lines, a gold line
makes it gold whichever line came first, and two gold lines that disagree on
the answer are malformed. (An import's gold_from_labels, which makes the
decisive labels of a file gold, is the importer's: it spans chunks.)

HH dialogues are "\\n\\nHuman: ...\\n\\nAssistant: ..." texts. They are split on those
markers only where a blank line precedes them, so "Human:" written inside a turn
stays text (the data has such turns). Consecutive turns of one role are merged into
one turn, as a chat template expects alternating roles; in the real data this is
how an assistant reply that itself contains "\\n\\nAssistant:" reads. The two
dialogues must then be identical but for their final assistant turn: that shared
prefix is the prompt, the two final turns are the responses, and a line where the
dialogues differ earlier is malformed. The human label becomes the comparison's
reference_label (pairing.pair_order decides which reply is A). A line whose final
replies are empty or identical carries no comparison a rater could make; it is
skipped and reported (ParsedFile.skipped) rather than failing the file, because
published HH files contain such lines (3 of 1,850 in harmless-base test) and
cannot be fixed by whoever imports them. In our own formats the same defects are
errors: the author of the file can fix them.

Every malformed line raises ImportFileError("line N: what is wrong"). Rows are
keyed by content hash (Prompt: sha256 of the canonical conversation JSON;
Response: sha256 of the text, per prompt; Comparison: the unordered pair of
responses), so a file that repeats itself yields each row once, and the importer
can match them against the rows already stored.

Parser reads a file once, in order, and hands it over in chunks (ParsedFile, a
few thousand lines each) so that an import never holds the whole file: what
spans chunks (the format, line numbers, the file's gold lines) lives on the
Parser; a chunk deduplicates its own rows and the importer matches the rest
against the database. parse() is the one-chunk reading for callers that want
every pair in memory anyway (parse_labeled_pairs).

Lines are decoded with orjson (several times faster than the json module on
these texts); a line orjson refuses is decoded again with the json module,
whose reading (and error messages) the format is defined by: orjson refuses
some lines json accepts (lone surrogates in escapes, which the checks then
name; 1e400), and never accepts one json refuses. One reading differs: orjson
reads an integer past 64 bits as a float, so a line whose id or metadata holds
a float that large is read again with the json module (values.ReadExactly).
"""

import hashlib
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import orjson

from . import pairing, values
from .values import Malformed, ReadExactly

FORMATS = ("hh", "pairs", "responses")
LABELS = ("a", "b", "tie")
HH_SOURCE = "hh-rlhf"
_KEYS = {  # format -> (required keys, optional keys)
    "hh": ({"chosen", "rejected"}, set()),
    "pairs": ({"prompt", "response_a", "response_b"}, {"label", "gold", "model_a", "model_b", "metadata", "id"}),
    "responses": ({"prompt", "responses"}, {"metadata", "id"}),
}
_HH_MARKERS = {"Human": "user", "Assistant": "assistant"}
_HH_TURN_SPLIT = re.compile(r"\n\n(Human|Assistant):")


class ImportFileError(ValueError):
    """A line of the file is malformed; str() is "line N: what is wrong"."""

    def __init__(self, line: int, message: str):
        super().__init__(f"line {line}: {message}")
        self.line = line
        self.message = message

    def __reduce__(self):  # pickled from the parser process (pipelining.py)
        return type(self), (self.line, self.message)


class _Skip(Exception):
    """An HH line with no comparison in it (see the module docstring)."""


@dataclass(slots=True)
class PromptRow:
    conversation: list
    metadata: dict
    external_id: str
    line: int  # the first line that brought it


@dataclass(slots=True)
class ResponseRow:
    text: str
    source: str
    metadata: dict
    line: int


@dataclass(slots=True)
class ComparisonRow:
    prompt_hash: str
    a_hash: str
    b_hash: str
    label: str
    line: int
    gold_label: str = ""  # the known answer in this row's A/B terms; "" when the pair is not gold
    gold_line: int = 0  # the line that made it gold


@dataclass
class ParsedFile:
    """What some lines of the file ask for (a chunk, or the whole file), deduplicated by content hash,
    in file order."""

    format: str = ""
    lines: int = 0  # non-blank lines read
    skipped: list[tuple[int, str]] = field(default_factory=list)  # (line, why): hh lines with no comparison
    prompts: dict[str, PromptRow] = field(default_factory=dict)  # prompt hash -> row
    responses: dict[tuple[str, str], ResponseRow] = field(default_factory=dict)  # (prompt hash, hash) -> row
    comparisons: dict[tuple, ComparisonRow] = field(default_factory=dict)  # (prompt hash, unordered pair) -> row
    # The file's first gold line of each pair made gold so far, in this chunk or an earlier one:
    # (prompt hash, unordered pair) -> (its A hash, its answer, its line). Shared by a Parser's chunks.
    gold_lines: dict[tuple, tuple[str, str, int]] = field(default_factory=dict)

    def __reduce__(self):
        # Pickled in the parser process (pipelining.py) as plain tuples, which pickle writes and
        # reads in C: pickling the row dataclasses one by one took longer than parsing them.
        # The gold lines stay behind: they are the Parser's, not the writer's.
        return _parsed_file, (
            self.format,
            self.lines,
            self.skipped,
            [(digest, r.conversation, r.metadata, r.external_id, r.line) for digest, r in self.prompts.items()],
            [(key, r.text, r.source, r.metadata, r.line) for key, r in self.responses.items()],
            [
                (key, r.prompt_hash, r.a_hash, r.b_hash, r.label, r.line, r.gold_label, r.gold_line)
                for key, r in self.comparisons.items()
            ],
        )

    def prompt(self, conversation, line, metadata=None, external_id="") -> str:
        digest = _sha256(canonical_conversation(conversation))
        if digest not in self.prompts:
            self.prompts[digest] = PromptRow(conversation, metadata or {}, external_id, line)
        return digest

    def response(self, prompt_hash, text, line, source="", metadata=None) -> str:
        digest = _sha256(text)
        key = (prompt_hash, digest)
        if key not in self.responses:
            self.responses[key] = ResponseRow(text, source, metadata or {}, line)
        return digest

    def comparison(self, prompt_hash, a_hash, b_hash, label, line, gold_label="") -> None:
        key = (prompt_hash, *pairing.unordered(a_hash, b_hash))
        row = self.comparisons.get(key)
        if row is None:
            row = self.comparisons[key] = ComparisonRow(prompt_hash, a_hash, b_hash, label, line)
        if not gold_label:
            return
        first = self.gold_lines.get(key)
        if first is None:
            self.gold_lines[key] = (a_hash, gold_label, line)
        else:
            # The first gold line may name the pair the other way round.
            first_a, first_answer, first_line = first
            if (gold_label if first_a == a_hash else pairing.flipped(gold_label)) != first_answer:
                raise Malformed(f"line {first_line} makes this pair gold with the other answer")
        if not row.gold_label:
            # The row keeps the first line's A/B order; a later line may name the pair the other way round.
            row.gold_label = gold_label if row.a_hash == a_hash else pairing.flipped(gold_label)
            row.gold_line = line


def _parsed_file(format, lines, skipped, prompts, responses, comparisons) -> ParsedFile:
    return ParsedFile(
        format=format,
        lines=lines,
        skipped=skipped,
        prompts={digest: PromptRow(*row) for digest, *row in prompts},
        responses={key: ResponseRow(*row) for key, *row in responses},
        comparisons={key: ComparisonRow(*row) for key, *row in comparisons},
    )


def check_format(format: str | None) -> None:
    """A programmer's error, not a file's: the callers offer FORMATS as choices."""
    if format is not None and format not in FORMATS:
        raise ValueError(f"Unknown format {format!r}; expected one of {', '.join(FORMATS)}.")


class Parser:
    """Reads one file's lines once, in order, and hands them over as chunks (ParsedFile) of at most
    chunk_lines non-blank lines, with what spans chunks kept here: the format (asked for, or detected
    from the first line), the line count, how many bytes were read, the file's gold lines."""

    def __init__(self, *, format: str | None, pairs_per_prompt: int):
        check_format(format)
        self.format = format or ""
        self.pairs_per_prompt = pairs_per_prompt
        self.lines = 0  # non-blank lines read so far
        self.bytes_read = 0  # of the lines read so far, blank ones included (characters, for str lines)
        self._gold_lines: dict[tuple, tuple[str, str, int]] = {}

    def chunks(
        self, lines: Iterable[str | bytes], *, chunk_lines: int | None, chunk_bytes: int | None = None
    ) -> Iterator[ParsedFile]:
        """The file's lines, checked, as chunks of chunk_lines lines or about chunk_bytes, whichever
        comes first (None: no limit; both None: one chunk of everything). Raises ImportFileError for
        the first malformed line, before handing over its chunk."""
        parsed, chunk_start = ParsedFile(gold_lines=self._gold_lines), self.bytes_read
        for number, obj, raw in self._records(lines):
            self.lines += 1
            parsed.lines += 1
            try:
                try:
                    self._parse_line(obj, parsed, number)
                except ReadExactly:  # raised before the line has added anything
                    self._parse_line(_decode_strictly(raw, number), parsed, number)
            except Malformed as error:
                raise ImportFileError(number, str(error)) from None
            except _Skip as skip:
                parsed.skipped.append((number, str(skip)))
            if parsed.lines == chunk_lines or (chunk_bytes and self.bytes_read - chunk_start >= chunk_bytes):
                parsed.format = self.format
                yield parsed
                parsed, chunk_start = ParsedFile(gold_lines=self._gold_lines), self.bytes_read
        if self.lines == 0:
            raise ImportFileError(1, "the file has no JSON lines (it is empty or blank)")
        if parsed.lines:
            parsed.format = self.format
            yield parsed

    def _parse_line(self, obj: dict, parsed: ParsedFile, number: int) -> None:
        detected = _detect(obj)
        if not self.format:
            if detected is None:
                raise Malformed(
                    f"cannot tell the format from the keys ({', '.join(sorted(obj)) or 'none'}): expected "
                    "chosen/rejected (hh), prompt/response_a/response_b (pairs) or prompt/responses (responses)"
                )
            self.format = detected
        elif detected is not None and detected != self.format:
            raise Malformed(f"this is a {detected} line but the file is {self.format}; formats cannot be mixed")
        _check_keys(obj, self.format)
        if self.format == "hh":
            _parse_hh(obj, parsed, number)
        elif self.format == "pairs":
            _parse_pair(obj, parsed, number)
        else:
            _parse_responses(obj, parsed, number, self.pairs_per_prompt)

    def _records(self, lines: Iterable[str | bytes]) -> Iterator[tuple[int, dict, str | bytes]]:
        for number, raw in enumerate(lines, start=1):
            self.bytes_read += len(raw)
            if number == 1:
                # A byte-order mark some editors write.
                raw = raw.removeprefix(b"\xef\xbb\xbf" if isinstance(raw, bytes) else "\ufeff")
            try:
                obj = orjson.loads(raw)
            except orjson.JSONDecodeError:
                obj = _decode_strictly(raw, number)
                if obj is _BLANK:
                    continue
            if not isinstance(obj, dict):
                raise ImportFileError(number, f"expected a JSON object, got {values.json_type(obj)}")
            yield number, obj, raw


def parse(lines: Iterable[str | bytes], *, format: str | None, pairs_per_prompt: int) -> ParsedFile:
    """Read and check every line into one ParsedFile. format None detects it from the first line.
    Raises ImportFileError for the first malformed line."""
    (parsed,) = Parser(format=format, pairs_per_prompt=pairs_per_prompt).chunks(lines, chunk_lines=None)
    return parsed


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
    parsed = parse(lines, format=format, pairs_per_prompt=pairing.pairs_per_prompt(None))
    return [
        LabeledPair(
            conversation=parsed.prompts[c.prompt_hash].conversation,
            response_a=parsed.responses[(c.prompt_hash, c.a_hash)].text,
            response_b=parsed.responses[(c.prompt_hash, c.b_hash)].text,
            label=c.label,
        )
        for c in parsed.comparisons.values()
    ]


# --- Lines -> JSON objects ---

_BLANK = object()


def _decode_strictly(raw: str | bytes, number: int):
    """A line orjson refused, read by the json module: the object, _BLANK, or ImportFileError with
    json's own words."""
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ImportFileError(number, "not valid UTF-8") from None
    if not raw.strip():
        return _BLANK
    try:
        return _DECODER.decode(raw)
    except ValueError as error:
        raise ImportFileError(number, f"not valid JSON ({error})") from None
    except RecursionError:
        raise ImportFileError(number, "JSON nested too deeply") from None


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
        raise Malformed(f"missing field {', '.join(repr(k) for k in missing)}")
    unknown = sorted(obj.keys() - required - optional)
    if unknown:
        allowed = ", ".join(sorted(required | optional))
        raise Malformed(f"unknown field {', '.join(repr(k) for k in unknown)} (a {format} line has: {allowed})")


# --- One line of each format ---


def _parse_hh(obj: dict, parsed: ParsedFile, line: int) -> None:
    chosen = _hh_turns(obj["chosen"], "chosen")
    rejected = _hh_turns(obj["rejected"], "rejected")
    if chosen[:-1] != rejected[:-1]:
        raise Malformed("the chosen and rejected dialogues differ before their final Assistant reply")
    prompt = chosen[:-1]
    if not prompt:
        raise Malformed("no Human turn before the final Assistant reply")
    for turn in prompt:
        if not turn["content"]:
            raise Malformed(f"an empty {'Human' if turn['role'] == 'user' else 'Assistant'} turn in the prompt")
    chosen_text, rejected_text = chosen[-1]["content"], rejected[-1]["content"]
    for name, text in (("chosen", chosen_text), ("rejected", rejected_text)):
        if not text:
            raise _Skip(f"the {name} final reply is empty")
    if chosen_text == rejected_text:
        raise _Skip("the chosen and rejected final replies are the same text")
    prompt_hash = parsed.prompt(prompt, line)
    chosen_hash = parsed.response(prompt_hash, chosen_text, line, source=HH_SOURCE)
    rejected_hash = parsed.response(prompt_hash, rejected_text, line, source=HH_SOURCE)
    parsed.comparison(prompt_hash, *pairing.pair_order(chosen_hash, rejected_hash), line)


def _hh_turns(dialogue, name: str) -> list[dict]:
    if not isinstance(dialogue, str):
        raise Malformed(f"{name!r} must be a string, got {values.json_type(dialogue)}")
    values.check_text(dialogue, f"the {name} dialogue")
    # Split on the markers that start a line after a blank one; a dialogue may
    # also begin with a bare "Human:".
    parts = _HH_TURN_SPLIT.split("\n\n" + dialogue.lstrip())
    if parts[0].strip():
        raise Malformed(f"the {name} dialogue does not start with 'Human:'")
    turns: list[dict] = []
    for marker, content in zip(parts[1::2], parts[2::2], strict=True):
        role, content = _HH_MARKERS[marker], content.strip()
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"] = "\n\n".join(c for c in (turns[-1]["content"], content) if c)
        else:
            turns.append({"role": role, "content": content})
    if not turns or turns[-1]["role"] != "assistant":
        raise Malformed(f"the {name} dialogue does not end with an Assistant reply")
    return turns


def _parse_pair(obj: dict, parsed: ParsedFile, line: int) -> None:
    conversation = values.conversation(obj["prompt"])
    text_a = values.response_text(obj["response_a"], "response_a")
    text_b = values.response_text(obj["response_b"], "response_b")
    if text_a.strip() == text_b.strip():
        raise Malformed("response_a and response_b are the same text")
    label = obj.get("label")
    if label is None:
        label = ""
    elif label not in LABELS:
        raise Malformed(f"unknown label {label!r}: expected one of {', '.join(LABELS)}")
    gold_label = _gold_label(obj, label)
    prompt_hash = parsed.prompt(
        conversation, line, values.metadata(obj.get("metadata")), values.external_id(obj.get("id"))
    )
    a_hash = parsed.response(prompt_hash, text_a, line, source=values.source(obj.get("model_a"), "model_a"))
    b_hash = parsed.response(prompt_hash, text_b, line, source=values.source(obj.get("model_b"), "model_b"))
    parsed.comparison(prompt_hash, a_hash, b_hash, label, line, gold_label)


def _gold_label(obj: dict, label: str) -> str:
    """The known answer of a pairs line: its label when "gold" is true, "" when the line is not gold."""
    if "gold" not in obj:
        return ""
    gold = obj["gold"]
    if not isinstance(gold, bool):
        raise Malformed(f"'gold' must be true or false, got {values.json_type(gold)}")
    if gold and label not in ("a", "b"):
        got = f"it is {label!r}" if label else "there is none"
        raise Malformed(f"a gold pair needs a decisive 'label' ('a' or 'b') as its known answer; {got}")
    return label if gold else ""


def _parse_responses(obj: dict, parsed: ParsedFile, line: int, pairs_per_prompt: int) -> None:
    conversation = values.conversation(obj["prompt"])
    items = obj["responses"]
    if not isinstance(items, list):
        raise Malformed(f"'responses' must be a list, got {values.json_type(items)}")
    distinct: dict[str, tuple] = {}
    for index, item in enumerate(items, start=1):
        where = f"responses[{index}]"
        if not isinstance(item, dict):
            raise Malformed(f'{where} must be an object {{"text", "model"}}, got {values.json_type(item)}')
        unknown = sorted(item.keys() - {"text", "model", "metadata"})
        if unknown:
            raise Malformed(f"{where} has unknown field {', '.join(repr(k) for k in unknown)}")
        if "text" not in item:
            raise Malformed(f"{where} is missing field 'text'")
        text = values.response_text(item["text"], f"{where}.text")
        source = values.source(item.get("model"), f"{where}.model")
        distinct.setdefault(text, (source, values.metadata(item.get("metadata"), f"{where}.metadata")))
    if len(distinct) < 2:
        raise Malformed(f"a responses line needs at least 2 distinct responses, got {len(distinct)}")
    prompt_hash = parsed.prompt(
        conversation, line, values.metadata(obj.get("metadata")), values.external_id(obj.get("id"))
    )
    hashes = [
        parsed.response(prompt_hash, text, line, source=source, metadata=metadata)
        for text, (source, metadata) in distinct.items()
    ]
    for i, j in pairing.spread_pairs(len(hashes), pairs_per_prompt):
        parsed.comparison(prompt_hash, hashes[i], hashes[j], "", line)


def canonical_conversation(conversation: list[dict]) -> str:
    """json.dumps(conversation, sort_keys=True, ensure_ascii=False), the text a prompt's content hash is
    of, written out for its one shape (turns of exactly "role" and "content", both strings) with the
    json module's own string encoder: the same characters, at two thirds of the time."""
    return (
        "["
        + ", ".join(f'{{"content": {_ENCODE(t["content"])}, "role": {_ENCODE(t["role"])}}}' for t in conversation)
        + "]"
    )


_ENCODE = json.encoder.encode_basestring  # what json.dumps(..., ensure_ascii=False) encodes each string with


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
