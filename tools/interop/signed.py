"""Outputs of a clinician-signed review: a verified DICOM SR and a final FHIR report beside the AI draft.

Why beside, not instead: the standards (IHE AI Results and its result assessment, HL7 SR-to-FHIR,
FHIR Provenance) expect the human result to stand beside the AI's and reference it, so a reader's
correction stays visible. Built from plain data (``SignedResult``), so this floor needs no review code.

- ``ai_draft_sr``: the AI's SR (tools/interop/sr.py) of the draft decisions and report, with UIDs
  derived from the review lineage (every version references the same draft instance);
- ``verified_sr``: a new Comprehensive 3D SR in a new series: CompletionFlag COMPLETE, the reader as
  person observer, one group per signed finding (the signed status, the AI's status and the reader's
  action as text), the edited report, a "Changes from the AI draft" summary; the AI's SR is listed in
  the Pertinent Other Evidence Sequence, with any AI SR pushed to the PACS earlier (``SRRef``); a
  correction lists its predecessor. VERIFIED with Verifying
  Observer (name, identifier, organisation) only when the reader logged in; otherwise UNVERIFIED and
  every text says "reviewed by (unauthenticated) NAME";
- ``verified_fhir``: the AI draft bundle's resources (preliminary DiagnosticReport, Observations,
  Device) plus the signed DiagnosticReport (``final`` only with a login) with the reader as
  ``resultsInterpreter`` (Practitioner, Organization), final Observations whose notes say what the AI
  had, and a Provenance (reader: verifier, AI Device: author of the draft, the draft as source).

A study compared with a prior carries its change decisions as signed (``SignedChange``): the AI's SR
references the prior image and holds the AI's draft changes; the verified SR references the prior too, with
one group per signed change (the reader's change value, the AI's and the reader's action as text), and the
final FHIR one Observation per signed change with its interpretation. A rejected change signs no change; it
is named in the "Changes from the AI draft" summary, as a rejected finding is.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import highdicom as hd
from fhir.resources.R4B.bundle import Bundle
from pydicom import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import ComprehensiveSRStorage

from cxr_agent import __version__
from cxr_agent.settings import DISCLAIMER
from knowledge.evidence import Decision
from knowledge.vocabulary import display_name
from tools.interop import change as X
from tools.interop import codes as C
from tools.interop.fhir import _INTERPRETATION_SYSTEM, build_fhir_bundle
from tools.interop.quiet import header_values_muted
from tools.interop.sr import MANUFACTURER, SRSourceError, _reference, _uid, build_sr

READER_ACTION = Code("READERACTION", C.LOCAL_SCHEME, "Reader action")
AI_DRAFT_STATUS = Code("AIDRAFTSTATUS", C.LOCAL_SCHEME, "AI draft status")
CHANGES = Code("AICHANGES", C.LOCAL_SCHEME, "Changes from the AI draft")
REVIEW_NOTICE = Code("REVIEWNOTICE", C.LOCAL_SCHEME, "Review notice")
AI_DRAFT_CHANGE = Code("AIDRAFTCHANGE", C.LOCAL_SCHEME, "AI draft change since the prior study")
_PROVENANCE_TYPE = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"


class NotVerifiable(ValueError):
    """A verified output was asked for a review signed without a login."""


@dataclass(frozen=True)
class Reader:
    """Who signed. ``verified``: the identity came from a login (OIDC or the graph server)."""

    name: str
    identifier: str = ""
    organisation: str = ""
    issuer: str = ""
    verified: bool = False

    @property
    def label(self) -> str:
        return self.name if self.verified else f"(unauthenticated) {self.name}"


@dataclass(frozen=True)
class SRRef:
    """Where an SR instance lies on the PACS (an AI SR pushed before the review was signed)."""

    study_uid: str
    series_uid: str
    sop_uid: str

    @classmethod
    def of(cls, pushed: Any) -> SRRef:
        """The reference to an SR just stored (``tools.interop.dicomweb.PushedReport`` or anything with its UIDs)."""
        return cls(pushed.study_uid, pushed.series_uid, pushed.sop_uid)


@dataclass(frozen=True)
class SignedFinding:
    """One finding as signed: the reader's status, the AI's (None: added by the reader), the action."""

    finding: str
    status: str
    ai_status: str | None
    action: str  # accepted | rejected | changed | added | kept (unflagged, left as drafted)
    ai_confidence: float | None = None
    note: str = ""

    @property
    def changed(self) -> bool:
        return self.status != self.ai_status


@dataclass(frozen=True)
class SignedChange:
    """One change since the prior as signed: the reader's value (None: rejected, no change signed), the AI's."""

    finding: str
    change: str | None
    ai_change: str
    action: str  # accepted | rejected | changed | kept (unflagged, left as drafted)
    before: str | None = None
    now: str | None = None
    ai_confidence: float | None = None
    agreeing: tuple[str, ...] = ()
    disagreeing: tuple[str, ...] = ()
    conflict: bool = False
    possible_change: bool = False
    flagged: bool = False
    note: str = ""

    def ai_entry(self) -> X.ChangeEntry:
        """The AI's draft change, as the AI's exports carry it."""
        return X.ChangeEntry(finding=self.finding, change=self.ai_change, before=self.before, now=self.now,
                             confidence=self.ai_confidence if self.ai_confidence is not None else 0.0,
                             agreeing=list(self.agreeing), disagreeing=list(self.disagreeing), conflict=self.conflict,
                             needs_review=self.flagged, possible_change=self.possible_change)

    def words(self) -> str:
        """The AI's draft and the reader's action, for the signed outputs' text."""
        said = "no change signed" if self.change is None else self.change.replace("_", " ")
        text = f"AI draft: {self.ai_change.replace('_', ' ')}; reader: {said} ({self.action})."
        return text + (f" {self.note.strip()[:900]}" if self.note.strip() else "")


@dataclass(frozen=True)
class SignedResult:
    """Everything the signed outputs need, as plain data."""

    document_id: str
    lineage: str
    version: int
    reader: Reader
    signed_at: datetime
    findings: Sequence[SignedFinding]
    report_text: str
    ai_report_text: str
    ai_decisions: Sequence[Decision] = field(default_factory=tuple)
    supersedes: str | None = None
    demo: bool = False
    earlier_ai_srs: Sequence[SRRef] = field(default_factory=tuple)
    prior_study_id: str | None = None
    change_rows: Sequence[SignedChange] = field(default_factory=tuple)

    @property
    def signed_changes(self) -> list[SignedChange]:
        """The changes the reader signed (a rejected one signs none)."""
        return [c for c in self.change_rows if c.change is not None]

    def changes(self) -> list[str]:
        """One sentence per difference between the AI draft and the signed result."""
        out = []
        for f in self.findings:
            name = display_name(f.finding)
            if f.ai_status is None:
                out.append(f"{name}: added by the reader as {f.status}.")
            elif f.changed:
                out.append(f"{name}: AI {f.ai_status}, reader {f.status} ({f.action}).")
        for c in self.change_rows:
            if c.change != c.ai_change:
                said = "rejected, no change signed" if c.change is None else f"reader {c.change.replace('_', ' ')}"
                out.append(f"{display_name(c.finding)} since the prior: AI {c.ai_change.replace('_', ' ')}, {said}.")
        if self.report_text.strip() != self.ai_report_text.strip():
            out.append("Report text edited by the reader.")
        return out or ["None: the reader confirmed the AI draft."]

    def notice(self) -> str:
        who = self.reader.label
        if self.reader.verified:
            return f"Reviewed and verified by {who}" + (f" ({self.reader.organisation})" if self.reader.organisation
                                                        else "") + f" on {self.signed_at:%Y-%m-%d %H:%M} UTC."
        return (f"Reviewed by {who} on {self.signed_at:%Y-%m-%d %H:%M} UTC; not verified (no login). "
                + DISCLAIMER)


def sr_uids(document_id: str) -> tuple[str, str]:
    """(series, SOP instance) UIDs of a review version's SR: stable, so a correction can reference it."""
    return _uid("review", document_id, "series"), _uid("review", document_id, "sr")


def _need_prior(result: SignedResult, prior: Dataset | None) -> None:
    if result.change_rows and prior is None:
        raise SRSourceError(f"the review carries {len(result.change_rows)} change(s) since prior study "
                            f"{(result.prior_study_id or '?')[:12]}: its header (prior=...) is needed to reference it")


def ai_draft_sr(source: Dataset, result: SignedResult, prior: Dataset | None = None) -> hd.sr.Comprehensive3DSR:
    """The AI's (unverified) SR of the draft, with UIDs fixed by the review lineage; with the draft's changes
    since ``prior`` (its header) when the study was compared with one."""
    _need_prior(result, prior)
    sr = build_sr(source, decisions=list(result.ai_decisions), report_text=result.ai_report_text, demo=result.demo,
                  prior=prior if result.change_rows else None, changes=[c.ai_entry() for c in result.change_rows])
    sr.SeriesInstanceUID = _uid("review", result.lineage, "ai-series")
    sr.SOPInstanceUID = _uid("review", result.lineage, "ai-sr")
    if getattr(sr, "file_meta", None) is not None and "MediaStorageSOPInstanceUID" in sr.file_meta:
        sr.file_meta.MediaStorageSOPInstanceUID = sr.SOPInstanceUID
    return sr


def _text(name: Any, value: str) -> hd.sr.TextContentItem:
    return hd.sr.TextContentItem(name=name, value=value, relationship_type="CONTAINS")


def _person_name(name: str) -> str:
    """A DICOM PN (Family^Given) from a display name: the last word is taken as the family name."""
    if "^" in name:
        return name
    words = name.replace("=", " ").split()
    return f"{words[-1]}^{' '.join(words[:-1])}" if len(words) > 1 else f"{words[0] if words else 'Unknown'}^"


def _finding_group(f: SignedFinding, src: hd.sr.SourceImageForMeasurementGroup) -> Any:
    concept = C.finding_code(f.finding)
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=f"finding: {display_name(f.finding)}"),
        finding_type=concept,
        qualitative_evaluations=[hd.sr.QualitativeEvaluation(name=concept, value=C.STATUS_CODES[f.status])],
        source_images=[src],
    )
    items = group[0].ContentSequence
    ai = "not reported" if f.ai_status is None else f.ai_status + (
        f" (certainty {f.ai_confidence * 100:.0f}%)" if f.ai_confidence is not None else "")
    items.append(_text(AI_DRAFT_STATUS, ai))
    items.append(_text(READER_ACTION, f.action))
    if f.note.strip():
        items.append(_text(codes.DCM.Comment, f.note.strip()[:1024]))
    return group


def _signed_change_group(c: SignedChange, sources: Sequence[hd.sr.SourceImageForMeasurementGroup]) -> Any:
    concept = C.finding_code(c.finding)
    assert c.change is not None
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=f"change: {display_name(c.finding)}"),
        finding_type=concept,
        qualitative_evaluations=[hd.sr.QualitativeEvaluation(name=X.INTERVAL_CHANGE, value=X.CHANGE_CODES[c.change])],
        source_images=list(sources),
    )
    items = group[0].ContentSequence
    for name, status in ((X.PRIOR_STATUS, c.before), (X.CURRENT_STATUS, c.now)):
        if status is not None:
            items.append(hd.sr.CodeContentItem(name=name, value=C.STATUS_CODES[status], relationship_type="CONTAINS"))
    items.append(_text(AI_DRAFT_CHANGE, c.ai_change.replace("_", " ") + (
        f" (certainty {c.ai_confidence * 100:.0f}%)" if c.ai_confidence is not None else "")))
    items.append(_text(READER_ACTION, c.action))
    if c.note.strip():
        items.append(_text(codes.DCM.Comment, c.note.strip()[:1024]))
    return group


def _evidence_refs(refs: Sequence[SRRef]) -> list[Dataset]:
    """SR instances as Hierarchical SOP Instance Reference items: one per study, one series item per series."""
    tree: dict[str, dict[str, list[str]]] = {}
    for r in refs:
        sops = tree.setdefault(r.study_uid, {}).setdefault(r.series_uid, [])
        if r.sop_uid not in sops:
            sops.append(r.sop_uid)
    out = []
    for study_uid, series_map in tree.items():
        item = Dataset()
        item.StudyInstanceUID = study_uid
        item.ReferencedSeriesSequence = []
        for series_uid, sops in series_map.items():
            series = Dataset()
            series.SeriesInstanceUID = series_uid
            series.ReferencedSOPSequence = []
            for sop_uid in sops:
                sop = Dataset()
                sop.ReferencedSOPClassUID = ComprehensiveSRStorage
                sop.ReferencedSOPInstanceUID = sop_uid
                series.ReferencedSOPSequence.append(sop)
            item.ReferencedSeriesSequence.append(series)
        out.append(item)
    return out


def verified_sr(source: Dataset, result: SignedResult, ai_sr: Dataset, *, prior: Dataset | None = None,
                series_number: int = 991) -> hd.sr.Comprehensive3DSR:
    """The signed result as a new SR referencing the AI's SR (VERIFIED only for a logged-in reader) and, for a
    study compared with one, the prior image (``prior``: its header) with the signed changes."""
    _need_prior(result, prior)
    with header_values_muted():
        return _verified(source, result, ai_sr, series_number, prior if result.change_rows else None)


def _verified(source: Dataset, result: SignedResult, ai_sr: Dataset, series_number: int,
              prior: Dataset | None = None) -> hd.sr.Comprehensive3DSR:
    ref = _reference(source)
    prior_ref = _reference(prior) if prior is not None else None
    if prior_ref is not None and prior_ref.SOPInstanceUID == ref.SOPInstanceUID:
        raise SRSourceError("the prior study is the current image itself")
    reader = result.reader
    person = hd.sr.ObserverContext(
        observer_type=codes.DCM.Person,
        observer_identifying_attributes=hd.sr.PersonObserverIdentifyingAttributes(
            name=_person_name(reader.name), login_name=reader.identifier[:64] or None,
            organization_name=reader.organisation[:64] or None))
    src = hd.sr.SourceImageForMeasurementGroup.from_source_image(ref)
    groups = [_finding_group(f, src) for f in result.findings]
    if prior_ref is not None:
        both = [src, hd.sr.SourceImageForMeasurementGroup.from_source_image(prior_ref)]
        groups += [_signed_change_group(c, both) for c in result.signed_changes]
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_person_context=person),
        procedure_reported=codes.SCT.PlainRadiography,
        imaging_measurements=groups or None,
        referenced_images=None if groups else [ref],
    )
    root = report[0].ContentSequence
    root.append(_text(REVIEW_NOTICE, result.notice()))
    root.append(_text(CHANGES, " ".join(result.changes())))
    if result.report_text.strip():
        root.append(_text(codes.DCM.Findings, result.report_text.strip()))
    series_uid, sop_uid = sr_uids(result.document_id)
    previous = []
    if result.supersedes:
        prev_series, prev_sop = sr_uids(result.supersedes)
        prev = Dataset()
        prev.StudyInstanceUID, prev.SeriesInstanceUID = ref.StudyInstanceUID, prev_series
        prev.SOPClassUID, prev.SOPInstanceUID = ComprehensiveSRStorage, prev_sop
        previous.append(prev)
    verified = reader.verified
    sr = hd.sr.Comprehensive3DSR(
        evidence=[ref] if prior_ref is None else [ref, prior_ref], content=report[0], series_instance_uid=series_uid, series_number=series_number,
        sop_instance_uid=sop_uid, instance_number=result.version, manufacturer=MANUFACTURER,
        is_complete=True, is_final=verified, is_verified=verified,
        verifying_observer_name=_person_name(reader.name) if verified else None,
        verifying_organization=(reader.organisation or "unknown")[:64] if verified else None,
        series_description=("verified reading" if verified else "reviewed, unverified")[:64],
        previous_versions=previous or None,
        content_date=result.signed_at.date(), content_time=result.signed_at.time(),
    )
    if verified and reader.identifier:
        ident = Dataset()
        ident.CodeValue = reader.identifier[:16]
        if len(reader.identifier) > 16:
            del ident.CodeValue
            ident.LongCodeValue = reader.identifier[:64]
        ident.CodingSchemeDesignator = C.LOCAL_SCHEME
        ident.CodeMeaning = _person_name(reader.name).replace("^", " ").strip()[:64]
        sr.VerifyingObserverSequence[0].VerifyingObserverIdentificationCodeSequence = [ident]
    own = SRRef(ai_sr.StudyInstanceUID, ai_sr.SeriesInstanceUID, ai_sr.SOPInstanceUID)
    earlier = [r for r in result.earlier_ai_srs if r.study_uid == own.study_uid]  # other studies: not this one's
    kept = list(sr.get("PertinentOtherEvidenceSequence") or [])  # the prior, a study of its own, is filed here
    sr.PertinentOtherEvidenceSequence = [*kept, *_evidence_refs([own, *earlier])]
    scheme = Dataset()
    scheme.CodingSchemeDesignator = C.LOCAL_SCHEME
    scheme.CodingSchemeName = C.LOCAL_SCHEME_NAME
    scheme.CodingSchemeResponsibleOrganization = "cxr-agent project"
    sr.CodingSchemeIdentificationSequence = [scheme]
    if prior_ref is not None:
        sr.SpecificCharacterSet = "ISO_IR 192"  # as the AI's SR of a comparison: its words keep their arrows
    return sr


def _urn() -> str:
    return f"urn:uuid:{uuid.uuid4()}"


def _coding(code: Any) -> dict[str, str]:
    return {"system": C.fhir_system(code.scheme_designator), "code": code.value, "display": code.meaning}


def _change_observation(c: SignedChange, status: str, reader_url: str, reader_label: str, now: str) -> dict:
    """One signed change since the prior, with its interpretation (HL7's code where it has one)."""
    assert c.change is not None
    value, hl7 = X.CHANGE_CODES[c.change], X.FHIR_INTERPRETATION[c.change]
    interp = ([{"system": _INTERPRETATION_SYSTEM, "code": hl7[0], "display": hl7[1]}] if hl7 else []) + [_coding(value)]
    components = []
    for name, st in ((X.PRIOR_STATUS, c.before), (X.CURRENT_STATUS, c.now)):
        if st is not None:
            code = C.STATUS_CODES[st]
            components.append({"code": {"coding": [_coding(name)], "text": name.meaning},
                               "valueCodeableConcept": {"coding": [_coding(code)], "text": code.meaning}})
    obs: dict[str, Any] = {
        "resourceType": "Observation", "status": status,
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                  "code": "imaging", "display": "Imaging"}]}],
        "code": {"coding": [_coding(C.finding_code(c.finding))],
                 "text": f"{display_name(c.finding)}: change since the prior study"},
        "valueCodeableConcept": {"coding": [_coding(value)], "text": value.meaning},
        "interpretation": [{"coding": interp, "text": value.meaning}],
        "performer": [{"reference": reader_url, "display": reader_label}],
        "note": [{"text": c.words()}], "issued": now}
    if components:
        obs["component"] = components
    return obs


def verified_fhir(result: SignedResult, *, study_uid: str | None = None, prior_study_uid: str | None = None
                  ) -> Bundle:
    """The AI draft's resources and the signed report with its Provenance, as one validated R4B Bundle
    (``prior_study_uid``: the prior's DICOM study, joining the reports' imaging studies)."""
    draft = build_fhir_bundle(decisions=list(result.ai_decisions), report_text=result.ai_report_text,
                              demo=result.demo, study_uid=study_uid,
                              changes=[c.ai_entry() for c in result.change_rows], prior_study_uid=prior_study_uid)
    entries = [e.model_dump(mode="json", exclude_none=True) for e in draft.entry or []]
    draft_url = next(e["fullUrl"] for e in entries if e["resource"]["resourceType"] == "DiagnosticReport")
    device_url = next(e["fullUrl"] for e in entries if e["resource"]["resourceType"] == "Device")
    reader, final = result.reader, result.reader.verified
    status = "final" if final else "preliminary"
    now = result.signed_at.isoformat(timespec="seconds")
    reader_url, org_url, report_url = _urn(), _urn(), _urn()
    practitioner: dict[str, Any] = {"resourceType": "Practitioner", "name": [{"text": reader.label}]}
    if final:
        practitioner["identifier"] = [{"system": reader.issuer or "urn:cxr-agent:login", "value": reader.identifier}]
    added = [{"fullUrl": reader_url, "resource": practitioner}]
    if final and reader.organisation:
        added.append({"fullUrl": org_url, "resource": {"resourceType": "Organization", "name": reader.organisation}})
    refs = []
    for f in result.findings:
        code, value = C.finding_code(f.finding), C.STATUS_CODES[f.status]
        ai = "not reported by the AI" if f.ai_status is None else f"AI draft: {f.ai_status}" + (
            f" (confidence {f.ai_confidence:.2f})" if f.ai_confidence is not None else "")
        obs = {"resourceType": "Observation", "status": status,
               "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                         "code": "imaging", "display": "Imaging"}]}],
               "code": {"coding": [_coding(code)], "text": display_name(f.finding)},
               "valueCodeableConcept": {"coding": [_coding(value)], "text": value.meaning},
               "performer": [{"reference": reader_url, "display": reader.label}],
               "note": [{"text": f"{ai}; reader: {f.status} ({f.action})." + (f" {f.note.strip()}" if f.note.strip()
                                                                              else "")}],
               "issued": now}
        url = _urn()
        added.append({"fullUrl": url, "resource": obs})
        refs.append({"reference": url, "display": display_name(f.finding)})
    for c in result.signed_changes:
        url = _urn()
        added.append({"fullUrl": url, "resource": _change_observation(c, status, reader_url, reader.label, now)})
        refs.append({"reference": url, "display": f"{display_name(c.finding)} (change)"})
    text = result.report_text.strip() or "(no report text)"
    text += "\n\nChanges from the AI draft: " + " ".join(result.changes()) + "\n\n" + result.notice() + "\n"
    report: dict[str, Any] = {
        "resourceType": "DiagnosticReport", "status": status,
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "RAD",
                                  "display": "Radiology"}]}],
        "code": {"coding": [_coding(codes.DCM.ImagingMeasurementReport)], "text": "Chest radiograph reading"},
        "issued": now, "result": refs,
        "resultsInterpreter": [{"reference": reader_url, "display": reader.label}],
        "conclusion": "Changes from the AI draft: " + " ".join(result.changes()) + " " + result.notice(),
        "presentedForm": [{"contentType": "text/markdown; charset=utf-8", "language": "en",
                           "data": base64.b64encode(text.encode()).decode(), "title": "signed report"}],
    }
    studies = [uid for uid in (study_uid, prior_study_uid if result.change_rows else None) if uid]
    if studies:
        report["imagingStudy"] = [{"type": "ImagingStudy", "identifier": {"system": "urn:dicom:uid",
                                                                          "value": f"urn:oid:{uid}"}} for uid in studies]
    added.insert(0, {"fullUrl": report_url, "resource": report})
    verifier = {"type": {"coding": [{"system": _PROVENANCE_TYPE, "code": "verifier" if final else "informant",
                                     "display": "Verifier" if final else "Informant"}]},
                "who": {"reference": reader_url, "display": reader.label}}
    if final and reader.organisation:
        verifier["onBehalfOf"] = {"reference": org_url, "display": reader.organisation}
    provenance = {
        "resourceType": "Provenance", "target": [{"reference": report_url}, *({"reference": r["reference"]} for r in refs)],
        "recorded": now,
        "agent": [verifier,
                  {"type": {"coding": [{"system": _PROVENANCE_TYPE, "code": "author", "display": "Author"}]},
                   "who": {"reference": device_url, "display": f"cxr-agent {__version__}"}}],
        "entity": [{"role": "source", "what": {"reference": draft_url, "display": "AI draft report"}}],
    }
    added.append({"fullUrl": _urn(), "resource": provenance})
    bundle = {"resourceType": "Bundle", "type": "collection", "timestamp": now, "entry": [*added, *entries]}
    return Bundle.model_validate(bundle)


def require_verified(result: SignedResult) -> None:
    """Refuse what only a verified reading may do (push as the system's result)."""
    if not result.reader.verified:
        raise NotVerifiable(f"this review was signed by {result.reader.label} without a login; it cannot be "
                            "sent as a verified result. Sign in and sign it again.")


def signed_now() -> datetime:
    return datetime.now(timezone.utc)
