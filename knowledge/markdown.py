"""Make untrusted text safe to render as Markdown: no links, images, autolinks or HTML.

Why: a VLM's output and prior-report text are not ours. Rendered as Markdown, a generated
``![x](http://host/?q=...)`` would make every viewer's browser fetch that URL (a beacon that can
carry the conversation), and ``[click](javascript:...)``/bare URLs become clickable links. The
replies the responder composes use bold, italics, lists and block quotes but never links or
images, so ``defang`` can be applied to a whole reply: it backslash-escapes exactly the syntax
that makes links, images, autolinks and HTML (brackets, ``<``, URL schemes, ``www.``, ``@``),
which renders as the same characters, and leaves emphasis, lists and quotes alone.
``escape`` escapes every Markdown metacharacter, for text that must show verbatim (a quote).
"""

from __future__ import annotations

import re

_LINK_SYNTAX = re.compile(r"[\[\]<]")
_SCHEME = re.compile(r"(?i)\b(https?|ftps?|mailto|file|javascript|data|vbscript|tel|ssh|ws|wss):")
_WWW = re.compile(r"(?i)\bwww\.")
_AT = re.compile(r"(?<=\w)@(?=\w)")
_ALL = re.compile(r"([\\`*_{}\[\]<>()#+\-.!|~])")


def defang(text: str) -> str:
    """``text`` with links, images, autolinks and HTML neutralised; other formatting kept."""
    text = str(text or "")
    text = _LINK_SYNTAX.sub(lambda m: "\\" + m.group(0), text)
    text = _SCHEME.sub(lambda m: m.group(1) + "\\:", text)
    text = _WWW.sub(lambda m: m.group(0)[:3] + "\\.", text)
    return _AT.sub("\\@", text)


def escape(text: str) -> str:
    """``text`` shown verbatim: every Markdown metacharacter escaped (links and URLs defanged too)."""
    return defang(_ALL.sub(r"\\\1", str(text or "")).replace("\\[", "[").replace("\\]", "]").replace("\\<", "<"))
