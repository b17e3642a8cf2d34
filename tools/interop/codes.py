"""Coded concepts for the SR and FHIR exports: SNOMED CT where pydicom has the concept, else a local scheme.

The codes are columns of the one finding lexicon (knowledge/lexicon.toml): ``snomed`` holds only concepts
present in pydicom's own dictionary (``codes.SCT``), and the tests check every entry against it, so no
SNOMED CT number is trusted from memory; ``local_code`` is the code value in the local coding scheme
``99CXRAGENT`` (DICOM reserves designators starting with "99" for private schemes) used for findings
pydicom has no SCT concept for, or whose SCT neighbours mean something narrower (e.g. "Coin lesion of
lung" for a lung lesion). The SR declares the local scheme in its Coding Scheme Identification Sequence.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from knowledge.lexicon import lexicon
from knowledge.vocabulary import DISPLAY_NAMES, FINDINGS

LOCAL_SCHEME = "99CXRAGENT"
LOCAL_SCHEME_NAME = "cxr-agent local codes"
FHIR_LOCAL_SYSTEM = "urn:cxr-agent:codes"
SCHEME_SYSTEMS = {  # DICOM coding scheme designator -> FHIR system URI (HL7's published mapping)
    "SCT": "http://snomed.info/sct",
    "DCM": "http://dicom.nema.org/resources/ontology/DCM",
    "UCUM": "http://unitsofmeasure.org",
    "LN": "http://loinc.org",
    LOCAL_SCHEME: FHIR_LOCAL_SYSTEM,
}


@dataclass(frozen=True)
class FindingCodes:
    """One finding's export codes, as the lexicon holds them."""

    finding: str
    snomed: Code | None
    local_code: str


def _rows() -> dict[str, FindingCodes]:
    rows = {}
    for f in FINDINGS:
        entry = lexicon().findings[f]
        if not entry.local_code:
            raise ValueError(f"knowledge/lexicon.toml: [finding.{f}] needs local_code for the SR/FHIR exports")
        sct = Code(entry.snomed.code, "SCT", entry.snomed.meaning) if entry.snomed else None
        rows[f] = FindingCodes(f, sct, entry.local_code)
    return rows


FINDING_CODES: dict[str, FindingCodes] = _rows()

# Local concepts the SR needs and neither SCT nor DCM offers in pydicom's dictionary.
AGREEING_SOURCE = Code("AGREESOURCE", LOCAL_SCHEME, "Agreeing source")
DISAGREEING_SOURCE = Code("DISAGREESOURCE", LOCAL_SCHEME, "Disagreeing source")
NEEDS_REVIEW = Code("NEEDSREVIEW", LOCAL_SCHEME, "Needs human review")
SOURCE_CONFLICT = Code("SOURCECONFLICT", LOCAL_SCHEME, "Image sources disagree")
VERIFICATION = Code("VERIFICATION", LOCAL_SCHEME, "Targeted re-ask outcome")
REGION_SOURCE = Code("REGIONSOURCE", LOCAL_SCHEME, "Region source")
AI_NOTICE = Code("AINOTICE", LOCAL_SCHEME, "AI-generated result notice")

# Standard concepts, all looked up in pydicom's dictionary.
PRESENT, ABSENT, INDETERMINATE = codes.SCT.Present, codes.SCT.Absent, codes.SCT.Indeterminate
YES, NO = codes.SCT.Yes, codes.SCT.No
STATUS_CODES = {"present": PRESENT, "absent": ABSENT, "uncertain": INDETERMINATE}


def finding_code(finding: str) -> Code:
    """The coded concept for a finding id: its lexicon SNOMED CT concept, else its local code."""
    row = FINDING_CODES.get(finding)
    if row is None:
        raise KeyError(f"unknown finding id {finding!r}")
    return row.snomed or Code(row.local_code, LOCAL_SCHEME, DISPLAY_NAMES[finding])


def fhir_system(scheme_designator: str) -> str:
    """FHIR ``system`` URI for a DICOM coding scheme designator."""
    return SCHEME_SYSTEMS.get(scheme_designator, f"urn:dicom:scheme:{scheme_designator}")
