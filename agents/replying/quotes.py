"""Short quotes of a tool's own words that keep their meaning.

A reply quotes a few words of a report, never the whole sentence; the cut must never drop the word
that turns the mention around: "no pneumothorax" must not become "pneumothorax", nor "effusion has
resolved" "effusion". So a quote keeps the mention, the first and last negation or hedge cue of its
sentence before it and after it; what lies between is elided.
"""

from __future__ import annotations

import re

OPEN, CLOSE, ELLIPSIS = "\u201c", "\u201d", "\u2026"

# Words that negate, hedge or date a mention (knowledge/context_cues.py has the full scopes; a quote only
# needs to keep them, so a broad list errs on the safe side).
CUE = re.compile(
    r"\b(?:no|not|without|negative|free|clear|absence|absent|resolved|resolving|removed|excluded|exclude|"
    r"rule[ds]?|ruled|unlikely|may|might|could|can(?:not|'t)?|possib\w*|probab\w*|suspect\w*|question\w*|"
    r"concern\w*|versus|vs|history|prior|previous\w*|chronic|if|none|"
    r"cleared|improv\w*|decreas\w*|borderline|equivocal|likely|consider\w*|differential)\b",
    re.IGNORECASE,
)
# The labeler's sentences (knowledge/labeler.py): a cue's scope never leaves one, so neither does a quote.
# A period glued to the next word ("apex.There") does not end a sentence there, a newline does.
_SENTENCE = re.compile(r"[^\s.!?](?:[^.!?\n]|[.!?](?=[^\s]))*[.!?]*")
_FIRST_SENTENCE_END = re.compile(r"[.;!?\n]")
_WORD = re.compile(r"\S+")


def _sentence(text: str, a: int, b: int) -> tuple[int, int]:
    for m in _SENTENCE.finditer(text):
        if m.start() <= a and b <= m.end():
            end = m.end()
            while end > b and text[end - 1] in ".!?":  # a quote ends without the sentence's full stop
                end -= 1
            return m.start(), end
    return a, b


def _clip(text: str) -> str:
    return " ".join(text.split())


def _render(words: list[str], keep: set[int]) -> str:
    """The kept words in order, an ellipsis wherever words were left out (before, between, after)."""
    out: list[str] = []
    last = -1
    for i in sorted(keep):
        if i != last + 1:
            out.append(ELLIPSIS)
        out.append(words[i])
        last = i
    if words and last != len(words) - 1:
        out.append(ELLIPSIS)
    return " ".join(out)


def _cut(text: str, s: int, a: int, b: int, e: int, *, context: bool) -> str:
    head_words = list(_WORD.finditer(text, s, a))
    cues = list(CUE.finditer(text, s, a))
    keep = {len(head_words) - 1} if head_words and context else set()
    for cue in cues[:1] + cues[-1:]:
        keep |= {i for i, w in enumerate(head_words) if w.start() < cue.end() and w.end() > cue.start()}
    head = _render([w.group() for w in head_words], keep) if head_words else ""
    tail_words = list(_WORD.finditer(text, b, e))
    after = list(CUE.finditer(text, b, e))  # "effusion has resolved", "opacities ... could be atelectasis"
    keep_tail = ({0} if context else set()) | {i for cue in after[:1] + after[-1:] for i, w in enumerate(tail_words)
                                               if w.start() < cue.end() and w.end() > cue.start()}
    tail = _render([w.group() for w in tail_words], keep_tail) if tail_words else ""
    mention = _clip(text[a:b])
    # a mention glued to the next word ("effusions.") keeps its letters; a quote adds no space inside a word
    body = " ".join(part for part in (head, mention) if part)
    if tail:
        body += tail if tail[0] in ",:;)" else f" {tail}"
    return body


def quote_span(text: str, span: tuple[int, int], limit: int = 60) -> str:
    """A short quote of the mention ``text[span[0]:span[1]]`` in its sentence, its cues kept: every word of
    the first and of the last cue before the mention, the word right before it, the word right after it,
    and the first and last cue after it ("on … prior … resolved"); past ``limit``, the cues and the mention only."""
    a, b = span
    if not (0 <= a < b <= len(text)):
        raise ValueError(f"span {span} is outside the text ({len(text)} characters)")
    s, e = _sentence(text, a, b)
    whole = _clip(text[s:e])
    if len(whole) <= limit:
        return f"{OPEN}{whole}{CLOSE}"
    body = _cut(text, s, a, b, e, context=True)
    if len(body) > limit:  # still long: only the cues and the mention (never fewer)
        body = _cut(text, s, a, b, e, context=False)
    return f"{OPEN}{body}{CLOSE}"


WHOLE_SENTENCE_MAX = 180
"""A first sentence up to this long is quoted whole when a cue follows the cut; a longer one (a rambling or
unpunctuated answer) keeps its cues with the word after each, the rest elided, so a quote stays short."""


def quote_text(text: str, limit: int = 60) -> str:
    """A short quote of a tool's whole answer ("No.", "Yes, a small effusion"): its first sentence, cut at
    a word only where no cue follows within the rest of that sentence (else the sentence is kept whole, up to
    ``WHOLE_SENTENCE_MAX`` characters; past that, the first and last cue after the cut are kept, each with
    the word after it)."""
    first = _clip(text[: next((m.start() for m in _FIRST_SENTENCE_END.finditer(text)), len(text))]) or _clip(text)
    if len(first) <= limit:
        return f"{OPEN}{first}{CLOSE}"
    cut = first[:limit].rsplit(" ", 1)[0]
    rest = first[len(cut):]
    cues = list(CUE.finditer(rest))
    if not cues:
        return f"{OPEN}{cut}{ELLIPSIS}{CLOSE}"
    if len(first) <= max(limit, WHOLE_SENTENCE_MAX):  # a cue after the cut would be lost: keep the sentence
        return f"{OPEN}{first}{CLOSE}"
    words = list(_WORD.finditer(rest))
    keep: set[int] = set()
    for cue in dict.fromkeys((cues[0], cues[-1])):
        at = next(i for i, w in enumerate(words) if w.end() > cue.start())
        keep |= {at, at + 1} & set(range(len(words)))
    return f"{OPEN}{cut} {_render([w.group() for w in words], keep)}{CLOSE}"
