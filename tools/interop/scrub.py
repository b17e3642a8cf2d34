"""The user's own words stay out of the de-identified SR and FHIR exports.

A locate question's phrase ("where is the line Dr Quillon placed?") reaches a turn's results as the
label of the boxes a phrase-grounding model returns, and the reply quotes it. The exports are
de-identified documents that leave the product, so they name regions only by the fixed vocabulary
and replace every occurrence of such a phrase in their free text (report, rationale, re-ask note).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from knowledge.evidence import Box, Decision, Evidence
from knowledge.vocabulary import display_name, normalize, normalize_region

REPLACEMENT = "[the region asked about]"


def _vocabulary_term(label: str) -> bool:
    finding = normalize(label)
    return (finding is not None and display_name(finding).lower() == label.strip().lower()) or (
        normalize_region(label) is not None and len(label.split()) <= 4
    )


def _labels(decisions: Sequence[Decision], evidence: Sequence[Evidence]) -> Iterable[str]:
    boxes: list[Box | None] = []
    for ev in evidence:
        boxes += [a.box for a in ev.artifacts] + [c.box for c in ev.calls]
    for d in decisions:
        boxes += [c.box for c in d.calls]
    return (b.label for b in boxes if b is not None and isinstance(b.label, str) and b.label.strip())


def user_phrases(decisions: Sequence[Decision], evidence: Sequence[Evidence], extra: Iterable[str] = ()) -> list[str]:
    """The free-text phrases this turn carries (box labels that are not vocabulary terms, plus ``extra``),
    longest first so a phrase inside another is replaced after it."""
    found = {p.strip() for p in _labels(decisions, evidence) if not _vocabulary_term(p)}
    found |= {p.strip() for p in extra if isinstance(p, str) and p.strip()}
    return sorted(found, key=len, reverse=True)


def scrub(text: str, phrases: Sequence[str]) -> str:
    """``text`` with every occurrence of each phrase (any case, any spacing) replaced."""
    for phrase in phrases:
        pattern = r"\s+".join(re.escape(word) for word in phrase.split())
        text = re.sub(pattern, REPLACEMENT, text, flags=re.IGNORECASE)
    return text


def region_name(finding: str | None) -> str:
    """How an export names a region: the finding's vocabulary name, never a box's free-text label."""
    return display_name(finding) if finding else "region"
