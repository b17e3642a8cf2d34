"""The reconciled result as a DICOM Comprehensive 3D SR (TID 1500 measurement report), with highdicom.

Layout (IHE AI Results style):
- the document: Comprehensive 3D SR, VerificationFlag UNVERIFIED (an AI result a clinician must
  review), observer = the cxr-agent device, procedure = plain radiography of the chest;
- one TID 1501 group per reconciled Decision: finding type and a qualitative evaluation
  (finding -> Present / Absent / Indeterminate, SNOMED CT via tools.interop.codes), confidence as
  DCM "Certainty of Finding" in %, the sources that agreed and disagreed, conflict and
  needs-review flags, the re-ask outcome and the one-sentence rationale;
- one TID 1410 group per box (the VLM's boxes, the classifier's heatmap peak boxes): a SCOORD
  POLYLINE on the source image in pixel coordinates. The sample CR/DX files have no frame of
  reference, so 2D image regions are the only honest choice;
- the report text and an AI-generated notice as TEXT items of the report;
- with a prior study (a comparison turn): the prior image is evidence of the SR (highdicom files an
  instance of another study under Pertinent Other Evidence), and one TID 1501 group per change
  (tools/interop/change.py): finding type, "Change since the prior study" -> new / worse / stable /
  improved / resolved / cannot compare, the two statuses, confidence, sources, flags; its source images
  are the current and the prior image.

What the SR references: for a PACS study, the source instance's header fetched again at push time
(``PacsClient.source_metadata``); for an upload, ``deidentified_source(study)``: a Secondary Capture
identity minted from the de-identified study's pixel hash (no patient, no dates), because
de-identification dropped every UID and the patient module of the original.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

import highdicom as hd
import numpy as np
from pydicom import Dataset, config
from pydicom.sr.codedict import codes
from pydicom.uid import SecondaryCaptureImageStorage
from pydicom.valuerep import validate_value

from cxr_agent import __version__
from cxr_agent.settings import DEMO_WARNING, DISCLAIMER
from knowledge.evidence import Box, Decision, Evidence
from knowledge.vocabulary import display_name
from tools.ingestion.study import Study
from tools.interop import change as X
from tools.interop import codes as C
from tools.interop.quiet import header_values_muted
from tools.interop.scrub import region_name, scrub, user_phrases

MANUFACTURER = "cxr-agent (research software)"
_UID_ROOT = "2.25."  # UUID-derived UIDs (PS3.5 B.2): no registered root needed
_TYPE2_PATIENT_STUDY = ("PatientID", "PatientName", "PatientBirthDate", "PatientSex", "AccessionNumber",
                        "StudyID", "StudyDate", "StudyTime", "ReferringPhysicianName")


class SRSourceError(ValueError):
    """The source image header lacks what an SR must reference (SOP class/instance, study UID, size)."""


def _uid(*parts: str) -> str:
    """A stable UUID-derived UID (PS3.5 B.2) for these parts: the same study always gets the same UIDs."""
    return _UID_ROOT + str(uuid.uuid5(uuid.NAMESPACE_URL, "cxr-agent:" + ":".join(parts)).int)


def deidentified_source(study: Study) -> Dataset:
    """A reference header for an uploaded (de-identified) study: UIDs derived from its pixel hash.

    The same study always gets the same UIDs, so SRs written in two sessions reference one image.
    Patient and study identity are empty (type 2): de-identification removed them on purpose."""
    ds = Dataset()
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = _uid(study.id, "instance")
    ds.StudyInstanceUID = _uid(study.id, "study")
    ds.SeriesInstanceUID = _uid(study.id, "series")
    ds.Modality = str(study.metadata.get("modality") or "OT")
    ds.Rows, ds.Columns = study.height, study.width
    for kw in _TYPE2_PATIENT_STUDY:
        setattr(ds, kw, "")
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = "cxr-agent allow-list (tools/ingestion/deid.py)"  # LO: at most 64 characters
    return ds


def _reference(source: Dataset) -> Dataset:
    """A copy of the source header with the type-2 patient/study attributes highdicom copies made present."""
    for kw in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "Rows", "Columns"):
        if not source.get(kw):
            raise SRSourceError(f"the source image header has no {kw}; an SR cannot reference it")
    ref = Dataset()
    for elem in source:  # copies: the caller's dataset is never changed
        if elem.keyword != "PixelData":
            ref.add(copy.deepcopy(elem))
    _repair_values(ref)
    for kw in _TYPE2_PATIENT_STUDY:
        if kw not in ref:
            setattr(ref, kw, "")
    return ref


def _repair_values(ref: Dataset) -> None:
    """Values the source header holds in the wrong form (real PACS headers do: PatientAge "62", dates
    "1995.07.20") would be copied into the SR and make it invalid. A bare age becomes "062Y"; any other
    top-level value its VR rejects is emptied (UIDs excepted: the SR must reference them as they are)."""
    for elem in list(ref):
        if elem.VR in ("SQ", "UI", "OB", "OW", "UN") or elem.value in (None, ""):
            continue
        try:
            validate_value(elem.VR, elem.value, config.RAISE)
        except ValueError:
            if elem.keyword == "PatientAge" and str(elem.value).strip().isdigit() and int(elem.value) < 1000:
                elem.value = f"{int(elem.value):03d}Y"
            else:
                elem.value = ""


def _text(name: Any, value: str) -> hd.sr.TextContentItem:
    return hd.sr.TextContentItem(name=name, value=value, relationship_type="CONTAINS")


def _flag(name: Any, on: bool) -> hd.sr.CodeContentItem:
    return hd.sr.CodeContentItem(name=name, value=C.YES if on else C.NO, relationship_type="CONTAINS")


def _algorithm() -> hd.sr.AlgorithmIdentification:
    return hd.sr.AlgorithmIdentification(name="cxr-agent", version=__version__)


def _decision_group(d: Decision, source: hd.sr.SourceImageForMeasurementGroup,
                    phrases: Sequence[str] = ()) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    concept = C.finding_code(d.finding)
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=f"finding: {display_name(d.finding)}"),
        finding_type=concept,
        algorithm_id=_algorithm(),
        qualitative_evaluations=[hd.sr.QualitativeEvaluation(name=concept, value=C.STATUS_CODES[d.status.value])],
        measurements=[hd.sr.Measurement(name=codes.DCM.CertaintyOfFinding, value=round(d.confidence * 100.0, 1),
                                        unit=codes.UCUM.Percent)],
        source_images=[source],
    )
    items = group[0].ContentSequence
    items.extend(_text(C.AGREEING_SOURCE, s) for s in d.agreeing)
    items.extend(_text(C.DISAGREEING_SOURCE, s) for s in d.disagreeing)
    items.append(_flag(C.SOURCE_CONFLICT, d.conflict))
    items.append(_flag(C.NEEDS_REVIEW, d.needs_review))
    if d.verification:
        items.append(_text(C.VERIFICATION, scrub(d.verification, phrases)))
    if d.rationale:
        items.append(_text(codes.DCM.Comment, scrub(d.rationale, phrases)))
    return group


def _change_group(e: X.ChangeEntry, sources: Sequence[hd.sr.SourceImageForMeasurementGroup]
                  ) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    concept = C.finding_code(e.finding)
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=f"change: {display_name(e.finding)}"),
        finding_type=concept,
        algorithm_id=_algorithm(),
        qualitative_evaluations=[hd.sr.QualitativeEvaluation(name=X.INTERVAL_CHANGE, value=X.CHANGE_CODES[e.change])],
        measurements=[hd.sr.Measurement(name=codes.DCM.CertaintyOfFinding, value=round(e.confidence * 100.0, 1),
                                        unit=codes.UCUM.Percent)],
        source_images=list(sources),
    )
    items = group[0].ContentSequence
    for name, status in ((X.PRIOR_STATUS, e.before), (X.CURRENT_STATUS, e.now)):
        if status is not None:
            items.append(hd.sr.CodeContentItem(name=name, value=C.STATUS_CODES[status.value], relationship_type="CONTAINS"))
    items.extend(_text(C.AGREEING_SOURCE, s) for s in e.agreeing)
    items.extend(_text(C.DISAGREEING_SOURCE, s) for s in e.disagreeing)
    items.append(_flag(C.SOURCE_CONFLICT, e.conflict))
    items.append(_flag(C.NEEDS_REVIEW, e.needs_review))
    items.append(_flag(X.POSSIBLE_CHANGE, e.possible_change))
    items.append(_text(codes.DCM.Comment, X.change_words(e)))
    return group


def collect_regions(decisions: Sequence[Decision], evidence: Sequence[Evidence]) -> list[tuple[str | None, str, Box]]:
    """(finding, source label, box) for every VLM box and classifier heatmap box, without duplicates."""
    seen: set[tuple[Any, ...]] = set()
    out: list[tuple[str | None, str, Box]] = []

    def add(finding: str | None, label: str, box: Box | None) -> None:
        if box is None:
            return
        key = (finding, label, round(box.x1, 4), round(box.y1, 4), round(box.x2, 4), round(box.y2, 4))
        if key not in seen:
            seen.add(key)
            out.append((finding, label, box))

    for ev in evidence:
        for a in ev.artifacts:
            if a.kind == "heatmap":
                add(a.finding, f"{ev.tool} heatmap", a.box)
            elif a.kind == "boxes":
                add(a.finding, f"{ev.tool} box", a.box)
        for c in ev.calls:
            add(c.finding, f"{c.source} heatmap" if c.score_kind == "op_norm" else f"{c.source} box", c.box)
    for d in decisions:
        for c in d.calls:
            add(c.finding, f"{c.source} heatmap" if c.score_kind == "op_norm" else f"{c.source} box", c.box)
    return out


def _region_group(finding: str | None, label: str, box: Box, ref: Dataset) -> hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations:
    w, h = int(ref.Columns), int(ref.Rows)
    x1, y1, x2, y2 = box.x1 * w, box.y1 * h, box.x2 * w, box.y2 * h
    polyline = np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2], [x1, y1]], dtype=np.float32)
    region = hd.sr.ImageRegion(graphic_type=hd.sr.GraphicTypeValues.POLYLINE, graphic_data=polyline,
                               source_image=hd.sr.SourceImageForRegion.from_source_image(ref))
    name = region_name(finding)  # never box.label: a phrase-grounding box is labelled with the user's words
    group = hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=f"region: {name} ({label})"),
        referenced_region=region,
        finding_type=C.finding_code(finding) if finding else None,
        algorithm_id=_algorithm(),
    )
    group[0].ContentSequence.append(_text(C.REGION_SOURCE, label))
    return group


def build_sr(
    source: Dataset,
    *,
    decisions: Sequence[Decision],
    evidence: Sequence[Evidence] = (),
    report_text: str = "",
    demo: bool = False,
    series_number: int = 990,
    asked: Sequence[str] = (),
    prior: Dataset | None = None,
    changes: Sequence[X.ChangeEntry] = (),
) -> hd.sr.Comprehensive3DSR:
    """A TID 1500 Comprehensive 3D SR of one turn's decisions, boxes and report, referencing ``source``.

    The user's words (``asked``: e.g. a locate question's phrase; every free-text box label too) are
    replaced in the SR's text (tools/interop/scrub.py). ``prior`` (its header, or ``deidentified_source``
    of an uploaded prior) and ``changes``: a comparison turn's change since that study."""
    if changes and prior is None:
        raise SRSourceError("changes since a prior study need that study's header (prior=...) to reference")
    with header_values_muted():  # odd header values (PHI) are reported verbatim by pydicom/highdicom
        return _build(source, decisions, evidence, report_text, demo, series_number, asked, prior, changes)


def _build(source: Dataset, decisions: Sequence[Decision], evidence: Sequence[Evidence], report_text: str,
           demo: bool, series_number: int, asked: Sequence[str] = (), prior: Dataset | None = None,
           changes: Sequence[X.ChangeEntry] = ()) -> hd.sr.Comprehensive3DSR:
    ref = _reference(source)
    prior_ref = _reference(prior) if prior is not None else None
    if prior_ref is not None and prior_ref.SOPInstanceUID == ref.SOPInstanceUID:
        raise SRSourceError("the prior study is the current image itself")
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=_uid("device", __version__), name="cxr-agent", manufacturer_name=MANUFACTURER,
            model_name="demo (random weights)" if demo else "cxr-agent", role_in_procedure=None),
    )
    src = hd.sr.SourceImageForMeasurementGroup.from_source_image(ref)
    phrases = user_phrases(decisions, evidence, asked)
    groups: list[Any] = [_decision_group(d, src, phrases) for d in decisions]
    groups += [_region_group(f, label, box, ref) for f, label, box in collect_regions(decisions, evidence)]
    if prior_ref is not None:
        both = [src, hd.sr.SourceImageForMeasurementGroup.from_source_image(prior_ref)]
        groups += [_change_group(e, both) for e in changes]
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=codes.SCT.PlainRadiography,
        imaging_measurements=groups or None,
        referenced_images=None if groups else [ref],
    )
    root = report[0].ContentSequence
    notice = (f"{DEMO_WARNING} " if demo else "") + (
        "AI-generated result (cxr-agent); not verified by a clinician. " + DISCLAIMER)
    root.append(_text(C.AI_NOTICE, notice))
    if report_text.strip():
        root.append(_text(codes.DCM.Findings, scrub(report_text.strip(), phrases)))
    now = datetime.now(timezone.utc)
    sr = hd.sr.Comprehensive3DSR(
        evidence=[ref] if prior_ref is None else [ref, prior_ref],
        content=report[0],
        series_instance_uid=hd.UID(),
        series_number=series_number,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer=MANUFACTURER,
        is_complete=True,
        is_final=False,
        is_verified=False,
        series_description="cxr-agent AI result (unverified)",
        content_date=now.date(),
        content_time=now.time(),
    )
    scheme = Dataset()
    scheme.CodingSchemeDesignator = C.LOCAL_SCHEME
    scheme.CodingSchemeName = C.LOCAL_SCHEME_NAME
    scheme.CodingSchemeResponsibleOrganization = "cxr-agent project"
    sr.CodingSchemeIdentificationSequence = [scheme]  # declares the private scheme (PS3.3 C.12.1.1.4)
    sr.SpecificCharacterSet = "ISO_IR 192"  # UTF-8: a reply's arrows and dashes are kept, not replaced by "?"
    return sr
