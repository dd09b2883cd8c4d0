"""The ONE place untrusted text (model output, prompts, guidelines) becomes HTML.

Two layers, so that a bug in either one alone does not open a hole:

1. markdown-it-py with the "js-default" preset: raw HTML in the input is
   escaped, not passed through (the "commonmark" preset passes <script> on
   untouched), and links with javascript:/vbscript:/file:/data: targets are
   refused and left as literal text.
2. nh3 (ammonia) over the result, with an explicit allow-list: no <img> (a
   remote image is a tracking beacon), no style attributes, no iframes or
   forms; links only http(s) and mailto, never relative (a model must not be
   able to point a rater at this site's own pages), and always with
   rel="nofollow noopener noreferrer" and a new tab.

Nothing else in the project may call mark_safe on model text; templates use
the `markdown` filter from labeling_tags, which calls render_markdown.
"""

import re

import nh3
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe
from markdown_it import MarkdownIt

_ALLOWED_TAGS = {
    "p", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6",
    "strong", "em", "b", "i", "s", "del", "code", "pre", "blockquote",
    "ul", "ol", "li", "table", "thead", "tbody", "tr", "th", "td", "a",
}  # fmt: skip
_ALLOWED_ATTRIBUTES = {
    "a": {"href", "title"},
    "ol": {"start"},
    "code": {"class"},
    "th": {"class"},
    "td": {"class"},
}
_SAFE_HREF = re.compile(r"^(https?://|mailto:)", re.IGNORECASE)
_LANGUAGE_CLASS = re.compile(r"^language-[A-Za-z0-9_+#.-]{1,40}$")
_ALIGN_CLASS = re.compile(r"^align-(left|center|right)$")
_ALIGN_STYLE = re.compile(r"^text-align:(left|center|right)$")


def _filter_attribute(tag: str, name: str, value: str) -> str | None:
    # nh3 already limits which attributes exist per tag; this narrows their values.
    if name == "href":
        return value if _SAFE_HREF.match(value.strip()) else None
    if name == "class":
        pattern = _LANGUAGE_CLASS if tag == "code" else _ALIGN_CLASS
        kept = [c for c in value.split() if pattern.match(c)]
        return " ".join(kept) or None
    if name == "start":
        return value if value.isdigit() and len(value) <= 9 else None
    return value


_cleaner = nh3.Cleaner(
    tags=_ALLOWED_TAGS,
    clean_content_tags={"script", "style"},
    attributes=_ALLOWED_ATTRIBUTES,
    attribute_filter=_filter_attribute,
    link_rel="nofollow noopener noreferrer",
    set_tag_attribute_values={"a": {"target": "_blank"}},
    url_schemes={"http", "https", "mailto"},
    url_relative="deny",
)


def _table_alignment_as_class(state) -> None:
    # markdown-it writes column alignment as style="text-align:..."; style
    # attributes are not allowed, so carry it as a class the stylesheet knows.
    for token in state.tokens:
        if token.type in ("th_open", "td_open"):
            match = _ALIGN_STYLE.match(token.attrs.get("style", ""))
            if match:
                del token.attrs["style"]
                token.attrs["class"] = f"align-{match.group(1)}"


def _render_image_as_text(self, tokens, idx, options, env) -> str:
    # Show that an image was there without ever loading it.
    alt = self.renderInlineAsText(tokens[idx].children or [], options, env)
    return escape(f"[image: {alt}]" if alt else "[image]")


def _build_markdown() -> MarkdownIt:
    # breaks=True: a single newline in a model's answer is shown as a line
    # break, so raters see the text laid out as written (poems, addresses).
    md = MarkdownIt("js-default", {"breaks": True})
    md.core.ruler.push("table_alignment_as_class", _table_alignment_as_class)
    md.add_render_rule("image", _render_image_as_text)
    return md


_markdown = _build_markdown()


def render_markdown(text: str | None) -> SafeString:
    """Untrusted markdown -> sanitised HTML, safe to put in a page as is."""
    if not text:
        return mark_safe("")
    return mark_safe(_sanitize(_markdown.render(str(text))))  # the one mark_safe on untrusted text


def _sanitize(html: str) -> str:
    return _cleaner.clean(html)
