from django import template

from labeling.rendering import render_markdown

register = template.Library()


@register.filter(name="markdown")
def markdown(text):
    """{{ response.text|markdown }}: untrusted markdown through the one sanitiser."""
    return render_markdown(text)


@register.filter
def percent(part, whole):
    """{{ done|percent:total }} -> 0..100, for progress bars."""
    try:
        return round(100 * part / whole) if whole else 0
    except (TypeError, ValueError):
        return 0


_ROLES = {"user": "user", "human": "user", "assistant": "assistant", "gpt": "assistant", "system": "system"}


@register.filter
def role_class(role) -> str:
    """A conversation turn's role as one of a few known CSS modifiers (roles are data)."""
    return _ROLES.get(str(role).lower(), "other")
