"""import_pairs: parse the whole file first, then write what is new in one transaction.

Nothing is written until every line has been read and checked (formats.py), so
a malformed line leaves the database as it was. Then the parsed rows are matched
by content hash against what the project already holds (Prompt: per project;
Response: per prompt; Comparison: the unordered pair of responses), so
importing a file twice adds nothing, and whatever is new goes in through the
bulk writer (bulk.py), inside one transaction.

Gold is the one thing an import changes on rows already there: a gold line
(or, with gold_from_labels, a decisive label) makes its stored comparison gold
with that answer, translated to the stored A/B order. An import never unmarks
gold; the admin and the API do.
"""

from collections.abc import Iterable
from dataclasses import dataclass, field

from django.core.exceptions import ValidationError
from django.core.validators import validate_slug
from django.db import transaction

from labeling.comparisons import mark_gold
from labeling.models import Comparison, Project, Prompt, Response

from . import bulk, formats, pairing
from .formats import ComparisonRow, ParsedFile, PromptRow, ResponseRow


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
) -> ImportResult:
    """Parse every line, then write what is new in one transaction.

    The project is created (named project_name, or the slug) when the slug is new;
    an existing project is not renamed. format None detects it from the first
    line's keys. max_pairs_per_prompt caps the comparisons made from one
    `responses` line (default settings.LABELING_MAX_PAIRS_PER_PROMPT).
    gold_from_labels makes the file's decisive reference labels (hh labels,
    pairs labels a/b) gold answers; tie labels stay ordinary comparisons.
    Raises ImportFileError for a malformed line, ValidationError for a bad slug
    or name; either way nothing is written.
    """
    formats.check_format(format)
    cap = pairing.pairs_per_prompt(max_pairs_per_prompt)
    validate_slug(project_slug)
    if len(project_slug) > Project._meta.get_field("slug").max_length:
        raise ValidationError("The project slug is too long.")
    parsed = formats.parse(lines, format=format, pairs_per_prompt=cap, gold_from_labels=gold_from_labels)
    return _write(parsed, project_slug=project_slug, project_name=project_name or project_slug)


def _write(parsed: ParsedFile, *, project_slug: str, project_name: str) -> ImportResult:
    with transaction.atomic():
        project, created = _lock_or_create_project(project_slug, project_name)
        # A project made just now has no rows to match against.
        prompt_ids = {} if created else _prompt_ids(project, list(parsed.prompts))
        existing_prompt_ids = list(prompt_ids.values())
        new_prompts = _save_prompts(project, parsed, prompt_ids)
        response_ids = _response_ids(existing_prompt_ids)
        new_responses = _save_responses(parsed, prompt_ids, response_ids)
        new_comparisons, made_gold = _save_comparisons(project, parsed, prompt_ids, response_ids, existing_prompt_ids)
    adding_lines = {row.line for rows in (new_prompts, new_responses, new_comparisons) for row in rows}
    adding_lines.update(row.gold_line for row in made_gold)
    return ImportResult(
        project=project,
        format=parsed.format,
        lines=parsed.lines,
        prompts_created=len(new_prompts),
        responses_created=len(new_responses),
        comparisons_created=len(new_comparisons),
        duplicates=parsed.lines - len(parsed.skipped) - len(adding_lines),
        skipped=parsed.skipped,
        gold_marked=len(made_gold),
        gold_ties=parsed.gold_ties,
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


def _save_prompts(project: Project, parsed: ParsedFile, prompt_ids: dict) -> list[PromptRow]:
    """Insert the prompts not in prompt_ids (hash -> id), and add their ids to it."""
    new = [(digest, row) for digest, row in parsed.prompts.items() if digest not in prompt_ids]
    ids = bulk.insert(
        Prompt,
        ("project", "conversation", "metadata", "external_id", "content_hash"),
        [(project.pk, row.conversation, row.metadata, row.external_id, digest) for digest, row in new],
    )
    prompt_ids.update(zip((digest for digest, _ in new), ids, strict=True))
    return [row for _, row in new]


def _save_responses(parsed: ParsedFile, prompt_ids: dict, response_ids: dict) -> list[ResponseRow]:
    """Insert the responses not in response_ids ((prompt id, hash) -> id), and add their ids to it."""
    new = []
    for (prompt_hash, digest), row in parsed.responses.items():
        prompt_id = prompt_ids[prompt_hash]
        if (prompt_id, digest) not in response_ids:
            new.append((prompt_id, digest, row))
    ids = bulk.insert(
        Response,
        ("prompt", "text", "source", "metadata", "content_hash"),
        [(prompt_id, row.text, row.source, row.metadata, digest) for prompt_id, digest, row in new],
    )
    response_ids.update(zip(((prompt_id, digest) for prompt_id, digest, _ in new), ids, strict=True))
    return [row for _, _, row in new]


def _save_comparisons(
    project, parsed: ParsedFile, prompt_ids: dict, response_ids: dict, existing_prompt_ids: list
) -> tuple[list[ComparisonRow], list[ComparisonRow]]:
    """Insert the new comparisons and make gold the stored ones the file marks gold. Returns the rows
    inserted, and the rows (new or stored) whose comparison became gold or got another answer."""
    # Only prompts that existed before can have comparisons already.
    stored: dict[tuple[int, int], tuple[int, int, str]] = {}  # unordered pair -> (pk, response_a id, gold label)
    for batch in bulk.batches(existing_prompt_ids):
        for pk, a, b, gold_label in Comparison.objects.filter(prompt_id__in=batch).values_list(
            "pk", "response_a_id", "response_b_id", "gold_label"
        ):
            stored[pairing.unordered(a, b)] = (pk, a, gold_label)
    new_rows, values, made_gold = [], [], []
    regold: dict[str, list[int]] = {"a": [], "b": []}  # answer -> stored comparisons to give it
    for row in parsed.comparisons.values():
        prompt_id = prompt_ids[row.prompt_hash]
        a, b = response_ids[(prompt_id, row.a_hash)], response_ids[(prompt_id, row.b_hash)]
        match = stored.get(pairing.unordered(a, b))
        if match is None:
            new_rows.append(row)
            values.append((project.pk, prompt_id, a, b, row.label, "import", bool(row.gold_label), row.gold_label))
            if row.gold_label:
                made_gold.append(row)
        elif row.gold_label:
            pk, stored_a, stored_gold = match
            answer = row.gold_label if stored_a == a else pairing.flipped(row.gold_label)
            if answer != stored_gold:
                regold[answer].append(pk)
                made_gold.append(row)
    bulk.insert(
        Comparison,
        ("project", "prompt", "response_a", "response_b", "reference_label", "selected_by", "is_gold", "gold_label"),
        values,
    )
    for answer, pks in regold.items():
        for batch in bulk.batches(pks):
            mark_gold(comparison_ids=batch, gold_label=answer)
    return new_rows, made_gold


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
