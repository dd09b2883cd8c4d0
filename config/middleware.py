"""Bounds on what a request can carry, for every view: JSON bodies (checked
before any view parses one) and ids beyond what a database column holds.

A JSON body nested deeper than JSON_MAX_DEPTH, or larger than
DATA_UPLOAD_MAX_MEMORY_SIZE, is answered with 400 / 413 and a JSON message
here. Python's json module recurses once per level, so "[" * 50_000 raises
RecursionError (a 500) wherever it is parsed, and code that walks the parsed
value (serializers, the database adapter's json.dumps) recurses again. The
check is a middleware rather than a DRF parser because views choose their own
parsers (`parser_classes = [JSONParser]`, DRF's ObtainAuthToken), and a
plain Django view that reads JSON gets the same guard.
"""

import re

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import Http404, JsonResponse
from django.views.defaults import page_not_found

# A JSON string, escapes included ("unrolled" so that long strings match in one sweep).
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
# Brackets only, and one kind of them: "{" counts as "[" (kinds that do not match are the parser's to refuse).
_AS_SQUARE = bytes.maketrans(b"{}", b"[]")
_NOT_A_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")
# Content types that DRF's JSONParser accepts: application/json, and wildcards that match it.
_JSON_SUBTYPES = {"json", "*"}


def nesting_exceeds(body: bytes, limit: int) -> bool:
    """Whether the JSON in `body` nests arrays and objects deeper than `limit`
    (or its brackets outside strings do not pair up, which no valid JSON does).

    No recursion and no Python loop per byte: strings are cut out, everything
    but brackets dropped, then each pass removes the innermost pairs, one
    level; after `limit` passes a body at most that deep has none left. Each
    step is a C-level sweep of the bytes: milliseconds for an ordinary body,
    about a second for the worst 10 MB (32 levels, repeated).
    """
    brackets = _STRING.sub(b"", body).translate(_AS_SQUARE, _NOT_A_BRACKET)
    for _ in range(limit):
        if not brackets:
            return False
        inner_removed = brackets.replace(b"[]", b"")
        if len(inner_removed) == len(brackets):
            return True  # brackets that never pair up: not JSON
        brackets = inner_removed
    return bool(brackets)


def _is_json(content_type: str) -> bool:
    main, _, sub = content_type.partition("/")
    return main in {"application", "*"} and (sub in _JSON_SUBTYPES or sub.endswith("+json"))


class BoundedJSONMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.method in {"POST", "PUT", "PATCH", "DELETE"} and _is_json(request.content_type or ""):
            refused = self._refusal(request)
            if refused is not None:
                return refused
        return self.get_response(request)

    def _refusal(self, request) -> JsonResponse | None:
        try:
            body = request.body  # Django refuses a body above DATA_UPLOAD_MAX_MEMORY_SIZE here
        except RequestDataTooBig:
            limit_mb = settings.DATA_UPLOAD_MAX_MEMORY_SIZE / (1024 * 1024)
            return JsonResponse({"detail": f"The request body is larger than {limit_mb:g} MB."}, status=413)
        if nesting_exceeds(body, settings.JSON_MAX_DEPTH):
            detail = f"JSON nested deeper than {settings.JSON_MAX_DEPTH} levels (or its brackets do not pair up)."
            return JsonResponse({"detail": detail}, status=400)
        return None


class IdOverflowMiddleware:
    """An id beyond a BIGINT names no row: 404, as any other id that names none.

    Inputs are bounded where they are parsed (labeling.models.MAX_ID), and
    Django range-checks lookups on integer primary keys; but a lookup through
    a foreign key (the admin's pages of models keyed by their project, a URL
    id passed to .filter(project_id=...)) reaches SQLite unchecked, and
    SQLite cannot even bind the integer. PostgreSQL simply finds no row.
    """

    _SQLITE_OVERFLOW = "too large to convert to SQLite INTEGER"

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        if not (isinstance(exception, OverflowError) and self._SQLITE_OVERFLOW in str(exception)):
            return None
        if request.path.startswith("/api/"):
            return JsonResponse({"detail": "Not found."}, status=404)
        return page_not_found(request, Http404("No such object."))
