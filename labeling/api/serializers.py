"""Shapes of the public API: what clients send (input serializers, type and
shape checks only) and what they get back (output serializers).

The rules about a judgment (which outcomes a project allows, strength needed
for a preference, known criteria, flag codes, ranges) live in
labeling/judgments.py; the input serializers only make sure the values have
the right types before they get there.

Raters speak in shown terms (left / right as on their screen). The database
stores A / B plus which one was on the left; outputs give both.
"""

from datetime import datetime

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.authtoken.serializers import AuthTokenSerializer

from labeling.judgments import SHOWN_CRITERION_OUTCOMES, SHOWN_OUTCOMES
from labeling.models import MAX_ID, Comparison, Judgment, Project, Side

from . import tokens


class _FlatChildErrors:
    """Report a bad item of a list or dict as messages under the field itself.

    DRF nests them as {"flags": {"1": [...]}}; every error of this API reads
    {"field": ["message", ...]}, so clients can show them the same way.
    """

    def run_child_validation(self, data):
        try:
            return super().run_child_validation(data)
        except serializers.ValidationError as exc:
            if not isinstance(exc.detail, dict):
                raise
            label = "Item" if isinstance(self, serializers.ListField) else "Key"
            raise serializers.ValidationError(
                [f"{label} {key!r}: {' '.join(str(m) for m in messages)}" for key, messages in exc.detail.items()]
            ) from None


class FlatErrorListField(_FlatChildErrors, serializers.ListField):
    pass


class FlatErrorDictField(_FlatChildErrors, serializers.DictField):
    pass


# --- auth -------------------------------------------------------------------


class TokenSerializer(serializers.Serializer):
    token = serializers.CharField(help_text='Send it as "Authorization: Token <token>".')


class TokenRequestSerializer(AuthTokenSerializer):
    # No username is longer (auth.User); axes records the name a client sent
    # in a 255-character column, so a longer one must not get that far.
    username = serializers.CharField(label="Username", max_length=150, write_only=True)


class TokenInfoSerializer(serializers.Serializer):
    """One of your API tokens, without its key."""

    prefix = serializers.SerializerMethodField(help_text="The key's first 8 characters: enough to name it.")
    created = serializers.DateTimeField()
    expires = serializers.SerializerMethodField()
    expired = serializers.SerializerMethodField()

    def get_prefix(self, token) -> str:
        return token.key[: tokens.PREFIX_LENGTH]

    def get_expires(self, token) -> datetime:
        return tokens.expires_at(token)

    def get_expired(self, token) -> bool:
        return tokens.is_expired(token)


# --- projects ---------------------------------------------------------------


class ProgressSerializer(serializers.Serializer):
    judged_by_you = serializers.IntegerField(help_text="Judgments you have made in this project.")
    left_for_you = serializers.IntegerField(help_text="Open comparisons you have neither judged nor skipped.")
    total = serializers.IntegerField(help_text="Comparisons in the project (retired ones excluded).")
    complete = serializers.IntegerField(help_text="Comparisons that have all the judgments they need.")


class ProjectSerializer(serializers.ModelSerializer):
    criteria = serializers.ListField(
        child=serializers.CharField(), read_only=True, help_text="Criteria you may judge separately."
    )
    # The view attaches the Progress computed for all listed projects at once.
    progress = ProgressSerializer(read_only=True)

    class Meta:
        model = Project
        fields = ["id", "slug", "name", "guidelines", "criteria", "allow_ties", "allow_both_bad", "progress"]
        read_only_fields = fields


# --- the task: what a rater compares ----------------------------------------


class TurnSerializer(serializers.Serializer):
    role = serializers.CharField(help_text='"user", "assistant" or "system".')
    content = serializers.CharField(help_text="Untrusted text: escape it before showing it.")


class ShownResponseSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    text = serializers.CharField(help_text="Untrusted model output: escape or sanitise it before showing it.")


class TaskSerializer(serializers.Serializer):
    """A leased comparison in the order this rater sees it.

    Deliberately leaves out the reference label, the responses' sources and
    which one is A: any of them could bias the rater.
    """

    comparison = serializers.IntegerField(source="comparison.pk", help_text="Send it back with your judgment.")
    lease_expires_at = serializers.DateTimeField(
        source="expires_at", help_text="Answer before this; afterwards the comparison may go to someone else."
    )
    conversation = TurnSerializer(many=True, source="comparison.prompt.conversation")
    left = ShownResponseSerializer(source="left_response")
    right = ShownResponseSerializer(source="right_response")
    criteria = serializers.ListField(child=serializers.CharField(), source="comparison.project.criteria")


class SkipInputSerializer(serializers.Serializer):
    comparison = serializers.IntegerField(min_value=1, max_value=MAX_ID)


# --- judgments --------------------------------------------------------------


class JudgmentInputSerializer(serializers.Serializer):
    # Its validated data are the fields of labeling.judgments.JudgmentInput
    # (hence source="comparison_id"). A comment, not a docstring: drf-spectacular
    # would publish a docstring in the schema.
    comparison = serializers.IntegerField(
        min_value=1, max_value=MAX_ID, source="comparison_id", help_text="The id from the task."
    )
    outcome = serializers.ChoiceField(
        choices=SHOWN_OUTCOMES,
        help_text='As shown on screen. "tie" and "both_bad" only where the project allows them.',
    )
    strength = serializers.IntegerField(
        min_value=1,
        max_value=3,
        required=False,
        allow_null=True,
        default=None,
        help_text="1 slightly, 2 clearly, 3 much better. Required for left/right; ignored for tie/both_bad.",
    )
    criteria = FlatErrorDictField(
        child=serializers.ChoiceField(choices=SHOWN_CRITERION_OUTCOMES),
        required=False,
        default=dict,
        help_text="Per-criterion outcome, for criteria of the project only.",
    )
    rationale = serializers.CharField(required=False, allow_blank=True, default="", trim_whitespace=False)
    flags = FlatErrorListField(
        child=serializers.ChoiceField(choices=Judgment.Flag.choices), required=False, default=list
    )
    time_spent_ms = serializers.IntegerField(help_text="Milliseconds from the task being shown to the answer.")


def _shown(stored: str, left: str) -> str:
    """'a'/'b' as stored -> 'left'/'right' as the rater saw them."""
    if stored in (Side.A, Side.B):
        return "left" if stored == left else "right"
    return stored


class JudgmentSerializer(serializers.ModelSerializer):
    """A judgment in the rater's terms, and as stored."""

    outcome = serializers.SerializerMethodField(help_text="left, right, tie or both_bad, as shown to you.")
    criteria = serializers.SerializerMethodField(help_text="Per-criterion outcomes as shown to you.")
    outcome_stored = serializers.ChoiceField(
        choices=Judgment.Outcome.choices,
        source="outcome",
        read_only=True,
        help_text="As stored: a, b, tie or both_bad.",
    )
    criteria_stored = serializers.DictField(
        child=serializers.ChoiceField(choices=Judgment.CriterionOutcome.choices),
        source="criteria",
        read_only=True,
        help_text="Per-criterion outcomes as stored: a, b or tie.",
    )
    response_left = serializers.SerializerMethodField()
    response_right = serializers.SerializerMethodField()
    flags = serializers.ListField(child=serializers.ChoiceField(choices=Judgment.Flag.choices), read_only=True)

    class Meta:
        model = Judgment
        fields = [
            "id",
            "comparison",
            "project",
            "outcome",
            "strength",
            "criteria",
            "rationale",
            "flags",
            "time_spent_ms",
            "left",
            "outcome_stored",
            "criteria_stored",
            "response_left",
            "response_right",
            "created_at",
        ]
        read_only_fields = fields

    @extend_schema_field(serializers.ChoiceField(choices=SHOWN_OUTCOMES))
    def get_outcome(self, judgment) -> str:
        return _shown(judgment.outcome, judgment.left)

    @extend_schema_field(serializers.DictField(child=serializers.ChoiceField(choices=SHOWN_CRITERION_OUTCOMES)))
    def get_criteria(self, judgment) -> dict[str, str]:
        return {name: _shown(value, judgment.left) for name, value in judgment.criteria.items()}

    def get_response_left(self, judgment) -> int:
        c = judgment.comparison
        return c.response_a_id if judgment.left == Side.A else c.response_b_id

    def get_response_right(self, judgment) -> int:
        c = judgment.comparison
        return c.response_b_id if judgment.left == Side.A else c.response_a_id


class JudgmentFilterSerializer(serializers.Serializer):
    project = serializers.IntegerField(
        min_value=1, max_value=MAX_ID, required=False, help_text="Only judgments in this project."
    )


class ErrorSerializer(serializers.Serializer):
    detail = serializers.CharField()


# --- gold answers (managers) ------------------------------------------------


class GoldInputSerializer(serializers.Serializer):
    gold_label = serializers.ChoiceField(
        choices=[("a", "A is better"), ("b", "B is better")],
        help_text='The known answer, in stored terms: "a" or "b" (response_a or response_b is better).',
    )


class ComparisonGoldSerializer(serializers.ModelSerializer):
    """A comparison's gold state, for its managers. Never served to raters."""

    # Declared, not generated: read-only model fields lose allow_blank, and the schema then left out "" (none).
    reference_label = serializers.ChoiceField(choices=Comparison.Label.choices, allow_blank=True, read_only=True)
    gold_label = serializers.ChoiceField(
        choices=Comparison._meta.get_field("gold_label").choices, allow_blank=True, read_only=True
    )

    class Meta:
        model = Comparison
        fields = ["id", "project", "response_a", "response_b", "reference_label", "is_gold", "gold_label", "status"]
        read_only_fields = fields
