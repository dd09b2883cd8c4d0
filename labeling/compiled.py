"""Querysets built and compiled once per thread, then run with new values: the hot path's two heaviest reads.

Django builds and compiles a queryset again on every evaluation. For the rater's `next` that was most of
its CPU: the candidate query (assignment.candidates_for: three correlated subqueries, three joins) took
4.1 ms to build and compile and under 1 ms to run, the held-lease lookup 1.5 ms to build (profiles in the
README, "The hot path"). A CompiledQuery keeps the ORM as the one definition of each query: it calls the
same builder once per thread and database with placeholder values, keeps the SQL and the compiler, finds
where each placeholder landed among the SQL's parameters, and from then on runs that SQL with the caller's
values and turns the row into model instances as Django's ModelIterable does (select_related included).
What the builder is given must only ever reach the SQL as parameters, never shape it (which tables, which
conditions): that is checked when compiling (each placeholder must appear among the parameters and nowhere
in the SQL text), and tests/labeling/test_compiled.py checks that both paths give the same SQL and rows.

It leans on three pieces of Django's query internals (the compiler's as_sql, results_iter and klass_info,
as ModelIterable uses them); tests/labeling/test_compiled.py runs against the pinned Django and fails if a
new Django changes them.
"""

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from django.db import connections
from django.db.models import QuerySet
from django.db.models.query import get_related_populators

# Placeholders no real id, count or time can equal.
_INT_BASE = -7_319_000_000_001
_TIME_BASE = datetime(2001, 2, 3, 4, 5, 6, 700_000, tzinfo=UTC)


class CompiledQuery:
    """build(**values) -> a queryset of one model; .first(**values) runs it as compiled once.

    ints: the names of integer values (ids, counts); times: the names of aware datetimes; shapes: the
    names of values that do shape the SQL (a superuser's condition is another than a rater's), given to
    build as they are, one compilation for each combination met.
    """

    def __init__(
        self,
        build: Callable[..., QuerySet],
        *,
        ints: tuple[str, ...] = (),
        times: tuple[str, ...] = (),
        shapes: tuple[str, ...] = (),
    ):
        self.build, self.ints, self.times, self.shapes = build, ints, times, shapes
        self._local = threading.local()  # a compiler holds its thread's connection: one per thread

    def queryset(self, **values) -> QuerySet:
        """The plain ORM queryset for these values (EXPLAIN, tests)."""
        return self.build(**values)

    def first(self, *, using: str = "default", **values):
        compiled = self._compiled(using, {name: values[name] for name in self.shapes})
        params = list(compiled.params)
        for position, name, adapt in compiled.slots:
            params[position] = adapt(values[name])
        compiler = compiled.compiler
        with compiler.connection.cursor() as cursor:
            cursor.execute(compiled.sql, params)
            row = cursor.fetchone()
        if row is None:
            return None
        row = next(iter(compiler.results_iter(results=[[row]])))
        return compiled.instance(row)

    def _compiled(self, using: str, shape: dict | None = None) -> "_Compiled":
        shape = shape or {}
        cache = self._local.__dict__.setdefault("compiled", {})
        key = (using, *shape.values())
        compiled = cache.get(key)
        if compiled is None or compiled.compiler.connection is not connections[using]:
            compiled = cache[key] = _Compiled(self, using, shape)
        return compiled


class _Compiled:
    def __init__(self, query: CompiledQuery, using: str, shape: dict):
        connection = connections[using]
        placeholders = {name: _INT_BASE - n for n, name in enumerate(query.ints)}
        times = {name: _TIME_BASE + timedelta(microseconds=n) for n, name in enumerate(query.times)}
        queryset = query.build(**placeholders, **times, **shape)
        self.compiler = queryset.query.get_compiler(using=using)
        self.sql, params = self.compiler.as_sql()
        self.params = tuple(params)

        ops = connection.ops
        by_value: dict[object, tuple[str, Callable]] = {value: (name, int) for name, value in placeholders.items()}
        for name, value in times.items():
            by_value[ops.adapt_datetimefield_value(value)] = (name, ops.adapt_datetimefield_value)
        self.slots = []
        for position, param in enumerate(self.params):
            if isinstance(param, bool) or not isinstance(param, int | str | datetime):
                continue
            found = by_value.get(param)
            if found is not None:
                self.slots.append((position, *found))
        missing = set(placeholders) | set(times)
        missing -= {name for _, name, _ in self.slots}
        inlined = [name for name, value in placeholders.items() if str(abs(value)) in self.sql]
        if missing or inlined:
            raise ValueError(f"Values {sorted(missing | set(inlined))} do not reach the SQL as parameters only.")

        select, klass_info = self.compiler.select, self.compiler.klass_info
        self.model = klass_info["model"]
        start, end = klass_info["select_fields"][0], klass_info["select_fields"][-1] + 1
        self.start, self.end = start, end
        self.init_list = [column[0].target.attname for column in select[start:end]]
        self.related = get_related_populators(klass_info, select, using)
        self.annotations = self.compiler.annotation_col_map
        self.using = using

    def instance(self, row):
        obj = self.model.from_db(self.using, self.init_list, row[self.start : self.end])
        for populator in self.related:
            populator.populate(row, obj)
        for name, position in (self.annotations or {}).items():
            setattr(obj, name, row[position])
        return obj
