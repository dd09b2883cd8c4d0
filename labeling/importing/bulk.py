"""The bulk writer: rows of raw values straight into a table, fast.

bulk_create builds a model instance and prepares every field of every row in
Python, and on PostgreSQL Django binds each parameter client-side: that made
100,000 pairs (400,000 rows) take minutes. Here the defaults and the creation
time are prepared once, the caller hands over JSON already encoded (json_encoder),
the ids are allocated up front (so no query has to find the rows again), and
rows go in through COPY (PostgreSQL) or executemany (SQLite), both streamed in C.

It bypasses Model.save(), full_clean() and the pre_save/post_save signals. That
is safe for what the importer writes (Prompt, Response, Comparison) because
- none of them overrides save(), and nothing listens for their signals
  (labeling announces only judgment_recorded, which is all rewardmodel hears);
- every value has been checked by the parser before it gets here (formats.py,
  values.py), and the importer fills the foreign keys with ids it has looked up;
- the database still checks every row: the constraints on content hashes,
  unordered pairs, differing responses and gold answers (is_gold with a
  gold_label of "a" or "b", never one without the other) hold whatever
  writes the row;
- defaults and auto_now/auto_now_add timestamps are filled as Django would.
Give one of these models a save() override or a signal receiver, and this
writer must learn to do its work too.

The caller holds the transaction; on SQLite that is what makes allocate_ids
safe (see there).
"""

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import orjson
from django.db import connection, models
from django.utils import timezone

# SQLite's page cache while an import writes, in KiB (its default is 2 MiB): the
# unique indexes on content hashes take rows in random order, and with the default
# most of an import's time went to reading back pages it had just written out.
_SQLITE_IMPORT_CACHE_KIB = 64 * 1024


def insert(model: type[models.Model], field_names: tuple[str, ...], rows: list[tuple]) -> list[int]:
    """Insert rows of raw values for field_names (ids for foreign keys, JSON as text from
    json_encoder()) and return their new ids, in order. Every other field gets its default."""
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
    ids = allocate_ids(model, len(rows))
    prepared = ((pk, *row, *tail) for pk, row in zip(ids, rows, strict=True))
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            with cursor.cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                for row in prepared:
                    copy.write_row(row)
        else:
            sql = f"INSERT INTO {table} ({columns}) VALUES ({', '.join(['%s'] * (len(given) + len(defaults)))})"
            cursor.executemany(sql, prepared)
    return ids


def json_encoder() -> Callable[[object], str]:
    """A function from a value to the JSON text a JSON column takes, for this connection. SQLite:
    exactly what Django's JSONField writes (json.dumps), as SQLite compares JSON as text in lookups
    (there "\\u00c7" and "Ç" differ). PostgreSQL parses it into jsonb, so orjson's faster text does.
    Ask once per batch: the connection's vendor is a thread-local lookup."""
    return _orjson_text if connection.vendor == "postgresql" else _json_text


def _json_text(value) -> str:
    if not value and isinstance(value, dict):
        return "{}"  # most metadata
    return json.dumps(value)


def _orjson_text(value) -> str:
    if not value and isinstance(value, dict):
        return "{}"
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # an integer past 64 bits, which json writes and jsonb stores
        return json.dumps(value)


def allocate_ids(model: type[models.Model], n: int) -> list[int]:
    """n new primary keys for model's table, as its own counter would give them."""
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


@contextmanager
def tuned_for_writing():
    """The connection set up for a bulk import, inside the caller's transaction, and back as it was.

    PostgreSQL: foreign keys are checked when each COPY ends instead of all at
    commit (Django makes them DEFERRABLE INITIALLY DEFERRED), so the server
    checks a chunk while Python parses the next one, and no queue of a million
    pending checks builds up. SQLite: a bigger page cache (the one setting that
    changes nothing about durability; journal and sync modes stay as settings
    have them)."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # for this transaction only
        yield
        with connection.cursor() as cursor:
            # Back to Django's own (every deferrable constraint here is one of its foreign keys), for
            # whatever else the caller's transaction does.
            cursor.execute("SET CONSTRAINTS ALL DEFERRED")
        return
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA cache_size")
        (saved,) = cursor.fetchone()
        cursor.execute(f"PRAGMA cache_size = -{_SQLITE_IMPORT_CACHE_KIB}")
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"PRAGMA cache_size = {int(saved)}")


def batches(items: list, size: int | None = None) -> Iterator[list]:
    """items in slices small enough for one IN (...) lookup."""
    # SQLite takes 999 parameters per statement as Django sees it.
    size = size or min(connection.features.max_query_params or 5000, 5000) - 10
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _encode(field, value):
    # Rows reach the database as text; JSON is encoded as Django's own JSONField would.
    return json.dumps(value) if isinstance(field, models.JSONField) else field.get_db_prep_save(value, connection)


def _is_timestamp(field) -> bool:
    return getattr(field, "auto_now_add", False) or getattr(field, "auto_now", False)
