"""Parsing the rater's form posts into the inputs of the domain functions.

The rules (which outcomes a project allows, when a strength is needed, what a
criterion may say) live in judgments.py; these forms only turn strings into
types and lay out the choices for the template. Field names match
InvalidJudgment's error keys so its errors land next to the right field.
"""

import time

from django import forms

from labeling.judgments import MAX_RATIONALE, MAX_TIME_SPENT_MS, JudgmentInput, allowed_outcomes
from labeling.models import MAX_ID, Judgment, Project

# (value posted, label, keys shown on screen); the keys are handled in label.js.
OUTCOMES = [
    ("left", "Left is better", ["A", "←"]),
    ("right", "Right is better", ["D", "→"]),
    ("tie", "About the same", ["W"]),
    ("both_bad", "Both are bad", ["X"]),
]
STRENGTHS = [
    (1, "Slightly better", ["1"]),
    (2, "Clearly better", ["2"]),
    (3, "Much better", ["3"]),
]
DEFAULT_STRENGTH = 2
CRITERION_CHOICES = [("left", "Left"), ("tie", "Same"), ("right", "Right")]


def now_ms() -> int:
    return int(time.time() * 1000)


def _posted_ms(value) -> int | None:
    """A posted millisecond clock reading, or None for anything else. Not
    str.isdigit() alone: it accepts "²" and 5,000-digit numbers, on which int() raises."""
    value = str(value)
    return int(value) if value.isascii() and value.isdigit() and len(value) <= 15 else None


class SkipForm(forms.Form):
    comparison_id = forms.IntegerField(min_value=1, max_value=MAX_ID, widget=forms.HiddenInput)
    # Which response the page showed on the left ("a"/"b"): the answer is
    # mapped with the order the rater saw, even from a stale tab.
    shown_left = forms.ChoiceField(choices=[("a", "a"), ("b", "b")], required=False, widget=forms.HiddenInput)


class JudgmentForm(forms.Form):
    comparison_id = forms.IntegerField(min_value=1, max_value=MAX_ID, widget=forms.HiddenInput)
    # Which response the page showed on the left ("a"/"b"): the answer is
    # mapped with the order the rater saw, even from a stale tab.
    shown_left = forms.ChoiceField(choices=[("a", "a"), ("b", "b")], required=False, widget=forms.HiddenInput)
    outcome = forms.ChoiceField(
        choices=[(value, label) for value, label, _ in OUTCOMES],
        error_messages={"required": "Choose which response is better."},
    )
    strength = forms.TypedChoiceField(
        choices=[(str(value), label) for value, label, _ in STRENGTHS],
        coerce=int,
        required=False,
        empty_value=None,
    )
    rationale = forms.CharField(required=False, max_length=MAX_RATIONALE, strip=False, widget=forms.Textarea)
    flags = forms.MultipleChoiceField(choices=Judgment.Flag.choices, required=False)
    # Measured in the browser from the moment the task was shown (label.js).
    time_spent_ms = forms.IntegerField(required=False, widget=forms.HiddenInput)
    # When the server rendered the task: the fallback clock when no script ran.
    shown_at_ms = forms.IntegerField(required=False, widget=forms.HiddenInput)

    def __init__(self, *args, project: Project, **kwargs):
        super().__init__(*args, **kwargs)
        self.project = project
        allowed = allowed_outcomes(project)
        self.outcomes = [o for o in OUTCOMES if o[0] in allowed]
        self.fields["outcome"].choices = [(value, label) for value, label, _ in self.outcomes]
        # Criterion names are free text; field names use their position instead.
        self.criteria = list(project.criteria)
        self.criteria_errors: list[str] = []
        for index, name in enumerate(self.criteria):
            self.fields[f"criterion_{index}"] = forms.ChoiceField(label=name, choices=CRITERION_CHOICES, required=False)

    def clean_time_spent_ms(self):
        spent = self.cleaned_data.get("time_spent_ms")
        if spent is None:
            shown_at = _posted_ms(self.data.get("shown_at_ms", ""))
            spent = now_ms() - shown_at if shown_at is not None else 0
        # A measurement, not a claim: clamp rather than reject the judgment.
        return min(max(spent, 0), MAX_TIME_SPENT_MS)

    def judgment_input(self) -> JudgmentInput:
        data = self.cleaned_data
        criteria = {
            name: data[f"criterion_{index}"]
            for index, name in enumerate(self.criteria)
            if data.get(f"criterion_{index}")
        }
        return JudgmentInput(
            comparison_id=data["comparison_id"],
            outcome=data["outcome"],
            strength=data["strength"],
            criteria=criteria,
            rationale=data["rationale"],
            flags=data["flags"],
            time_spent_ms=data["time_spent_ms"],
            shown_left=data.get("shown_left") or None,
        )

    def add_domain_errors(self, errors: dict[str, list[str]]) -> None:
        """Put InvalidJudgment's errors next to the fields they are about."""
        for field, messages in errors.items():
            for message in messages:
                if field == "criteria":
                    self.criteria_errors.append(message)
                else:
                    self.add_error(field if field in self.fields else None, message)

    # -- layout for the template (no logic beyond what is shown) --------------

    def shown_at_value(self) -> int:
        # Re-shown after an error, the clock keeps running from the first showing.
        posted = _posted_ms(self.data.get("shown_at_ms", "")) if self.is_bound else None
        return posted if posted is not None else now_ms()

    def _value(self, name):
        return self[name].value() if self.is_bound else self.initial.get(name)

    def outcome_options(self) -> list[dict]:
        chosen = self._value("outcome")
        return [
            {"value": value, "label": label, "keys": keys, "checked": chosen == value}
            for value, label, keys in self.outcomes
        ]

    def strength_options(self) -> list[dict]:
        chosen = self._value("strength") or DEFAULT_STRENGTH
        return [
            {"value": value, "label": label, "keys": keys, "checked": str(chosen) == str(value)}
            for value, label, keys in STRENGTHS
        ]

    def criterion_rows(self) -> list[dict]:
        rows = []
        for index, name in enumerate(self.criteria):
            field = f"criterion_{index}"
            chosen = self._value(field)
            rows.append(
                {
                    "field": field,
                    "name": name,
                    "choices": [
                        {"value": value, "label": label, "checked": chosen == value}
                        for value, label in CRITERION_CHOICES
                    ],
                }
            )
        return rows

    def flag_options(self) -> list[dict]:
        chosen = set(self._value("flags") or [])
        return [{"value": value, "label": label, "checked": value in chosen} for value, label in Judgment.Flag.choices]

    def hidden_errors(self) -> list[str]:
        """Errors on fields the rater cannot see, plus errors not tied to a field."""
        errors = list(self.non_field_errors())
        for name in ("comparison_id", "time_spent_ms", "shown_at_ms"):
            errors.extend(self.errors.get(name, []))
        return errors
