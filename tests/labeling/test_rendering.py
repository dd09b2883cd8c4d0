"""The one sanitiser: untrusted markdown in, HTML that cannot run or load anything out."""

import re

import pytest
from django.template import Context, Template
from django.utils.safestring import SafeString

from labeling.rendering import _sanitize, render_markdown


def test_it_escapes_script_tags():
    html = render_markdown("Hello <script>window.__xss=1</script> there")
    assert "<script" not in html
    assert "&lt;script&gt;window.__xss=1&lt;/script&gt;" in html


def test_it_shows_raw_html_as_text_instead_of_running_it():
    html = render_markdown('<img src=x onerror="window.__xss=1"> and <b onclick="x()">bold</b>')
    assert "<img" not in html
    assert "<b " not in html
    assert "&lt;img" in html  # the rater sees what the model wrote


@pytest.mark.parametrize(
    "source",
    [
        "[click](javascript:window.__xss=1)",
        "[click](JavaScript:alert(1))",
        "[click](  javascript:alert(1))",
        "[click](vbscript:msgbox(1))",
        "[click](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
        "<javascript:alert(1)>",
    ],
)
def test_it_never_makes_a_link_to_a_dangerous_scheme(source):
    html = render_markdown(source)
    assert not re.search(r"href=\"\s*(javascript|vbscript|data):", html, re.IGNORECASE)
    assert "href" not in html


def test_it_never_makes_relative_links_into_this_site():
    html = render_markdown("[log out](/logout/) and [admin](../admin/) and [top](#top)")
    assert "href" not in html
    assert "log out" in html


def test_it_does_not_load_remote_images():
    html = render_markdown("![tracker](https://evil.example/beacon.png)")
    assert "<img" not in html
    assert "evil.example" not in html
    assert "[image: tracker]" in html


def test_it_neutralises_iframes_forms_and_style_attributes():
    html = render_markdown('<iframe src="https://evil.example"></iframe><form action="/x"><input></form>')
    assert "<iframe" not in html and "<form" not in html and "<input" not in html


def test_the_second_layer_alone_strips_what_markdown_might_let_through():
    # If the markdown layer ever passed HTML on (a preset change, a bug), nh3
    # still stops it.
    dirty = (
        '<p style="color:red" onclick="x()">hi</p>'
        "<script>window.__xss=1</script>"
        '<img src="https://evil.example/x.png" onerror="window.__xss=1">'
        '<iframe src="https://evil.example"></iframe>'
        '<a href="javascript:alert(1)">js</a>'
        '<a href="data:text/html,x">data</a>'
        '<a href="https://ok.example" onmouseover="x()">ok</a>'
        '<code class="language-python evil">x</code>'
        '<td class="align-right other">1</td>'
        "<svg><circle onload=alert(1)></circle></svg>"
        '<form action="/logout/"><button>go</button></form>'
    )
    clean = _sanitize(dirty)
    for banned in ("style=", "onclick", "onerror", "onmouseover", "onload", "<script", "window.__xss", "<img",
                   "<iframe", "javascript:", "data:", "<svg", "<form", "<button", "evil.example"):  # fmt: skip
        assert banned not in clean, banned
    assert '<a href="https://ok.example"' in clean
    assert 'class="language-python"' in clean


def test_it_still_renders_markdown():
    html = render_markdown(
        "**bold** and *italic* and ~~gone~~\n\n"
        "- one\n- two\n\n"
        "1. first\n2. second\n\n"
        "```python\nprint('<hi>')\n```\n\n"
        "| name | score |\n|:-----|------:|\n| a | 1 |\n"
    )
    assert "<strong>bold</strong>" in html
    assert "<em>italic</em>" in html
    assert "<s>gone</s>" in html
    assert "<ul>" in html and "<li>one</li>" in html
    assert "<ol>" in html and "<li>first</li>" in html
    assert "<pre><code class=\"language-python\">print('&lt;hi&gt;')" in html
    assert "<table>" in html and "<th" in html and "<td" in html
    # Alignment survives as a class, since style attributes are not allowed.
    assert 'class="align-right"' in html and "style=" not in html


def test_it_keeps_single_newlines_as_line_breaks():
    assert "<br>" in render_markdown("roses are red\nviolets are blue")


def test_links_get_nofollow_noopener_and_a_new_tab():
    html = render_markdown("[docs](https://docs.example/x?a=1&b=2) <https://auto.example>")
    assert 'href="https://docs.example/x?a=1&amp;b=2"' in html
    assert 'rel="nofollow noopener noreferrer"' in html
    assert 'target="_blank"' in html
    assert 'href="https://auto.example"' in html


def test_mailto_links_are_allowed():
    assert 'href="mailto:someone@example.org"' in render_markdown("[mail](mailto:someone@example.org)")


def test_it_returns_safe_empty_html_for_empty_input():
    assert render_markdown("") == ""
    assert render_markdown(None) == ""
    assert isinstance(render_markdown("x"), SafeString)


def test_the_template_filter_uses_the_sanitiser():
    out = Template("{% load labeling_tags %}{{ text|markdown }}").render(
        Context({"text": "**hi** <script>alert(1)</script>"})
    )
    assert "<strong>hi</strong>" in out
    assert "<script" not in out
