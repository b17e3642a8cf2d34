"""Reading RadVLM's answers: boxes and yes/no.

Boxes appear inside sentences as ``[x1, y1, x2, y2]`` with fractions of the model's image (two
decimals), possibly several per answer ("... at [0.1, 0.2, 0.3, 0.4] and [0.5, 0.5, 0.7, 0.8]").

Policy for numbers outside [0, 1] (decided here, tested in tests/vlm/test_parsing.py):
- within ``CLIP_TOLERANCE`` of the range (e.g. -0.01 or 1.02, a rounding slip): clipped;
- further out (e.g. 1.7, or pixel coordinates like 120): REJECTED, since the model has left the
  coordinate convention and any rescaling would be a guess;
- swapped corners are put in order; boxes of zero width or height after clipping are rejected;
- anything that is not four numbers in brackets (``[0.1, 0.2, 0.3]``, ``[0.1, 0.2, abc, 0.4]``)
  is not a box.
Rejected candidates are returned so a caller can say why nothing was drawn.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from knowledge.evidence import Box, Status
from tools.vlm.geometry import Coords, ModelView

CLIP_TOLERANCE = 0.05
_NUM = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)"
_BOX_RE = re.compile(rf"\[\s*({_NUM})\s*,\s*({_NUM})\s*,\s*({_NUM})\s*,\s*({_NUM})\s*\]")
_BRACKET_RE = re.compile(r"\[[^\[\]]*\]")


@dataclass
class ParsedBoxes:
    boxes: list[Box] = field(default_factory=list)  # normalised to the ORIGINAL image
    model_coords: list[Coords] = field(default_factory=list)  # as the model wrote them (after clip/order)
    rejected: list[str] = field(default_factory=list)  # bracketed texts that were not usable boxes


def _check(values: list[float]) -> tuple[Coords | None, str | None]:
    if any(v < -CLIP_TOLERANCE or v > 1.0 + CLIP_TOLERANCE for v in values):
        return None, "coordinates outside 0-1"
    x1, y1, x2, y2 = (min(1.0, max(0.0, v)) for v in values)
    x1, x2 = sorted((x1, x2))
    y1, y2 = sorted((y1, y2))
    if x2 - x1 <= 0.0 or y2 - y1 <= 0.0:
        return None, "empty box"
    return (x1, y1, x2, y2), None


@dataclass(frozen=True)
class BoxSpan:
    """One bracketed text in an answer: where it is, and its coordinates or why it is unusable."""

    start: int
    end: int
    chunk: str
    coords: Coords | None
    why: str | None


def box_spans(text: str | None) -> list[BoxSpan]:
    """Every bracket that holds a digit, in order, checked against the coordinate policy."""
    spans: list[BoxSpan] = []
    for bracket in _BRACKET_RE.finditer(text or ""):
        chunk = bracket.group(0)
        if not re.search(r"\d", chunk):  # "[sic]", "[...]": not an attempt at coordinates
            continue
        m = _BOX_RE.fullmatch(chunk)
        if m is None:
            spans.append(BoxSpan(bracket.start(), bracket.end(), chunk, None, "not four numbers"))
            continue
        coords, why = _check([float(g) for g in m.groups()])
        spans.append(BoxSpan(bracket.start(), bracket.end(), chunk, coords, why))
    return spans


def parse_boxes(text: str | None, view: ModelView | None = None, *, label: str | None = None) -> ParsedBoxes:
    """Every box in ``text``, mapped to the original image through ``view`` (identity if None)."""
    out = ParsedBoxes()
    for span in box_spans(text):
        chunk, coords = span.chunk, span.coords
        if coords is None:
            out.rejected.append(f"{chunk} ({span.why})")
            continue
        if view is not None:
            box = view.box_to_original(coords, label=label)
            if box.x2 - box.x1 <= 0.0 or box.y2 - box.y1 <= 0.0:  # entirely inside the padding
                out.rejected.append(f"{chunk} (outside the image, in its padding)")
                continue
        else:
            box = Box(x1=coords[0], y1=coords[1], x2=coords[2], y2=coords[3], label=label)
        out.model_coords.append(coords)
        out.boxes.append(box)
    return out


def format_box(coords: Coords) -> str:
    """A box in the model's own notation (used by tests and the OpenAI test server)."""
    return "[" + ", ".join(f"{v:.2f}" for v in coords) + "]"


_YES = re.compile(r"^\W*(yes|yeah|yep|correct|affirmative|present)\b", re.I)
_NO = re.compile(r"^\W*(no|nope|negative|absent|none)\b", re.I)
_HEDGE = re.compile(
    r"\b(may|might|possibl[ey]|probabl[ey]|likely|unlikely|cannot be (?:excluded|ruled out)|"
    r"can ?not (?:be )?(?:excluded|ruled out)|uncertain|unclear|questionable|suspicious|"
    r"suggest(?:s|ive|ing)?|equivocal|indeterminate|not sure|difficult to|could|"
    r"borderline|subtle|versus)\b",
    re.I,
)
_NEG_BODY = re.compile(r"\b(no|not|without|absent|negative|free of|clear of)\b", re.I)
_POS_BODY = re.compile(r"\b(there is|there are|is present|are present|shows?|demonstrates?|seen|visible)\b", re.I)


def parse_yes_no(text: str | None) -> Status:
    """Map a yes/no answer to a Status. A leading yes/no decides unless the answer hedges
    ("Yes, possibly ..." -> uncertain); without one, hedges -> uncertain, a negation -> absent,
    an assertion -> present; anything else -> uncertain (we never invent certainty)."""
    if not text or not text.strip():
        return Status.uncertain
    t = text.strip()
    hedged = bool(_HEDGE.search(t))
    if _YES.match(t):
        return Status.uncertain if hedged else Status.present
    if _NO.match(t):
        return Status.uncertain if hedged else Status.absent
    if hedged:
        return Status.uncertain
    if _NEG_BODY.search(t):
        return Status.absent
    if _POS_BODY.search(t):
        return Status.present
    return Status.uncertain
