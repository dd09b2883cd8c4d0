"""import_pairs: read the file once, a chunk at a time, and write what is new in one transaction.

The file is read in order, CHUNK_LINES lines (at most CHUNK_BYTES) at a time
(formats.Parser); each chunk is checked, matched by content hash against what
the project holds (Prompt: per project; Response: per prompt; Comparison: the
unordered pair of responses), and what is new goes in through the bulk writer
(bulk.py) before the next chunk is written. So memory holds a few chunks and a few
ids per row, never the file, and importing a file twice adds nothing.
A file of more than one chunk is parsed ahead in a forked child process
(pipelining.py) while this process writes: the two halves, each about one
core's work, overlap on two cores.

Everything happens in one transaction, so a file goes in whole or not at all:
a malformed line on line 90,000 rolls back the chunks written before it, and
the database is as it was. The chunks already written are in the database
inside that transaction, which is what later chunks are matched against (a
pair on line 3 and again on line 9,000 is one comparison). The price: the
transaction is open while the file is read (about as long as the import), and
on SQLite it holds the write lock all that time (readers go on, WAL).

Gold is the one thing an import changes on rows already there: a gold line
(or, with gold_from_labels, a decisive label) makes its stored comparison gold
with that answer, translated to the stored A/B order. An import never unmarks
gold; the admin and the API do.
"""

import io
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from django.core.exceptions import ValidationError
from django.core.validators import validate_slug
from django.db import transaction

from labeling.comparisons import mark_gold
from labeling.models import Comparison, Project, Prompt, Response

from . import bulk, formats, pairing, pipelining
from .formats import ComparisonRow, ParsedFile

CHUNK_LINES = 4000  # lines per chunk: each chunk is a few queries and three COPYs
CHUNK_BYTES = 8 * 2**20  # and at most this much of the file, for files of very long lines
Progress = Callable[[int, int], None]  # (lines read, bytes read) so far


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
    gold_marked: int = 0  # comparisons, new or stored, made gold or given another answer by this import
    gold_ties: int = 0  # with gold_from_labels: tie-labelled comparisons, left ordinary (a tie is no answer)

    def summary(self) -> str:
        text = (
            f"{self.lines} lines ({self.format}) into project {self.project.slug!r}: "
            f"{self.prompts_created} prompts, {self.responses_created} responses, "
            f"{self.comparisons_created} comparisons created; {self.duplicates} duplicate lines"
        )
        if self.skipped:
            text += f"; {len(self.skipped)} lines skipped"
        if self.gold_marked:
            text += f"; {self.gold_marked} comparisons marked gold"
        if self.gold_ties:
            text += f"; {self.gold_ties} tie labels not made gold (a tie is no known answer)"
        return text


def import_pairs(
    *,
    project_slug: str,
    lines: Iterable[str | bytes],
    format: str | None = None,
    project_name: str | None = None,
    max_pairs_per_prompt: int | None = None,
    gold_from_labels: bool = False,
    progress: Progress | None = None,
) -> ImportResult:
    """Read every line, once, and write what is new, all in one transaction.

    The project is created (named project_name, or the slug) when the slug is new;
    an existing project is not renamed. format None detects it from the first
    line's keys. max_pairs_per_prompt caps the comparisons made from one
    `responses` line (default settings.LABELING_MAX_PAIRS_PER_PROMPT).
    gold_from_labels makes the file's decisive reference labels (hh labels,
    pairs labels a/b) gold answers; tie labels stay ordinary comparisons.
    progress, when given, is called after each chunk with (lines read, bytes
    read) so far; it runs inside the import's transaction, so it should write
    nowhere but outside the database.
    Raises ImportFileError for a malformed line, ValidationError for a bad slug
    or name; either way nothing is written.
    """
    formats.check_format(format)
    cap = pairing.pairs_per_prompt(max_pairs_per_prompt)
    validate_slug(project_slug)
    if len(project_slug) > Project._meta.get_field("slug").max_length:
        raise ValidationError("The project slug is too long.")
    parser = formats.Parser(format=format, pairs_per_prompt=cap)
    with transaction.atomic():
        project, created = _lock_or_create_project(project_slug, project_name or project_slug)
        writer = _Writer(project, was_empty=created, gold_from_labels=gold_from_labels)
        chunks = _with_position(parser, parser.chunks(lines, chunk_lines=CHUNK_LINES, chunk_bytes=CHUNK_BYTES))
        with (
            bulk.tuned_for_writing(),
            pipelining.cyclic_gc_paused(),
            pipelining.parse_ahead(
                chunks,
                source_fd=_file_descriptor(lines),
                more_may_follow=_more_may_follow,
                tail=lambda: (parser.format, parser.lines),
            ) as parsed,
        ):
            for chunk, position in parsed:
                writer.write(chunk)
                if progress is not None:
                    progress(*position)
        format, lines_read = parsed.result  # from the child, which read the rest of the file
    return writer.result(format=format, lines=lines_read)


def _with_position(parser: formats.Parser, chunks: Iterator[ParsedFile]) -> Iterator[tuple[ParsedFile, tuple]]:
    """Each chunk with where the file stands after it (lines, bytes read), for progress."""
    for chunk in chunks:
        yield chunk, (parser.lines, parser.bytes_read)


def _file_descriptor(lines) -> int | None:
    """The descriptor of the file lines reads from (an open file, gzip's too); None for anything else."""
    if not isinstance(lines, io.IOBase):
        return None
    try:
        return lines.fileno()
    except (OSError, ValueError):  # in memory (BytesIO), or closed
        return None


def _more_may_follow(item: tuple[ParsedFile, tuple]) -> bool:
    chunk, (_, bytes_read) = item
    return chunk.lines >= CHUNK_LINES or bytes_read >= CHUNK_BYTES


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


@dataclass(slots=True)
class _Gold:
    """The gold answer this file gives one comparison (in its stored A/B order)."""

    answer: str
    line: int  # the line it comes from
    from_gold_line: bool  # a "gold": true line (final), not a label made gold by gold_from_labels
    before: str  # the comparison's gold answer before this import ("" when not gold, or new)


class _Writer:
    """Writes one file's chunks into project, matching each chunk by content hash against the
    database (which holds the earlier chunks too, in this transaction), and keeps what spans chunks:
    counts, the lines that added something, and the gold the file gives (ids and small tuples)."""

    def __init__(self, project: Project, *, was_empty: bool, gold_from_labels: bool):
        self.project = project
        self.was_empty = was_empty  # a project made just now: the first chunk has nothing to match
        self.gold_from_labels = gold_from_labels
        self.prompts = self.responses = self.comparisons = 0
        self.skipped: list[tuple[int, str]] = []
        self.adding_lines: set[int] = set()
        self.gold: dict[int, _Gold] = {}  # comparison id -> the gold this file gives it
        # gold_from_labels only: the comparisons a line has named so far (only the first line's label
        # counts), and those whose first label is a tie and that no gold line has made gold.
        self.named: set[int] = set()
        self.ties: set[int] = set()

    def write(self, chunk: ParsedFile) -> None:
        self.skipped += chunk.skipped
        prompt_ids = {} if self.was_empty else _prompt_ids(self.project, list(chunk.prompts))
        self.was_empty = False
        stored_prompt_ids = list(prompt_ids.values())
        self._save_prompts(chunk, prompt_ids)
        response_ids = _response_ids(stored_prompt_ids)
        self._save_responses(chunk, prompt_ids, response_ids)
        self._save_comparisons(chunk, prompt_ids, response_ids, stored_prompt_ids)

    def result(self, *, format: str, lines: int) -> ImportResult:
        made_gold = [gold for gold in self.gold.values() if gold.answer != gold.before]
        self.adding_lines.update(gold.line for gold in made_gold)
        return ImportResult(
            project=self.project,
            format=format,
            lines=lines,
            prompts_created=self.prompts,
            responses_created=self.responses,
            comparisons_created=self.comparisons,
            duplicates=lines - len(self.skipped) - len(self.adding_lines),
            skipped=self.skipped,
            gold_marked=len(made_gold),
            gold_ties=len(self.ties),
        )

    def _save_prompts(self, chunk: ParsedFile, prompt_ids: dict) -> None:
        """Insert the prompts not in prompt_ids (hash -> id), and add their ids to it."""
        new = [(digest, row) for digest, row in chunk.prompts.items() if digest not in prompt_ids]
        json_text = bulk.json_encoder()
        ids = bulk.insert(
            Prompt,
            ("project", "conversation", "metadata", "external_id", "content_hash"),
            [
                (
                    self.project.pk,
                    json_text(row.conversation),
                    json_text(row.metadata),
                    row.external_id,
                    digest,
                )
                for digest, row in new
            ],
        )
        prompt_ids.update(zip((digest for digest, _ in new), ids, strict=True))
        self.prompts += len(new)
        self.adding_lines.update(row.line for _, row in new)

    def _save_responses(self, chunk: ParsedFile, prompt_ids: dict, response_ids: dict) -> None:
        """Insert the responses not in response_ids ((prompt id, hash) -> id), and add their ids to it."""
        new = []
        for (prompt_hash, digest), row in chunk.responses.items():
            prompt_id = prompt_ids[prompt_hash]
            if (prompt_id, digest) not in response_ids:
                new.append((prompt_id, digest, row))
        json_text = bulk.json_encoder()
        ids = bulk.insert(
            Response,
            ("prompt", "text", "source", "metadata", "content_hash"),
            [(prompt_id, row.text, row.source, json_text(row.metadata), digest) for prompt_id, digest, row in new],
        )
        response_ids.update(zip(((prompt_id, digest) for prompt_id, digest, _ in new), ids, strict=True))
        self.responses += len(new)
        self.adding_lines.update(row.line for _, _, row in new)

    def _save_comparisons(self, chunk: ParsedFile, prompt_ids: dict, response_ids: dict, stored_prompt_ids: list):
        """Insert the new comparisons, and give the stored ones the gold the file gives them."""
        # Only prompts stored before this chunk can have comparisons already.
        stored: dict[tuple[int, int], tuple[int, int, str]] = {}  # unordered pair -> (pk, response_a id, gold)
        for batch in bulk.batches(stored_prompt_ids):
            for pk, a, b, gold_label in Comparison.objects.filter(prompt_id__in=batch).values_list(
                "pk", "response_a_id", "response_b_id", "gold_label"
            ):
                stored[pairing.unordered(a, b)] = (pk, a, gold_label)
        new, values = [], []
        regold: dict[str, list[int]] = {"a": [], "b": []}  # answer -> stored comparisons to give it
        for row in chunk.comparisons.values():
            prompt_id = prompt_ids[row.prompt_hash]
            a, b = response_ids[(prompt_id, row.a_hash)], response_ids[(prompt_id, row.b_hash)]
            match = stored.get(pairing.unordered(a, b))
            if match is None:
                gold = self._gold_of_new(row)
                new.append((row, gold))
                answer = gold.answer if gold else ""
                values.append((self.project.pk, prompt_id, a, b, row.label, "import", bool(answer), answer))
            else:
                pk, stored_a, stored_gold = match
                answer = self._gold_of_stored(pk, row, same_order=stored_a == a, stored_gold=stored_gold)
                if answer and answer != stored_gold:
                    regold[answer].append(pk)
        ids = bulk.insert(
            Comparison,
            (
                "project",
                "prompt",
                "response_a",
                "response_b",
                "reference_label",
                "selected_by",
                "is_gold",
                "gold_label",
            ),
            values,
        )
        for (row, gold), pk in zip(new, ids, strict=True):
            if gold is not None:
                self.gold[pk] = gold
            elif self.gold_from_labels and row.label == "tie":
                self.ties.add(pk)
            if self.gold_from_labels:
                self.named.add(pk)
        self.comparisons += len(new)
        self.adding_lines.update(row.line for row, _ in new)
        for answer, pks in regold.items():
            for batch in bulk.batches(pks):
                mark_gold(comparison_ids=batch, gold_label=answer)

    def _gold_of_new(self, row: ComparisonRow) -> _Gold | None:
        if row.gold_label:
            return _Gold(row.gold_label, row.gold_line, True, "")
        if self.gold_from_labels and row.label in ("a", "b"):
            return _Gold(row.label, row.line, False, "")
        return None

    def _gold_of_stored(self, pk: int, row: ComparisonRow, *, same_order: bool, stored_gold: str) -> str:
        """The gold answer the file now gives stored comparison pk ("" for none), noted in self.gold.
        row is this chunk's first line of the pair, in the row's A/B order."""
        answer = ""
        earlier = self.gold.get(pk)
        first_named = self.gold_from_labels and pk not in self.named
        if row.gold_label:
            answer = row.gold_label if same_order else pairing.flipped(row.gold_label)
            # The parser has checked that the file's gold lines agree; one overrules a label made gold.
            if earlier is None or not earlier.from_gold_line:
                self.gold[pk] = _Gold(answer, row.gold_line, True, earlier.before if earlier else stored_gold)
            self.ties.discard(pk)
        elif first_named and row.label in ("a", "b"):
            answer = row.label if same_order else pairing.flipped(row.label)
            self.gold[pk] = _Gold(answer, row.line, False, stored_gold)
        elif first_named and row.label == "tie":
            self.ties.add(pk)
        if self.gold_from_labels:
            self.named.add(pk)
        return answer


def _prompt_ids(project: Project, hashes: list[str]) -> dict[str, int]:
    ids: dict[str, int] = {}
    for batch in bulk.batches(hashes):
        ids.update(Prompt.objects.filter(project=project, content_hash__in=batch).values_list("content_hash", "pk"))
    return ids


def _response_ids(prompt_ids: list[int]) -> dict[tuple[int, str], int]:
    ids = {}
    for batch in bulk.batches(prompt_ids):
        for prompt_id, digest, pk in Response.objects.filter(prompt_id__in=batch).values_list(
            "prompt_id", "content_hash", "pk"
        ):
            ids[(prompt_id, digest)] = pk
    return ids
