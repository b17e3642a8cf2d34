"""Change since a prior study, as the SR and FHIR exports carry it: one entry per finding, and its codes.

The exports sit below the comparing room (agents/comparing), so they take this plain record rather than its
``ChangeDecision``; ``ChangeEntry.model_validate(decision.model_dump())`` converts one (extra fields are
ignored). Codes: SNOMED CT where pydicom's dictionary has the concept in the sense meant ("New finding",
"No change"); the local scheme for the rest (worse and improved are not sizes, and "Problem resolved" is a
situation, not an image finding). FHIR interpretation uses HL7's ObservationInterpretation where it has a
code for the change (W worse, B better, U / D significant change up / down, IND indeterminate); "stable"
has none there, so it carries the local code alone.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from knowledge.evidence import Status
from knowledge.vocabulary import known_finding
from tools.interop.codes import LOCAL_SCHEME

ChangeKind = Literal["new", "worse", "stable", "improved", "resolved", "cannot_compare"]

# The concept a change group's qualitative evaluation is named by.
INTERVAL_CHANGE = Code("INTERVALCHANGE", LOCAL_SCHEME, "Change since the prior study")
PRIOR_STATUS = Code("PRIORSTATUS", LOCAL_SCHEME, "Status on the prior study")
CURRENT_STATUS = Code("CURRENTSTATUS", LOCAL_SCHEME, "Status on the current study")
POSSIBLE_CHANGE = Code("POSSIBLECHANGE", LOCAL_SCHEME, "Possible change, not confirmed by a comparing source")
CHANGE_CODES: dict[str, Code] = {
    "new": codes.SCT.NewFinding,
    "worse": Code("WORSE", LOCAL_SCHEME, "Worse than on the prior study"),
    "stable": codes.SCT.NoChange,
    "improved": Code("IMPROVED", LOCAL_SCHEME, "Improved since the prior study"),
    "resolved": Code("RESOLVED", LOCAL_SCHEME, "Resolved since the prior study"),
    "cannot_compare": Code("CANNOTCOMPARE", LOCAL_SCHEME, "Cannot be compared with the prior study"),
}
FHIR_INTERPRETATION: dict[str, tuple[str, str] | None] = {
    "new": ("U", "Significant change up"),
    "worse": ("W", "Worse"),
    "stable": None,
    "improved": ("B", "Better"),
    "resolved": ("D", "Significant change down"),
    "cannot_compare": ("IND", "Indeterminate"),
}


class ChangeEntry(BaseModel):
    """One finding's change between the prior and the current study, with the sources behind it."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    finding: str
    change: ChangeKind
    before: Status | None = None
    now: Status | None = None
    confidence: float = Field(ge=0.0, le=1.0)
    agreeing: list[str] = Field(default_factory=list)
    disagreeing: list[str] = Field(default_factory=list)
    conflict: bool = False
    needs_review: bool = False
    possible_change: bool = False

    @field_validator("finding")
    @classmethod
    def _known(cls, v: str) -> str:
        return known_finding(v)  # an unknown id is refused by name


def change_words(e: ChangeEntry) -> str:
    """One plain sentence for the export's text: the change, the two statuses, the sources."""
    said = {"cannot_compare": "cannot be compared"}.get(e.change, e.change)
    parts = [f"Change since the prior study: {said}"]
    if e.before is not None or e.now is not None:
        parts.append(f"(prior: {e.before.value if e.before else 'not decided'}, "
                     f"now: {e.now.value if e.now else 'not decided'})")
    text = " ".join(parts) + f", confidence {e.confidence:.2f}."
    if e.agreeing:
        text += f" Supported by: {', '.join(e.agreeing)}."
    if e.disagreeing:
        text += f" Against: {', '.join(e.disagreeing)}."
    if e.possible_change:
        text += " A possible change only: no source that reads both films stated it."
    if e.needs_review:
        text += " Flagged for human review."
    return text
