"""Import jobs: a file uploaded through the admin, imported in the background with the command's rules.

    web    ImportUploadHandler streams the upload to VAR_DIR/imports/ (never into
           memory); start_import_job records an ImportJob (queued); the page
           hands it to a worker (labeling.tasks.publish_run_import) and polls.
    worker run_import_job claims the job (queued -> running, one conditional
           UPDATE, so a job handed over twice runs once), runs import_pairs on the
           file, the same all-or-nothing import as `manage.py import_pairs`, and
           records the counts or the line-numbered error, then deletes the file.

Progress goes to a small file beside the upload (VAR_DIR/imports/<job>.progress),
not to the ImportJob row: the import runs in one transaction, so a row written
from inside it would stay invisible until the end, and on SQLite a write from a
second connection would wait for the import's lock. The row gets the final
figures when the job ends.

Web and worker share VAR_DIR (the worker reads the upload there), as `make run`
has them; across machines VAR_DIR/imports must be a shared folder.
"""

import logging
import os
import secrets
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.core.files.uploadhandler import FileUploadHandler
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from labeling.models import ImportJob, Project

from .formats import ImportFileError
from .importer import ImportResult, import_pairs

log = logging.getLogger(__name__)

# A running job whose worker has not finished it after this long is taken to be
# lost (a worker killed mid-import leaves nothing written: the import is one
# transaction) and may be claimed again: redelivered, or run from its page.
STALE_AFTER = timedelta(minutes=30)
_SKIPPED_KEPT = 50  # skipped lines listed on the result page; the count is always whole


def upload_dir() -> Path:
    return Path(settings.VAR_DIR) / "imports"


class StoredUpload(UploadedFile):
    """An upload already on disk at .path; the form sees its name and size, nobody reads it here."""

    def __init__(self, path: Path, *, name: str, size: int, content_type: str | None, charset: str | None):
        super().__init__(file=None, name=name, content_type=content_type, size=size, charset=charset)
        self.path = path

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)


class ImportUploadHandler(FileUploadHandler):
    """Streams every uploaded file of the request to its own file under VAR_DIR/imports/, a chunk
    (64 KiB) at a time, instead of memory or the system's temporary folder."""

    def new_file(self, *args, **kwargs):
        super().new_file(*args, **kwargs)
        folder = upload_dir()
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"upload-{secrets.token_hex(8)}.jsonl"
        self.out = self.path.open("wb")

    def receive_data_chunk(self, raw_data, start):
        self.out.write(raw_data)

    def file_complete(self, file_size):
        self.out.close()
        return StoredUpload(
            self.path, name=self.file_name, size=file_size, content_type=self.content_type, charset=self.charset
        )

    def upload_interrupted(self):
        if hasattr(self, "out"):
            self.out.close()
            self.path.unlink(missing_ok=True)


def start_import_job(
    *,
    user,
    project_slug: str,
    project_name: str | None,
    upload: StoredUpload,
    format: str | None,
    gold_from_labels: bool,
) -> ImportJob:
    """Record a queued import of upload into the project with this slug, which is created now (named
    project_name, or the slug) when it is new, since the job belongs to it. Raises ValidationError
    for a bad project name."""
    with transaction.atomic(durable=True):
        project = Project.objects.filter(slug=project_slug).first()
        if project is None:
            project = Project(slug=project_slug, name=project_name or project_slug)
            project.full_clean()
            project.save()
        return ImportJob.objects.create(
            project=project,
            created_by=user,
            filename=upload.name[: ImportJob._meta.get_field("filename").max_length],
            path=str(upload.path),
            size_bytes=upload.size,
            options={"format": format, "gold_from_labels": gold_from_labels},
        )


def run_import_job(*, job_id: int) -> ImportJob | None:
    """Claim job_id and import its file; return the finished job, or None when it is not there or
    not claimable (another run has it, or it is done)."""
    now = timezone.now()
    claimable = Q(status=ImportJob.Status.QUEUED) | Q(status=ImportJob.Status.RUNNING, started_at__lt=now - STALE_AFTER)
    claimed = (
        ImportJob.objects.filter(claimable, pk=job_id).update(
            status=ImportJob.Status.RUNNING, started_at=now, bytes_done=0, lines_done=0
        )
        == 1
    )
    if not claimed:
        return None
    job = ImportJob.objects.select_related("project").get(pk=job_id)
    progress_path = _progress_path(job)
    done = {"lines": 0, "bytes": 0}

    def progress(lines: int, bytes_read: int) -> None:
        done.update(lines=lines, bytes=bytes_read)
        _write_progress(progress_path, lines=lines, bytes_read=bytes_read)

    try:
        with open(job.path, "rb") as lines:
            result = import_pairs(
                project_slug=job.project.slug,
                lines=lines,
                format=job.options.get("format"),
                gold_from_labels=bool(job.options.get("gold_from_labels")),
                progress=progress,
            )
    except ImportFileError as error:
        _finish(job, ImportJob.Status.FAILED, errors=[{"line": error.line, "message": error.message}], done=done)
    except FileNotFoundError:
        message = (
            f"The uploaded file is not at {job.path} on the machine that ran the import: the web server and "
            "the worker must share VAR_DIR."
        )
        _finish(job, ImportJob.Status.FAILED, errors=[{"line": None, "message": message}], done=done)
    except Exception as error:
        # Rolled back like any other failure; the page says so, the log has the trace.
        log.exception("import job %s failed", job.pk)
        message = f"The import stopped on an unexpected error ({type(error).__name__}); see the worker's log."
        _finish(job, ImportJob.Status.FAILED, errors=[{"line": None, "message": message}], done=done)
    else:
        _finish(job, ImportJob.Status.SUCCEEDED, result=_result_fields(result), done=done)
    finally:
        Path(job.path).unlink(missing_ok=True)
        progress_path.unlink(missing_ok=True)
    return job


def progress_of(job: ImportJob) -> tuple[int, int]:
    """(bytes read, lines read) of job: live from its progress file while it runs, else as recorded."""
    if job.status == ImportJob.Status.RUNNING:
        try:
            bytes_read, lines = _progress_path(job).read_text().split()
            return int(bytes_read), int(lines)
        except (OSError, ValueError):  # not written yet, or the job ended just now
            pass
    return job.bytes_done, job.lines_done


def is_stale(job: ImportJob) -> bool:
    """A running job whose worker seems lost (see STALE_AFTER): it may be run again."""
    return job.status == ImportJob.Status.RUNNING and job.started_at < timezone.now() - STALE_AFTER


def _finish(job: ImportJob, status: str, *, done: dict, result: dict | None = None, errors: list | None = None):
    job.status = status
    job.finished_at = timezone.now()
    job.result = result or {}
    job.errors = errors or []
    job.lines_done = done["lines"]
    job.bytes_done = job.size_bytes if status == ImportJob.Status.SUCCEEDED else done["bytes"]
    job.save(update_fields=["status", "finished_at", "result", "errors", "lines_done", "bytes_done"])


def _result_fields(result: ImportResult) -> dict:
    return {
        "summary": result.summary(),
        "format": result.format,
        "lines": result.lines,
        "prompts_created": result.prompts_created,
        "responses_created": result.responses_created,
        "comparisons_created": result.comparisons_created,
        "duplicates": result.duplicates,
        "gold_marked": result.gold_marked,
        "gold_ties": result.gold_ties,
        "skipped_count": len(result.skipped),
        "skipped": [[line, why] for line, why in result.skipped[:_SKIPPED_KEPT]],
    }


def _progress_path(job: ImportJob) -> Path:
    return upload_dir() / f"job-{job.pk}.progress"


def _write_progress(path: Path, *, lines: int, bytes_read: int) -> None:
    # Written aside and renamed, so that the page never reads half a file.
    partial = path.with_suffix(".partial")
    partial.write_text(f"{bytes_read} {lines}")
    os.replace(partial, path)
