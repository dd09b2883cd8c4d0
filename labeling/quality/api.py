"""The rater-quality API: raters' figures, the source leaderboard, and pausing or excluding a rater.

Who may call what (labeling.access): everyone who may see the project (else 404) may list its raters, but
only those with labeling.view_rater_quality get every rater's row; anyone else gets a list with their own
row alone (or nothing before the first computation), never another rater's name or numbers. The leaderboard
needs labeling.view_rater_quality, the four actions labeling.manage_raters (403 without).

Rows are read from the stored figures (labeling.quality.service), recomputed on a schedule: no request
computes anything.
"""

from django.core.exceptions import PermissionDenied
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.parsers import JSONParser
from rest_framework.response import Response
from rest_framework.views import APIView

from labeling.access import can_manage_raters, can_view_quality, get_project_for_user, get_rater_of_project
from labeling.api.common import FIELD_ERRORS, NOT_FOUND, valid
from labeling.api.serializers import ErrorSerializer
from labeling.quality import service
from labeling.quality.stats import MIN_N

MAX_REASON = 2000

# --- output serializers -------------------------------------------------------


class QualityIntervalSerializer(serializers.Serializer):
    value = serializers.FloatField(help_text="The share, in [0, 1].")
    low = serializers.FloatField(help_text="Lower end of its 95% Wilson interval.")
    high = serializers.FloatField(help_text="Upper end of its 95% Wilson interval.")
    n = serializers.IntegerField(help_text="Observations it rests on.")


class TestedIntervalSerializer(QualityIntervalSerializer):
    p_value = serializers.FloatField(help_text="Exact binomial test against 0.5 (two-sided).")


class RaterFlagSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(
        choices=["chance", "position_bias", "self_inconsistency", "speed"],
        help_text="chance: answers not above chance against gold and the worker model (the low-reliability test).",
    )
    reason = serializers.CharField(help_text="Why, in plain words with the numbers.")


_NULL = f" Null below {MIN_N} observations (too few to judge)."


class RaterQualitySerializer(serializers.Serializer):
    rater = serializers.CharField(help_text="Username.")
    judgments = serializers.IntegerField(help_text="All judgments, repeats included.")
    gold_accuracy = QualityIntervalSerializer(
        allow_null=True, help_text="Correct decisive answers on gold comparisons." + _NULL
    )
    agreement = QualityIntervalSerializer(
        allow_null=True,
        help_text="Agreement with the strict majority of the other raters of each comparison (leave-one-out)." + _NULL,
    )
    position_bias = TestedIntervalSerializer(
        allow_null=True, help_text="Share of decisive answers that went to the response shown on the left." + _NULL
    )
    self_consistency = QualityIntervalSerializer(
        allow_null=True, help_text="Repeats (sides swapped) answered as the first time, in A/B terms." + _NULL
    )
    reliability = serializers.FloatField(
        allow_null=True, help_text="Worker-model (MACE) reliability in [0, 1]; null before any first judgment."
    )
    flags = RaterFlagSerializer(many=True, help_text="Empty when nothing stands out (Benjamini–Hochberg at 5%).")
    paused = serializers.BooleanField(help_text="Gets no new tasks.")
    excluded = serializers.BooleanField(help_text="Judgments left out of training and export (kept stored).")
    comparisons = serializers.IntegerField(help_text="First judgments (distinct comparisons).")
    tie_rate = QualityIntervalSerializer(allow_null=True, help_text="Share of ties." + _NULL)
    both_bad_rate = QualityIntervalSerializer(allow_null=True, help_text='Share of "both are bad".' + _NULL)
    too_fast_share = QualityIntervalSerializer(
        allow_null=True, help_text="Share of answers faster than the project's min_time_ms." + _NULL
    )
    median_time_ms = serializers.FloatField(allow_null=True)
    p10_time_ms = serializers.FloatField(allow_null=True, help_text="10th percentile of the time per judgment.")
    active_time_ms = serializers.IntegerField(help_text="Sum of the time spent on every judgment.")


class LeaderboardRowSerializer(serializers.Serializer):
    source = serializers.CharField(help_text="Response.source (a model name).")
    rating = serializers.FloatField(help_text="Bradley–Terry rating on the Elo scale: 1000 is the average source.")
    low = serializers.FloatField(help_text="Lower end of the 95% bootstrap interval.")
    high = serializers.FloatField(help_text="Upper end of the 95% bootstrap interval.")
    comparisons = serializers.IntegerField(help_text="Matches this source played.")


class RaterActionInputSerializer(serializers.Serializer):
    reason = serializers.CharField(
        required=False, allow_blank=True, default="", max_length=MAX_REASON, help_text="Kept with the record."
    )


class RaterStandingSerializer(serializers.Serializer):
    rater = serializers.CharField()
    paused = serializers.BooleanField()
    excluded = serializers.BooleanField()


# --- views ------------------------------------------------------------------


class RaterQualityListView(APIView):
    @extend_schema(
        responses={200: RaterQualitySerializer(many=True), 404: NOT_FOUND},
        summary="Raters' quality figures in a project, best-known first",
        description="Those with labeling.view_rater_quality get every rater who judged in the project (highest "
        "reliability first); anyone else who may see the project gets a list with their own row only, or [] "
        "before the first computation. Figures are recomputed every 10 minutes.",
        examples=[
            OpenApiExample(
                "A rater",
                response_only=True,
                value=[
                    {
                        "rater": "alice",
                        "judgments": 152,
                        "gold_accuracy": {"value": 0.8, "low": 0.49, "high": 0.94, "n": 10, "p_value": 0.055},
                        "agreement": {"value": 0.72, "low": 0.64, "high": 0.79, "n": 120},
                        "position_bias": {"value": 0.51, "low": 0.43, "high": 0.59, "n": 140, "p_value": 0.87},
                        "self_consistency": None,
                        "reliability": 0.71,
                        "flags": [],
                        "paused": False,
                        "excluded": False,
                    }
                ],
            )
        ],
    )
    def get(self, request, pk):
        project = get_project_for_user(request.user, project_id=pk)
        if can_view_quality(request.user, project):
            rows = service.quality_rows(project=project)
        else:
            own = service.quality_row_of(project=project, rater=request.user)
            rows = [own] if own else []
        return Response(RaterQualitySerializer(rows, many=True).data)


_MAY_NOT_VIEW = OpenApiResponse(ErrorSerializer, description="You may see the project but not raters' quality.")
_MAY_NOT_MANAGE = OpenApiResponse(ErrorSerializer, description="You may see the project but not manage its raters.")


class LeaderboardView(APIView):
    @extend_schema(
        responses={200: LeaderboardRowSerializer(many=True), 403: _MAY_NOT_VIEW, 404: NOT_FOUND},
        summary="Bradley–Terry ranking of the project's response sources, best first",
        description="From every first judgment between responses of two named sources (excluded raters left "
        "out); a tie or both-bad counts as half a win for each side. 95% intervals from 1000 bootstrap rounds "
        "over matches, as Chatbot Arena computes them. [] before the first computation. Needs "
        "labeling.view_rater_quality.",
    )
    def get(self, request, pk):
        project = get_project_for_user(request.user, project_id=pk)
        if not can_view_quality(request.user, project):
            raise PermissionDenied("Only those who may see raters' quality figures can see the leaderboard.")
        stored = service.project_figures(project=project)
        return Response(LeaderboardRowSerializer(stored.leaderboard if stored else [], many=True).data)


class _RaterActionView(APIView):
    parser_classes = [JSONParser]
    action = ""  # a key of service.RATER_ACTIONS

    def post(self, request, pk, username):
        project = get_project_for_user(request.user, project_id=pk)
        if not can_manage_raters(request.user, project):
            raise PermissionDenied("Only those who may manage raters can pause or exclude them.")
        rater = get_rater_of_project(project=project, username=username)
        data = valid(RaterActionInputSerializer, request.data)
        standing, _ = service.apply_rater_action(
            project=project, rater=rater, action=self.action, by=request.user, reason=data["reason"]
        )
        return Response(RaterStandingSerializer(standing).data)


def _action_schema(summary: str, description: str):
    return extend_schema(
        request=RaterActionInputSerializer,
        responses={200: RaterStandingSerializer, 400: FIELD_ERRORS, 403: _MAY_NOT_MANAGE, 404: NOT_FOUND},
        summary=summary,
        description=description + " Recorded with who, when and the reason; asking for the state the rater is "
        "already in changes and records nothing. Needs labeling.manage_raters. 404 for a user who neither is "
        "a rater of the project nor judged in it.",
    )


class RaterPauseView(_RaterActionView):
    action = "pause"

    @_action_schema("Pause a rater", "No new tasks; the tasks they hold go back to the pool at once.")
    def post(self, request, pk, username):
        return super().post(request, pk, username)


class RaterResumeView(_RaterActionView):
    action = "resume"

    @_action_schema("Resume a paused rater", "They get tasks again.")
    def post(self, request, pk, username):
        return super().post(request, pk, username)


class RaterExcludeView(_RaterActionView):
    action = "exclude"

    @_action_schema(
        "Exclude a rater's judgments from training and export", "Their judgments stay stored; nothing is deleted."
    )
    def post(self, request, pk, username):
        return super().post(request, pk, username)


class RaterIncludeView(_RaterActionView):
    action = "include"

    @_action_schema("Include an excluded rater's judgments again", "Training and export count them again.")
    def post(self, request, pk, username):
        return super().post(request, pk, username)
