"""The public REST API: a rater's projects, the next comparison, judgments;
and, for the project's managers, gold answers.

Each view parses its input with a serializer, calls one domain function
(access, assignment, judgments, progress) and renders an output serializer.
Every object is reached through labeling.access, which checks ownership and
answers 404 for what is not the caller's. Authentication (token, then session)
and IsAuthenticated are REST_FRAMEWORK's defaults (config/settings.py). API
tokens (issuing, listing, revoking) are in tokens.py.
"""

from axes.helpers import get_lockout_response
from django.core.exceptions import ValidationError as ModelValidationError
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import generics, status
from rest_framework.authtoken.serializers import AuthTokenSerializer
from rest_framework.authtoken.views import ObtainAuthToken
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.parsers import JSONParser
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.reverse import reverse
from rest_framework.views import APIView

from labeling.access import get_comparison_to_manage, get_project_to_label, judgments_for, projects_for
from labeling.assignment import next_comparison_for, skip_comparison
from labeling.comparisons import set_gold, unset_gold
from labeling.judgments import ComparisonNotFound, InvalidJudgment, JudgmentInput, LeaseConflict, record_judgment
from labeling.progress import progress_for

from . import tokens
from .common import FIELD_ERRORS, NO_SUCH_PAGE, NOT_FOUND, Conflict, valid
from .serializers import (
    ComparisonGoldSerializer,
    ErrorSerializer,
    GoldInputSerializer,
    JudgmentFilterSerializer,
    JudgmentInputSerializer,
    JudgmentSerializer,
    ProjectSerializer,
    SkipInputSerializer,
    TaskSerializer,
    TokenInfoSerializer,
    TokenRequestSerializer,
    TokenSerializer,
)
from .throttling import FixedWindowThrottle

# --- auth -------------------------------------------------------------------


class PasswordGuessThrottle(FixedWindowThrottle):
    """Bounds password guesses per client address, whatever the usernames.
    DRF's ObtainAuthToken has no throttle at all, and the global one is per
    user, which an anonymous caller does not have yet. Lockouts per
    (username, address) come on top (config/security.py)."""

    scope = "api_token"
    rate = "30/minute"

    def get_cache_key(self, request, view):
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}


_LOCKED_OUT = OpenApiResponse(
    ErrorSerializer, description="Too many failed attempts for this username from this address: wait, then retry."
)


@extend_schema_view(
    post=extend_schema(
        request=AuthTokenSerializer,
        responses={200: TokenSerializer, 400: FIELD_ERRORS, 429: _LOCKED_OUT},
        summary="Exchange a username and password for an API token",
        description=(
            "Returns the token you hold while it lasts (API_TOKEN_TTL_HOURS after it was issued), and a new one "
            "once it has expired or was revoked. Changing your password revokes it."
        ),
    )
)
class ObtainTokenView(ObtainAuthToken):
    # The username and password in the body are the credentials; a session
    # cookie riding along must not make DRF demand a CSRF token here.
    authentication_classes = []
    permission_classes = [AllowAny]
    throttle_classes = [PasswordGuessThrottle]
    serializer_class = TokenRequestSerializer

    def post(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        if not serializer.is_valid():
            # The serializer authenticates with this request; axes marks it when
            # the (username, address) pair is, or has just become, locked out.
            # Its reply (AXES_LOCKOUT_CALLABLE) is the one the sign-in pages give, in JSON here.
            if getattr(request, "axes_locked_out", False):
                return get_lockout_response(request)
            raise ValidationError(serializer.errors)
        token = tokens.issue_token(user=serializer.validated_data["user"])
        return Response({"token": token.key})


class TokenListView(APIView):
    @extend_schema(
        responses={200: TokenInfoSerializer(many=True)},
        summary="Your API tokens, without their keys (DRF keeps one per user: at most one)",
    )
    def get(self, request):
        return Response(TokenInfoSerializer(tokens.tokens_of(request.user), many=True).data)


class TokenDetailView(APIView):
    @extend_schema(
        responses={204: OpenApiResponse(description="Revoked: it no longer authenticates."), 404: NOT_FOUND},
        summary="Revoke your API token, named by its prefix",
    )
    def delete(self, request, prefix):
        if not tokens.revoke_token(user=request.user, prefix=prefix):
            raise NotFound("You have no token with that prefix.")
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- projects ---------------------------------------------------------------


def _with_progress(user, projects):
    progress = progress_for(rater=user, project_ids=[p.pk for p in projects])
    for project in projects:
        project.progress = progress[project.pk]
    return projects


@extend_schema(
    responses={200: ProjectSerializer(many=True), 404: NO_SUCH_PAGE},
    summary="Projects you may label, with your progress",
)
class ProjectListView(generics.ListAPIView):
    serializer_class = ProjectSerializer

    def get_queryset(self):
        return projects_for(self.request.user)

    def list(self, request, *args, **kwargs):
        page = self.paginate_queryset(self.get_queryset())
        data = self.get_serializer(_with_progress(request.user, page), many=True).data
        return self.get_paginated_response(data)


class ProjectDetailView(APIView):
    @extend_schema(responses={200: ProjectSerializer, 404: NOT_FOUND}, summary="One project you may label")
    def get(self, request, pk):
        project = get_project_to_label(request.user, project_id=pk)
        return Response(ProjectSerializer(_with_progress(request.user, [project])[0]).data)


class NextComparisonView(APIView):
    @extend_schema(
        responses={
            200: TaskSerializer,
            204: OpenApiResponse(description="Nothing is left for you in this project."),
            404: NOT_FOUND,
        },
        summary="Lease the next comparison to judge (or get back the one you hold)",
        description=(
            "Asking again before answering returns the same comparison. Left and right are in the order "
            "shown to you; send your judgment in those terms."
        ),
    )
    def get(self, request, pk):
        project = get_project_to_label(request.user, project_id=pk)
        assignment = next_comparison_for(rater=request.user, project=project)
        if assignment is None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        return Response(TaskSerializer(assignment).data)


class SkipComparisonView(APIView):
    parser_classes = [JSONParser]

    @extend_schema(
        request=SkipInputSerializer,
        responses={
            204: OpenApiResponse(description="Skipped (or there was no live lease to give back)."),
            400: FIELD_ERRORS,
            404: NOT_FOUND,
        },
        summary="Give back the comparison you hold; it will not be offered to you again",
    )
    def post(self, request, pk):
        project = get_project_to_label(request.user, project_id=pk)
        data = valid(SkipInputSerializer, request.data)
        skip_comparison(rater=request.user, project=project, comparison_id=data["comparison"])
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- judgments --------------------------------------------------------------


@extend_schema_view(
    get=extend_schema(
        parameters=[JudgmentFilterSerializer],
        responses={200: JudgmentSerializer(many=True), 400: FIELD_ERRORS, 404: NO_SUCH_PAGE},
        summary="Your own judgments, newest first",
    )
)
class JudgmentListView(generics.ListAPIView):
    # Criteria and flags are an object and a list: JSON only, no form encodings.
    parser_classes = [JSONParser]
    serializer_class = JudgmentSerializer

    def get_queryset(self):
        judgments = judgments_for(self.request.user).select_related("comparison").order_by("-created_at", "-pk")
        # Only validated, named filters: never request parameters into .filter(**...).
        project_id = valid(JudgmentFilterSerializer, self.request.query_params).get("project")
        if project_id is not None:
            judgments = judgments.filter(project_id=project_id)
        return judgments

    @extend_schema(
        request=JudgmentInputSerializer,
        responses={
            201: JudgmentSerializer,
            200: OpenApiResponse(JudgmentSerializer, description="You had already judged it: the stored judgment."),
            400: FIELD_ERRORS,
            404: NOT_FOUND,
            409: OpenApiResponse(
                ErrorSerializer,
                description="You were not assigned this comparison, or your lease ran out (beyond the project's "
                "grace period) and it went to someone else.",
            ),
        },
        summary="Record your judgment of a comparison",
        description=(
            "Outcome and criteria are in the terms of your lease (left / right as shown). Safe to retry: "
            "a second POST for the same comparison returns the stored judgment with 200."
        ),
        examples=[
            OpenApiExample(
                "Left clearly better",
                value={
                    "comparison": 1234,
                    "outcome": "left",
                    "strength": 2,
                    "criteria": {"helpfulness": "left", "harmlessness": "tie"},
                    "rationale": "The left one answers the question.",
                    "flags": [],
                    "time_spent_ms": 4200,
                },
                request_only=True,
            )
        ],
    )
    def post(self, request):
        judgment = JudgmentInput(**valid(JudgmentInputSerializer, request.data))
        try:
            recorded = record_judgment(rater=request.user, judgment=judgment)
        except ComparisonNotFound as exc:
            raise NotFound(str(exc)) from exc
        except LeaseConflict as exc:
            raise Conflict(str(exc)) from exc
        except InvalidJudgment as exc:
            raise ValidationError(exc.errors) from exc
        body = JudgmentSerializer(recorded.judgment).data
        if not recorded.created:
            return Response(body, status=status.HTTP_200_OK)
        location = reverse("api:judgment-detail", kwargs={"pk": recorded.judgment.pk}, request=request)
        return Response(body, status=status.HTTP_201_CREATED, headers={"Location": location})


@extend_schema(responses={200: JudgmentSerializer, 404: NOT_FOUND}, summary="One of your judgments")
class JudgmentDetailView(generics.RetrieveAPIView):
    serializer_class = JudgmentSerializer

    def get_queryset(self):
        return judgments_for(self.request.user).select_related("comparison")


# --- gold answers (managers) ---------------------------------------------------

_MAY_NOT_CHANGE = OpenApiResponse(
    ErrorSerializer, description="You may see the comparison's project but not change its comparisons."
)


class ComparisonGoldView(APIView):
    # Who may: labeling.access.get_comparison_to_manage (labeling.change_comparison, on a project they manage).
    parser_classes = [JSONParser]

    @extend_schema(
        request=GoldInputSerializer,
        responses={200: ComparisonGoldSerializer, 400: FIELD_ERRORS, 403: _MAY_NOT_CHANGE, 404: NOT_FOUND},
        summary="Make a comparison gold with a known answer (managers)",
        description=(
            "Gold comparisons are served to raters at the project's gold rate, like any task, to measure them "
            "against the known answer. The answer is in stored terms (a / b), not as any rater saw it. Needs "
            "labeling.change_comparison, on a project you manage (admins: any)."
        ),
    )
    def put(self, request, pk):
        comparison = get_comparison_to_manage(request.user, comparison_id=pk)
        data = valid(GoldInputSerializer, request.data)
        try:
            comparison = set_gold(comparison=comparison, gold_label=data["gold_label"])
        except ModelValidationError as exc:
            raise ValidationError(exc.message_dict) from exc
        return Response(ComparisonGoldSerializer(comparison).data)

    @extend_schema(
        responses={
            204: OpenApiResponse(description="Not gold any more (or it was not)."),
            403: _MAY_NOT_CHANGE,
            404: NOT_FOUND,
        },
        summary="Make a gold comparison ordinary again (managers)",
        description="Needs labeling.change_comparison, on a project you manage (admins: any). Its judgments stay.",
    )
    def delete(self, request, pk):
        unset_gold(comparison=get_comparison_to_manage(request.user, comparison_id=pk))
        return Response(status=status.HTTP_204_NO_CONTENT)
