"""The reward-model API: versions, the loop's status, training progress, and scoring.

Who may call what: every endpoint is for signed-in users (session or token:
REST_FRAMEWORK's defaults in settings) who may see the project, as
labeling.access decides (its raters and managers, and admins); anyone else
gets 404. Raters get the same read-only view as on the status page (errors in
plain words, no comparison queue); managers with rewardmodel.view_projectloop
and admins the full one. Scoring is open to everyone who may see the project:
raters may score too; it reveals nothing about other raters' judgments.

Views parse with an input serializer, call one selector or domain function
(rewardmodel.status, rewardmodel.serving) and render an output serializer.
Errors, schema snippets and input validation are the ones every API module
shares (labeling.api.common).
"""

from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import generics, serializers
from rest_framework.parsers import JSONParser
from rest_framework.response import Response
from rest_framework.views import APIView

from labeling.access import get_project_for_user, may
from labeling.api.common import FIELD_ERRORS, NOT_FOUND, Conflict, Unavailable, valid
from labeling.api.serializers import ErrorSerializer
from labeling.api.throttling import UserRateThrottle
from labeling.models import Comparison
from rewardmodel import serving
from rewardmodel.models import RewardModelVersion, Strategy, Trigger
from rewardmodel.status import project_status, training_progress, version_row

# Scoring runs in the web process. Measured on 2 CPU cores with the default
# MiniLM backbone at 256 tokens: 8 responses ~3 s, 64 ~16 s. Bulk scoring
# belongs to the workers (pipeline.store_rewards), not to a request.
MAX_RESPONSES = 16
MAX_TEXT_CHARS = 16_000  # per response and per message; the model reads max_length tokens anyway
MAX_TURNS = 50
MAX_CONVERSATION_CHARS = 32_000
# The full view (errors' details, the comparison queue): the project's managers and admins.
VIEW_LOOP = "rewardmodel.view_projectloop"


# --- output serializers -------------------------------------------------------


class VersionProgressSerializer(serializers.Serializer):
    step = serializers.IntegerField(help_text="Optimizer steps done.")
    total = serializers.IntegerField(help_text="Optimizer steps planned; 0 until training has started.")
    loss = serializers.FloatField(allow_null=True, help_text="Training loss at the last reported step.")


class RewardModelVersionSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    version = serializers.IntegerField(help_text="1, 2, 3... per project.")
    status = serializers.ChoiceField(choices=RewardModelVersion.Status.choices)
    status_label = serializers.CharField()
    trigger = serializers.ChoiceField(choices=Trigger.choices, allow_blank=True, help_text="What asked for it.")
    metrics = serializers.DictField(
        help_text="Held-out metrics: accuracy, log_loss, ece, n; reference_* against imported labels when any; "
        "train: training-side figures."
    )
    judgments_count = serializers.IntegerField(help_text="Judgments in the project when its data was read.")
    device = serializers.CharField(help_text='Where it trained: "cpu", "cuda:0", ...')
    progress = VersionProgressSerializer(source="*")
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    error = serializers.CharField(
        help_text="Why it failed or was not activated; managers get the details, raters plain words. Empty if none."
    )
    durations = serializers.DictField(child=serializers.FloatField(), help_text="Seconds per pipeline step.")


class TrainingSerializer(serializers.Serializer):
    version = RewardModelVersionSerializer()
    percent = serializers.IntegerField(allow_null=True, help_text="Null while the step count is not known yet.")
    eta_seconds = serializers.FloatField(allow_null=True, help_text="Rough estimate from the pace so far.")
    eta_text = serializers.CharField(help_text='The estimate in words, e.g. "about 3 min left".')
    stalled = serializers.BooleanField(help_text="The worker stopped renewing its lease (managers only).")


class QueueStateSerializer(serializers.Serializer):
    retrain_pending = serializers.BooleanField()
    pending_reason = serializers.ChoiceField(
        choices=Trigger.choices, allow_blank=True, help_text="What asked for the pending retrain; empty: none."
    )
    pending_since = serializers.DateTimeField(allow_null=True)
    enqueued_at = serializers.DateTimeField(allow_null=True, help_text="Null while waiting for the broker.")
    waiting_for_broker = serializers.BooleanField()
    enqueue_error = serializers.CharField(help_text="Why the broker refused the last hand-over (managers only).")
    last_trigger_at = serializers.DateTimeField(allow_null=True)
    coalesced_triggers = serializers.IntegerField()
    slot_held_until = serializers.DateTimeField(allow_null=True, help_text="A worker holds the training slot.")
    judgments_since_last_version = serializers.IntegerField()
    retrain_every = serializers.IntegerField(help_text="0: the judgment-count trigger is off.")
    judgments_to_next_retrain = serializers.IntegerField(allow_null=True)


class ScheduledTaskSerializer(serializers.Serializer):
    name = serializers.CharField()
    task = serializers.CharField()
    purpose = serializers.CharField()
    enabled = serializers.BooleanField()
    schedule = serializers.CharField()
    last_run_at = serializers.DateTimeField(allow_null=True)
    next_run_at = serializers.DateTimeField(allow_null=True)
    total_run_count = serializers.IntegerField()
    overdue = serializers.BooleanField(help_text="Well past due: celery beat may not be running.")


class QueueItemSerializer(serializers.Serializer):
    comparison_id = serializers.IntegerField()
    priority = serializers.FloatField()
    selected_by = serializers.ChoiceField(choices=Comparison.SelectedBy.choices, allow_blank=True)
    judgments_count = serializers.IntegerField()


class AcquisitionSerializer(serializers.Serializer):
    strategy = serializers.ChoiceField(choices=Strategy.choices)
    strategy_label = serializers.CharField()
    exploration_share = serializers.FloatField()
    pair_budget = serializers.IntegerField()
    open_comparisons = serializers.IntegerField(allow_null=True, help_text="Managers only; null for raters.")
    open_by_selected_by = serializers.DictField(child=serializers.IntegerField())
    top = QueueItemSerializer(many=True, help_text="The next comparisons raters get (managers only).")


class ProjectRefSerializer(serializers.Serializer):
    id = serializers.IntegerField(source="pk")
    slug = serializers.SlugField()
    name = serializers.CharField()


class ProjectStatusSerializer(serializers.Serializer):
    project = ProjectRefSerializer()
    staff = serializers.BooleanField(
        help_text="True: the full view (managers, admins); false: a rater's read-only view."
    )
    active = RewardModelVersionSerializer(allow_null=True)
    training = TrainingSerializer(allow_null=True)
    busy = serializers.BooleanField(help_text="A training runs or a retrain is pending.")
    versions = RewardModelVersionSerializer(many=True, help_text="Newest first (at most 200).")
    queue = QueueStateSerializer()
    schedule = ScheduledTaskSerializer(many=True)
    acquisition = AcquisitionSerializer()


class TrainingProgressSerializer(serializers.Serializer):
    latest = RewardModelVersionSerializer(allow_null=True, help_text="The newest version, whatever its status.")
    training = TrainingSerializer(allow_null=True)
    retrain_pending = serializers.BooleanField()
    waiting_for_broker = serializers.BooleanField()
    busy = serializers.BooleanField(help_text="False: nothing is running or pending; stop polling.")


# --- score: input and output ----------------------------------------------------


class StringField(serializers.CharField):
    """A string as sent: DRF's CharField would turn 3 or true into "3" and "True" and score those."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class ScoreMessageSerializer(serializers.Serializer):
    role = serializers.ChoiceField(choices=["system", "user", "assistant"])
    content = StringField(max_length=MAX_TEXT_CHARS, trim_whitespace=False)


class ScoreInputSerializer(serializers.Serializer):
    conversation = ScoreMessageSerializer(
        many=True,
        required=False,
        min_length=1,
        max_length=MAX_TURNS,
        help_text="The conversation the responses answer. Send this or prompt.",
    )
    prompt = StringField(
        required=False, max_length=MAX_TEXT_CHARS, trim_whitespace=False, help_text="Shorthand for one user turn."
    )
    responses = serializers.ListField(
        child=StringField(max_length=MAX_TEXT_CHARS, allow_blank=True, trim_whitespace=False),
        min_length=1,
        max_length=MAX_RESPONSES,
        help_text=f"1 to {MAX_RESPONSES} responses to score, each scored on its own.",
    )

    def validate(self, data):
        if ("conversation" in data) == ("prompt" in data):
            raise serializers.ValidationError({"conversation": ["Send either conversation or prompt (exactly one)."]})
        if "prompt" in data:
            data["conversation"] = [{"role": "user", "content": data.pop("prompt")}]
        length = sum(len(m["content"]) for m in data["conversation"])
        if length > MAX_CONVERSATION_CHARS:
            raise serializers.ValidationError(
                {"conversation": [f"The conversation has {length} characters; at most {MAX_CONVERSATION_CHARS}."]}
            )
        data["conversation"] = [dict(m) for m in data["conversation"]]
        return data


class ScoreOutputSerializer(serializers.Serializer):
    version = serializers.IntegerField(help_text="The active version that scored them.")
    rewards = serializers.ListField(child=serializers.FloatField(), help_text="One reward per response, in order.")


class ScoreThrottle(UserRateThrottle):
    """Scoring runs a model in the web process: bound it per user, whatever the global rate."""

    scope = "reward_model_score"
    rate = "30/minute"


# --- views ------------------------------------------------------------------


@extend_schema_view(
    get=extend_schema(
        responses={200: RewardModelVersionSerializer(many=True), 404: NOT_FOUND},
        summary="A project's reward-model versions, newest first",
    )
)
class RewardModelListView(generics.ListAPIView):
    serializer_class = RewardModelVersionSerializer

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation: no request user
            return RewardModelVersion.objects.none()
        project = self.project = get_project_for_user(self.request.user, project_id=self.kwargs["pk"])
        return RewardModelVersion.objects.filter(project=project).defer("config", "data_snapshot").order_by("-version")

    def list(self, request, *args, **kwargs):
        page = self.paginate_queryset(self.get_queryset())
        full = may(request.user, VIEW_LOOP, self.project)
        rows = [version_row(v, staff=full) for v in page]
        return self.get_paginated_response(self.get_serializer(rows, many=True).data)


class ProjectStatusView(APIView):
    @extend_schema(
        responses={200: ProjectStatusSerializer, 404: NOT_FOUND},
        summary="The reward-model loop of a project: what the status page shows",
        description="Active version, training in progress, history, retrain queue, schedule and acquisition. "
        "Managers and admins get everything; raters a read-only view without errors' details or the comparison queue.",
    )
    def get(self, request, pk):
        project = get_project_for_user(request.user, project_id=pk)
        state = project_status(project=project, staff=may(request.user, VIEW_LOOP, project))
        return Response(ProjectStatusSerializer(state).data)


class TrainingProgressView(APIView):
    @extend_schema(
        responses={200: TrainingProgressSerializer, 404: NOT_FOUND},
        summary="Training progress of a project, cheap enough to poll every few seconds",
    )
    def get(self, request, pk):
        project = get_project_for_user(request.user, project_id=pk)
        progress = training_progress(project=project, staff=may(request.user, VIEW_LOOP, project))
        return Response(TrainingProgressSerializer(progress).data)


class ScoreView(APIView):
    parser_classes = [JSONParser]
    throttle_classes = [ScoreThrottle]

    @extend_schema(
        request=ScoreInputSerializer,
        responses={
            200: ScoreOutputSerializer,
            400: FIELD_ERRORS,
            404: NOT_FOUND,
            409: OpenApiResponse(ErrorSerializer, description="The project has no active reward model yet."),
            429: OpenApiResponse(
                ErrorSerializer, description=f"More than {ScoreThrottle.rate} for you: wait, then retry."
            ),
            503: OpenApiResponse(ErrorSerializer, description="The active model's checkpoint could not be loaded."),
        },
        summary="Score responses with the project's active reward model",
        description=f"Up to {MAX_RESPONSES} responses to one conversation, {MAX_TEXT_CHARS} characters each. "
        "Rewards are comparable within one version: the difference of two is the log-odds that a rater prefers "
        "the first. Open to everyone who may see the project: its raters and managers, and admins.",
        examples=[
            OpenApiExample(
                "Prompt shorthand",
                value={"prompt": "How do I boil an egg?", "responses": ["Boil it 8 minutes.", "No idea."]},
                request_only=True,
            ),
            OpenApiExample("Rewards", value={"version": 3, "rewards": [1.42, -0.37]}, response_only=True),
        ],
    )
    def post(self, request, pk):
        project = get_project_for_user(request.user, project_id=pk)
        data = valid(ScoreInputSerializer, request.data)
        try:
            version, rewards = serving.score_responses(
                project=project, conversation=data["conversation"], responses=data["responses"]
            )
        except serving.NoActiveVersion as error:
            raise Conflict(str(error)) from error
        except serving.ModelUnavailable as error:
            raise Unavailable(str(error)) from error
        return Response(ScoreOutputSerializer({"version": version, "rewards": rewards}).data)
