"""The importer parses a file ahead in a forked child while it writes (labeling/importing/pipelining.py).

A recorder patched over the Parser's line step writes the pid that parsed each line to a file; the
fork copies the patch, so the file says which process parsed which line.
"""

import json
import os

import pytest

from labeling.importing import ImportFileError, formats, import_pairs, importer
from labeling.models import Comparison, Project, Prompt, Response


def pairs_file(tmp_path, n, *, bad_line=None):
    path = tmp_path / "pairs.jsonl"
    with path.open("w") as out:
        for i in range(1, n + 1):
            if i == bad_line:
                out.write('{"prompt": "Q", "response_a": "same", "response_b": "same"}\n')
            else:
                out.write(json.dumps({"prompt": f"Question {i}?", "response_a": f"A{i}", "response_b": f"B{i}"}) + "\n")
    return path


@pytest.fixture
def chunks_of_5(monkeypatch):
    monkeypatch.setattr(importer, "CHUNK_LINES", 5)


@pytest.fixture
def parsed_by(monkeypatch, tmp_path):
    """line number -> pid of the process that parsed it, once the import is over."""
    log = tmp_path / "pids"
    original = formats.Parser._parse_line

    def recording(self, obj, parsed, number):
        with log.open("a") as out:
            out.write(f"{number} {os.getpid()}\n")
        return original(self, obj, parsed, number)

    monkeypatch.setattr(formats.Parser, "_parse_line", recording)

    def read() -> dict[int, int]:
        return {int(n): int(pid) for n, pid in (line.split() for line in log.read_text().splitlines())}

    return read


def _children() -> list[int]:
    """This process's children, alive or zombie (from /proc)."""
    me, found = str(os.getpid()), []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = open(f"/proc/{entry}/stat").read()
            except OSError:
                continue
            if stat.rsplit(")", 1)[1].split()[1] == me:
                found.append(int(entry))
    return found


def rows(slug):
    return (
        Prompt.objects.filter(project__slug=slug).count(),
        Response.objects.filter(prompt__project__slug=slug).count(),
        Comparison.objects.filter(project__slug=slug).count(),
    )


@pytest.mark.django_db
def test_a_file_of_several_chunks_is_parsed_ahead_in_a_child_and_imported_whole(tmp_path, chunks_of_5, parsed_by):
    seen = []
    with pairs_file(tmp_path, 23).open("rb") as lines:
        result = import_pairs(
            project_slug="piped", lines=lines, format="pairs", progress=lambda n, _bytes: seen.append(n)
        )

    assert (result.lines, result.comparisons_created, result.format) == (23, 23, "pairs")
    assert rows("piped") == (23, 46, 23)
    assert seen == [5, 10, 15, 20, 23]  # progress where each written chunk ends, not where the child is
    pids = parsed_by()
    assert sorted(pids) == list(range(1, 24))
    assert {pids[n] for n in range(1, 6)} == {os.getpid()}  # the first chunk, here
    (child,) = {pids[n] for n in range(6, 24)}
    assert child != os.getpid()
    assert not _children()  # reaped


@pytest.mark.django_db
def test_a_malformed_line_the_child_reads_fails_the_import_with_its_number_and_writes_nothing(
    tmp_path, chunks_of_5, parsed_by
):
    with pairs_file(tmp_path, 30, bad_line=17).open("rb") as lines:
        with pytest.raises(ImportFileError, match="^line 17: response_a and response_b are the same text$") as error:
            import_pairs(project_slug="bad", lines=lines, format="pairs")

    assert error.value.line == 17
    assert parsed_by()[17] != os.getpid()
    assert not Project.objects.filter(slug="bad").exists() and rows("bad") == (0, 0, 0)
    assert not _children()


@pytest.mark.django_db
def test_a_parser_process_that_dies_fails_the_import_and_writes_nothing(tmp_path, chunks_of_5, monkeypatch):
    original = formats.Parser._parse_line

    def dies_on_line_12(self, obj, parsed, number):
        if number == 12:
            os._exit(3)  # as the kernel's OOM killer would end it: no word to the parent
        return original(self, obj, parsed, number)

    monkeypatch.setattr(formats.Parser, "_parse_line", dies_on_line_12)
    with pairs_file(tmp_path, 30).open("rb") as lines:
        with pytest.raises(RuntimeError, match=r"parser process ended without finishing \(exit code 3\)"):
            import_pairs(project_slug="died", lines=lines, format="pairs")

    assert rows("died") == (0, 0, 0)
    assert not _children()


@pytest.mark.django_db
def test_lines_that_are_not_a_file_or_a_file_of_one_chunk_are_parsed_here(tmp_path, chunks_of_5, parsed_by):
    listed = pairs_file(tmp_path, 12).read_text().splitlines(keepends=True)
    import_pairs(project_slug="listed", lines=listed, format="pairs")  # a list: it may be this process's alone
    with pairs_file(tmp_path, 4).open("rb") as lines:  # one chunk: nothing to overlap
        import_pairs(project_slug="small", lines=lines, format="pairs")

    assert set(parsed_by().values()) == {os.getpid()}
    assert rows("listed") == (12, 24, 12) and rows("small") == (4, 8, 4)


@pytest.mark.django_db
def test_import_parse_process_0_parses_everything_here(tmp_path, chunks_of_5, parsed_by, monkeypatch):
    monkeypatch.setenv("IMPORT_PARSE_PROCESS", "0")
    with pairs_file(tmp_path, 23).open("rb") as lines:
        import_pairs(project_slug="here", lines=lines, format="pairs")

    assert set(parsed_by().values()) == {os.getpid()}
    assert rows("here") == (23, 46, 23)
