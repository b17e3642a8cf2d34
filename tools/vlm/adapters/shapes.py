"""Family-agnostic pieces for reading structured VLM answers: lists, box groups, label lookup.

Answers are read by their STRUCTURE, not by known prefixes: a list answer is "<anything>: a, b and
c" (or just "a, b and c" inside a sentence); a box answer is runs of ``[x1, y1, x2, y2]`` joined by
"," / "and", each run preceded by the words naming what it boxes. A label is found as the longest
run of words at the end of those words that the vocabulary (or the adapter's label set) knows.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from knowledge.vocabulary import normalize
from tools.vlm.adapters.base import Location
from tools.vlm.geometry import ModelView
from tools.vlm.parsing import BoxSpan, box_spans

NEGATION = re.compile(
    r"\b(no|not|none|nothing|without|absent|negative|free of|clear of|unremarkable|normal|can't|cannot|"
    r"couldn't|unable|didn't|don't|doesn't)\b", re.I)
_ITEM_SPLIT = re.compile(r"\s*(?:,|;|\band\b|\bas well as\b|\bplus\b|&)\s*", re.I)
_LEAD = re.compile(r"^(?:an?|the|some|mild|also|with|of)\s+", re.I)
_WORD = re.compile(r"[A-Za-z][A-Za-z/\-']*")
_JOINER = re.compile(r"^[\s,;]*(?:and|&)?[\s,;]*$", re.I)
# Words that end a label and start the location phrase ("a pleural effusion located at ...").
_CUT = re.compile(r"\s+(?:is|are|was|were|located|situated|found|seen|visible|can|at|in|on|positioned|"
                  r"appears?|detected|identified|present|noted|with\s+coordinates)\b.*$", re.I | re.S)


def list_part(text: str) -> str:
    """The enumerated part of a list answer: what follows the last colon, else the whole text."""
    body = text.rsplit(":", 1)[-1] if ":" in text else text
    return body.strip().rstrip(".!").strip()


def split_items(text: str) -> list[str]:
    items: list[str] = []
    for raw in _ITEM_SPLIT.split(text):
        item = raw.strip(" .!?\"'()")
        while True:
            stripped = _LEAD.sub("", item)
            if stripped == item:
                break
            item = stripped
        if item:
            items.append(item)
    return items


@dataclass(frozen=True)
class LabelTable:
    """An adapter's label set: surface text (lower case) -> vocabulary id or None (no id yet)."""

    labels: dict[str, str | None]

    @classmethod
    def of(cls, names: Iterable[str], extra: dict[str, str | None] | None = None) -> LabelTable:
        table = {n.lower(): normalize(n.lower()) for n in names}
        table.update({k.lower(): v for k, v in (extra or {}).items()})
        return cls(table)

    def lookup(self, words: str) -> tuple[str, str | None] | None:
        """(label text, id) for a phrase that IS a label (the table first, then the vocabulary)."""
        key = words.lower().strip(" .,;:!?")
        if not key:
            return None
        if key in self.labels:
            return key, self.labels[key]
        fid = normalize(key)
        return (key, fid) if fid else None

    def find_in(self, text: str) -> tuple[str, str | None] | None:
        """The label named by the longest run of words at the END of ``text`` (after cutting the
        location phrase), else the longest label in the table that occurs anywhere in it."""
        head = _CUT.sub("", text.strip())
        words = _WORD.findall(head)
        for n in range(min(6, len(words)), 0, -1):
            hit = self.lookup(" ".join(words[-n:]))
            if hit:
                return hit
        low = text.lower()
        inside = [k for k in self.labels if re.search(rf"\b{re.escape(k)}\b", low)]
        if inside:
            best = max(inside, key=len)
            return best, self.labels[best]
        return None


@dataclass
class BoxGroup:
    """A run of boxes and the words before it (since the previous run)."""

    context: str
    spans: list[BoxSpan] = field(default_factory=list)


def box_groups(text: str) -> list[BoxGroup]:
    """Split an answer into runs of consecutive boxes ("[..], [..] and [..]"), each with its context."""
    groups: list[BoxGroup] = []
    last_end = 0
    for span in box_spans(text):
        between = text[last_end:span.start]
        if groups and _JOINER.match(between):
            groups[-1].spans.append(span)
        else:
            groups.append(BoxGroup(context=between, spans=[span]))
        last_end = span.end
    return groups


def locations(spans: list[BoxSpan], view: ModelView | None, *, target: str, finding: str | None, task: str,
              rejected: list[str]) -> list[Location]:
    """Usable spans -> Locations on the ORIGINAL image; the rest go to ``rejected`` with the reason."""
    from knowledge.evidence import Box

    out: list[Location] = []
    for span in spans:
        if span.coords is None:
            rejected.append(f"{span.chunk} ({span.why})")
            continue
        if view is not None:
            box = view.box_to_original(span.coords, label=target)
            if box.x2 - box.x1 <= 0.0 or box.y2 - box.y1 <= 0.0:
                rejected.append(f"{span.chunk} (outside the image, in its padding)")
                continue
        else:
            c = span.coords
            box = Box(x1=c[0], y1=c[1], x2=c[2], y2=c[3], label=target)
        out.append(Location(box=box, model_coords=span.coords, target=target, finding=finding, task=task))
    return out


def sentences(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?])\s+", text.strip()) if s]


def negated(text: str, predicate: Callable[[str], bool] | None = None) -> bool:
    """Whether ``text`` reads as a negative statement (optionally only sentences passing ``predicate``)."""
    return any(NEGATION.search(s) for s in sentences(text) if predicate is None or predicate(s))
