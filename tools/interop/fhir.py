"""The reconciled result as FHIR R4B: a DiagnosticReport with one Observation per Decision, in a Bundle.

Built with ``fhir.resources.R4B`` (the package's default models are R5; hospitals run R4/R4B), so
every resource is checked by the models' own validation when it is constructed. Contents:
- a ``Device`` for the AI (name, version; "demo" when the models are random-weight);
- one ``Observation`` per decision: ``code`` = the finding (SNOMED CT from pydicom's codes.SCT, else
  the local scheme), ``valueCodeableConcept`` = Present / Absent / Indeterminate, ``interpretation``
  POS / NEG / IND, a ``component`` with the confidence in %, a ``note`` citing the evidence
  (agreeing and disagreeing sources, re-ask, rationale, boxes), ``device`` -> the AI;
- the ``DiagnosticReport`` (status preliminary: an unverified AI result) with the report text as
  ``presentedForm`` and, when known, the imaging study by its DICOM Study Instance UID (and the prior's);
- with a prior study (a comparison turn), one ``Observation`` per change (tools/interop/change.py):
  ``code`` = the finding, ``valueCodeableConcept`` = new / worse / stable / improved / resolved / cannot
  compare, ``interpretation`` = HL7's change code where it has one plus the local code, components for
  the confidence and the two statuses, a ``note`` with the sources.
Nothing identifies the patient: there is no subject; the study is referenced by UID only.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Sequence
from datetime import datetime, timezone

from fhir.resources.R4B.bundle import Bundle
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from cxr_agent import __version__
from cxr_agent.settings import DEMO_WARNING, DISCLAIMER
from knowledge.evidence import Decision, Evidence
from knowledge.vocabulary import display_name
from tools.interop import change as X
from tools.interop import codes as C
from tools.interop.scrub import scrub, user_phrases
from tools.interop.sr import collect_regions

_INTERPRETATION_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
_INTERPRETATION = {"present": ("POS", "Positive"), "absent": ("NEG", "Negative"), "uncertain": ("IND", "Indeterminate")}
_CATEGORY_SYSTEM = "http://terminology.hl7.org/CodeSystem/observation-category"
_REPORT_CATEGORY_SYSTEM = "http://terminology.hl7.org/CodeSystem/v2-0074"
# HL7 security label "artificial intelligence asserted": the content was produced by an AI.
_AI_LABEL = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "AIAST",
             "display": "Artificial Intelligence asserted"}


def _coding(code: Code) -> dict:
    return {"system": C.fhir_system(code.scheme_designator), "code": code.value, "display": code.meaning}


def _urn() -> str:
    return f"urn:uuid:{uuid.uuid4()}"


def _note(d: Decision, regions: list[str], phrases: Sequence[str] = ()) -> str:
    parts = [f"{display_name(d.finding)}: {d.status.value}, confidence {d.confidence:.2f}."]
    if d.agreeing:
        parts.append(f"Agreeing sources: {', '.join(d.agreeing)}.")
    if d.disagreeing:
        parts.append(f"Disagreeing sources: {', '.join(d.disagreeing)}.")
    if d.conflict:
        parts.append("The image sources disagreed.")
    if d.verification:
        parts.append(f"Targeted re-ask: {d.verification}.")
    if d.needs_review:
        parts.append("Flagged for human review.")
    if d.rationale:
        parts.append(d.rationale)
    parts += regions
    return scrub(" ".join(parts), phrases)


def _change_observation(e: X.ChangeEntry, device_url: str, now: str) -> dict:
    value = X.CHANGE_CODES[e.change]
    hl7 = X.FHIR_INTERPRETATION[e.change]
    interp = ([{"system": _INTERPRETATION_SYSTEM, "code": hl7[0], "display": hl7[1]}] if hl7 else []) + [_coding(value)]
    components = [{"code": {"coding": [_coding(codes.DCM.CertaintyOfFinding)]},
                   "valueQuantity": {"value": round(e.confidence * 100.0, 1), "unit": "%",
                                     "system": "http://unitsofmeasure.org", "code": "%"}}]
    for name, status in ((X.PRIOR_STATUS, e.before), (X.CURRENT_STATUS, e.now)):
        if status is not None:
            st = C.STATUS_CODES[status.value]
            components.append({"code": {"coding": [_coding(name)], "text": name.meaning},
                               "valueCodeableConcept": {"coding": [_coding(st)], "text": st.meaning}})
    return {
        "resourceType": "Observation",
        "meta": {"security": [_AI_LABEL]},
        "status": "preliminary",
        "category": [{"coding": [{"system": _CATEGORY_SYSTEM, "code": "imaging", "display": "Imaging"}]}],
        "code": {"coding": [_coding(C.finding_code(e.finding))],
                 "text": f"{display_name(e.finding)}: change since the prior study"},
        "valueCodeableConcept": {"coding": [_coding(value)], "text": value.meaning},
        "interpretation": [{"coding": interp, "text": value.meaning}],
        "component": components,
        "note": [{"text": f"{display_name(e.finding)}. {X.change_words(e)}"}],
        "device": {"reference": device_url, "display": "cxr-agent"},
        "issued": now,
    }


def build_fhir_bundle(
    *,
    decisions: Sequence[Decision],
    evidence: Sequence[Evidence] = (),
    report_text: str = "",
    demo: bool = False,
    study_uid: str | None = None,
    asked: Sequence[str] = (),
    changes: Sequence[X.ChangeEntry] = (),
    prior_study_uid: str | None = None,
) -> Bundle:
    """A validated R4B collection Bundle: DiagnosticReport + Observations + the AI Device.

    The user's words (``asked``: e.g. a locate question's phrase; every free-text box label too) are
    replaced in its text (tools/interop/scrub.py). ``changes``: a comparison turn's change since the prior
    study (``prior_study_uid``, when known, joins the report's imaging studies)."""
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    device_url = _urn()
    device = {
        "resourceType": "Device",
        "deviceName": [{"name": "cxr-agent", "type": "manufacturer-name"}],
        "version": [{"value": __version__}],
        "manufacturer": "cxr-agent (research software)",
        "note": [{"text": (f"{DEMO_WARNING} " if demo else "") + DISCLAIMER}],
    }
    phrases = user_phrases(decisions, evidence, asked)
    regions_by_finding: dict[str, list[str]] = {}
    for finding, label, box in collect_regions(decisions, evidence):
        if finding:
            regions_by_finding.setdefault(finding, []).append(
                f"Region ({label}): x {box.x1:.3f}-{box.x2:.3f}, y {box.y1:.3f}-{box.y2:.3f} of the image.")
    entries, result_refs = [], []
    for d in decisions:
        url = _urn()
        code, value = C.finding_code(d.finding), C.STATUS_CODES[d.status.value]
        interp_code, interp_display = _INTERPRETATION[d.status.value]
        obs = {
            "resourceType": "Observation",
            "meta": {"security": [_AI_LABEL]},
            "status": "preliminary",
            "category": [{"coding": [{"system": _CATEGORY_SYSTEM, "code": "imaging", "display": "Imaging"}]}],
            "code": {"coding": [_coding(code)], "text": display_name(d.finding)},
            "valueCodeableConcept": {"coding": [_coding(value)], "text": value.meaning},
            "interpretation": [{"coding": [{"system": _INTERPRETATION_SYSTEM, "code": interp_code,
                                            "display": interp_display}]}],
            "component": [{
                "code": {"coding": [_coding(codes.DCM.CertaintyOfFinding)]},
                "valueQuantity": {"value": round(d.confidence * 100.0, 1), "unit": "%",
                                  "system": "http://unitsofmeasure.org", "code": "%"},
            }],
            "note": [{"text": _note(d, regions_by_finding.get(d.finding, []), phrases)}],
            "device": {"reference": device_url, "display": "cxr-agent"},
            "issued": now,
        }
        entries.append({"fullUrl": url, "resource": obs})
        result_refs.append({"reference": url, "display": display_name(d.finding)})
    for e in changes:
        url = _urn()
        entries.append({"fullUrl": url, "resource": _change_observation(e, device_url, now)})
        result_refs.append({"reference": url, "display": f"{display_name(e.finding)} (change)"})
    text = ((f"{DEMO_WARNING}\n\n" if demo else "") + (scrub(report_text.strip(), phrases) or "(no report text)")
            + f"\n\nAI-generated result (cxr-agent {__version__}); not verified by a clinician. {DISCLAIMER}\n")
    present = [display_name(d.finding) for d in decisions if d.status.value == "present"]
    report = {
        "resourceType": "DiagnosticReport",
        "meta": {"security": [_AI_LABEL]},
        "status": "preliminary",
        "category": [{"coding": [{"system": _REPORT_CATEGORY_SYSTEM, "code": "RAD", "display": "Radiology"}]}],
        "code": {"coding": [_coding(codes.DCM.ImagingMeasurementReport)], "text": "Chest radiograph AI result"},
        "issued": now,
        "result": result_refs,
        "conclusion": ("Present: " + ", ".join(present) + "." if present else "No finding called present.")
        + " Unverified AI result; a clinician must review it.",
        "presentedForm": [{"contentType": "text/markdown; charset=utf-8", "language": "en",
                           "data": base64.b64encode(text.encode()).decode(), "title": "cxr-agent report"}],
    }
    studies = [uid for uid in (study_uid, prior_study_uid) if uid]
    if studies:
        report["imagingStudy"] = [{"type": "ImagingStudy", "identifier": {"system": "urn:dicom:uid", "value": f"urn:oid:{uid}"}}
                                  for uid in studies]
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "timestamp": now,
        "entry": [{"fullUrl": _urn(), "resource": report}, {"fullUrl": device_url, "resource": device}, *entries],
    }
    return Bundle.model_validate(bundle)


def fhir_json(bundle: Bundle) -> str:
    """The Bundle as FHIR JSON text (the models' own serialiser)."""
    return bundle.model_dump_json(indent=2, exclude_none=True)
