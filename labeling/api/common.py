"""What every API module of the project shares: its errors and its schema
snippets, and the one way an input serializer is run.

Authentication and permissions are not here: REST_FRAMEWORK in
config/settings.py sets them for every view (token first, so that a request
without credentials gets 401 with WWW-Authenticate; IsAuthenticated always).
"""

from django.http import JsonResponse
from django.views.defaults import page_not_found
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse
from rest_framework import status
from rest_framework.exceptions import APIException

from .serializers import ErrorSerializer

NOT_FOUND = OpenApiResponse(ErrorSerializer, description="Not found, or not in a project you may label.")
# PageNumberPagination answers 404 for a page that does not exist (0, "abc", past the last one).
NO_SUCH_PAGE = OpenApiResponse(ErrorSerializer, description="No such page: pages count from 1 to the last one.")
FIELD_ERRORS = OpenApiResponse(OpenApiTypes.OBJECT, description='Field errors: {"field": ["message", ...]}.')


class Conflict(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "The request conflicts with the current state."
    default_code = "conflict"


class Unavailable(APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "The reward model cannot be used right now."
    default_code = "model_unavailable"


def not_found(request, exception=None):
    """The site's 404 (handler404 in config/urls.py). Under /api/ it is the JSON every API 404 is, as the
    schema declares, also for a URL that no pattern matches (an id such as "abc" or "-1" fails the int
    converters before any view runs); elsewhere Django's own page."""
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": "Not found."}, status=status.HTTP_404_NOT_FOUND)
    return page_not_found(request, exception)


def valid(serializer_class, data) -> dict:
    """The validated data of ``serializer_class`` for ``data``; a 400 with
    field errors when it is not valid."""
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data
