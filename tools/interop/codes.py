"""Coded concepts for the SR and FHIR exports: SNOMED CT where pydicom has the concept, else a local scheme.

Every SNOMED CT code is taken from pydicom's own concept dictionary (``codes.SCT.<Keyword>``), never
typed by hand: the table below names the pydicom keyword, and ``finding_code`` looks it up at run
time, so a keyword pydicom does not know fails the tests instead of exporting a wrong number.
Findings pydicom has no SCT concept for (or whose SCT neighbours mean something narrower, such as
"Coin lesion of lung" for a lung lesion) use the local coding scheme ``99CXRAGENT`` (DICOM reserves
designators starting with "99" for private schemes); its code values are fixed here and never
derived from the vocabulary's order.

Where this table belongs: issue 16 asks for these codes "as columns of the finding lexicon". The
lexicon (helper B, knowledge/) did not exist yet when this was written; when it lands, move the
two columns (``sct_keyword``, ``local_code``) there and make ``FINDING_CODES`` read them.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from knowledge.vocabulary import DISPLAY_NAMES, FINDINGS

LOCAL_SCHEME = "99CXRAGENT"
LOCAL_SCHEME_NAME = "cxr-agent local codes"
LOCAL_SCHEME_UID = None  # a private scheme without a registered OID
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
    """One row: the finding id, the pydicom SCT keyword if there is one, and the local code otherwise."""

    finding: str
    sct_keyword: str | None
    local_code: str


# finding id -> (pydicom codes.SCT keyword or None, local code value: <= 16 characters, DICOM SH)
_TABLE: dict[str, tuple[str | None, str]] = {
    "no_finding": (None, "NOFINDING"),
    "enlarged_cardiomediastinum": (None, "ENLCARDIOMED"),
    "cardiomegaly": ("Cardiomegaly", "CARDIOMEGALY"),
    "lung_opacity": (None, "LUNGOPACITY"),
    "lung_lesion": (None, "LUNGLESION"),
    "nodule": ("Nodule", "NODULE"),
    "mass": ("Mass", "MASS"),
    "edema": ("PulmonaryEdema", "EDEMA"),  # the vocabulary's "edema" is pulmonary (synonyms say so)
    "consolidation": (None, "CONSOLIDATION"),
    "pneumonia": (None, "PNEUMONIA"),
    "infiltration": (None, "INFILTRATION"),
    "atelectasis": (None, "ATELECTASIS"),
    "pneumothorax": ("Pneumothorax", "PNEUMOTHORAX"),
    "pleural_effusion": ("PleuralEffusion", "PLEURALEFFUSION"),
    "pleural_thickening": (None, "PLEURALTHICK"),
    "pleural_other": (None, "PLEURALOTHER"),
    "emphysema": (None, "EMPHYSEMA"),
    "fibrosis": ("Fibrosis", "FIBROSIS"),
    "hernia": (None, "HERNIA"),
    "fracture": (None, "FRACTURE"),
    "support_devices": (None, "SUPPORTDEVICES"),
}
FINDING_CODES: dict[str, FindingCodes] = {f: FindingCodes(f, *_TABLE[f]) for f in FINDINGS}

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
    """The coded concept for a finding id: SNOMED CT from pydicom where the table names one, else local."""
    row = FINDING_CODES.get(finding)
    if row is None:
        raise KeyError(f"unknown finding id {finding!r}")
    if row.sct_keyword:
        return getattr(codes.SCT, row.sct_keyword)
    return Code(row.local_code, LOCAL_SCHEME, DISPLAY_NAMES[finding])


def fhir_system(scheme_designator: str) -> str:
    """FHIR ``system`` URI for a DICOM coding scheme designator."""
    return SCHEME_SYSTEMS.get(scheme_designator, f"urn:dicom:scheme:{scheme_designator}")
