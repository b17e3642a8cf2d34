"""Change since a prior study in the exports: the SR references the prior image and carries one group per
change (dciodvfy-clean), the FHIR bundle one validated Observation per change with an interpretation."""

from __future__ import annotations

import io
import json

import highdicom as hd
import pydicom
import pytest
from fhir.resources.R4B.bundle import Bundle
from pydantic import ValidationError
from pydicom.sr.codedict import codes
from test_interop_exports import dciodvfy_errors  # tests/tools/interop/test_interop_exports.py

from agents.comparing.decide import ChangeDecision
from knowledge.evidence import Decision, Status
from tools.ingestion.loader import load_study
from tools.interop import change as X
from tools.interop.fhir import build_fhir_bundle, fhir_json
from tools.interop.sr import SRSourceError, build_sr, deidentified_source


@pytest.fixture
def changes() -> list[X.ChangeEntry]:
    decided = [
        ChangeDecision(finding="pleural_effusion", before=Status.absent, now=Status.present, change="new",
                       confidence=0.72, agreeing=["classifier", "vlm-medgemma15"]),
        ChangeDecision(finding="cardiomegaly", before=Status.present, now=Status.present, change="stable",
                       confidence=0.64, agreeing=["classifier"]),
        ChangeDecision(finding="edema", before=Status.present, now=Status.present, change="worse", confidence=0.55,
                       agreeing=["vlm-medgemma15"], disagreeing=["vlm"], conflict=True, needs_review=True),
        ChangeDecision(finding="pneumothorax", before=None, now=Status.absent, change="cannot_compare",
                       confidence=0.3, possible_change=True),
    ]
    return [X.ChangeEntry.model_validate(d.model_dump()) for d in decided]


@pytest.fixture
def decisions() -> list[Decision]:
    return [Decision(finding="pleural_effusion", status=Status.present, confidence=0.8, agreeing=["classifier"])]


@pytest.fixture(scope="module")
def pacs_pair(shared_data):
    read = lambda name: pydicom.dcmread(shared_data / "dicom" / name, stop_before_pixels=True, force=True)  # noqa: E731
    return read("RG1_J2KI.dcm"), read("CR-MONO1-10-chest.dcm")


def _reopen(sr) -> hd.sr.Comprehensive3DSR:
    buf = io.BytesIO()
    sr.save_as(buf, enforce_file_format=True)
    return hd.sr.Comprehensive3DSR.from_dataset(pydicom.dcmread(io.BytesIO(buf.getvalue())))


def _change_groups(sr):
    return [g for g in sr.content.get_image_measurement_groups()
            if str(g.tracking_identifier).startswith("change:")]


def test_sr_references_the_prior_and_carries_each_change(pacs_pair, decisions, changes, tmp_path):
    current, prior = pacs_pair
    sr = _reopen(build_sr(current, decisions=decisions, report_text="Small left effusion.", prior=prior,
                          changes=changes))
    other = sr.PertinentOtherEvidenceSequence[0]
    assert other.StudyInstanceUID == prior.StudyInstanceUID != current.StudyInstanceUID
    assert other.ReferencedSeriesSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == prior.SOPInstanceUID
    groups = _change_groups(sr)
    assert [g.finding_type for g in groups] == [codes.SCT.PleuralEffusion, codes.SCT.Cardiomegaly,
                                                 *(g.finding_type for g in groups[2:])] and len(groups) == 4
    evaluated = [next(i for i in g[0].ContentSequence if i.ValueType == "CODE"
                      and i.ConceptNameCodeSequence[0].CodeValue == "INTERVALCHANGE").ConceptCodeSequence[0].CodeValue
                 for g in groups]
    assert evaluated == ["129721008", "260388006", "WORSE", "CANNOTCOMPARE"]  # SCT new finding, SCT no change
    refs = {s.ReferencedSOPSequence[0].ReferencedSOPInstanceUID for s in groups[0].source_images}
    assert refs == {current.SOPInstanceUID, prior.SOPInstanceUID}
    first = {i.ConceptNameCodeSequence[0].CodeValue: i.ConceptCodeSequence[0].CodeMeaning
             for i in groups[0][0].ContentSequence if i.ValueType == "CODE"}
    assert first["PRIORSTATUS"] == "Absent" and first["CURRENTSTATUS"] == "Present"
    worse = {i.ConceptNameCodeSequence[0].CodeValue: i.ConceptCodeSequence[0].CodeMeaning
             for i in groups[2][0].ContentSequence if i.ValueType == "CODE"}
    assert worse["NEEDSREVIEW"] == "Yes" and worse["SOURCECONFLICT"] == "Yes"
    assert groups[2].get_measurements()[0].value == pytest.approx(55.0)
    assert dciodvfy_errors(sr, tmp_path) == []


def test_sr_for_two_uploads_references_both_deidentified_studies(shared_data, decisions, changes, tmp_path):
    images = sorted((shared_data / "nih_cxr14" / "images").iterdir())[:2]
    current, prior = (deidentified_source(load_study(p)) for p in images)
    sr = _reopen(build_sr(current, decisions=decisions, prior=prior, changes=changes[:2], demo=True))
    assert sr.PertinentOtherEvidenceSequence[0].StudyInstanceUID == prior.StudyInstanceUID
    assert len(_change_groups(sr)) == 2 and sr.PatientID == ""
    assert dciodvfy_errors(sr, tmp_path) == []
    plain = _reopen(build_sr(current, decisions=decisions))
    assert "PertinentOtherEvidenceSequence" not in plain and _change_groups(plain) == []


def test_sr_refuses_changes_without_a_prior_to_reference(pacs_pair, decisions, changes):
    current, _ = pacs_pair
    with pytest.raises(SRSourceError, match="need that study's header"):
        build_sr(current, decisions=decisions, changes=changes)
    with pytest.raises(SRSourceError, match="the current image itself"):
        build_sr(current, decisions=decisions, prior=current, changes=changes)


def test_fhir_has_one_validated_observation_per_change(decisions, changes):
    bundle = build_fhir_bundle(decisions=decisions, changes=changes, study_uid="1.2.3", prior_study_uid="1.2.4")
    doc = json.loads(fhir_json(Bundle.model_validate_json(fhir_json(bundle))))  # the models' validation, both ways
    obs = [e["resource"] for e in doc["entry"] if e["resource"]["resourceType"] == "Observation"]
    changed = [o for o in obs if o["code"]["text"].endswith("change since the prior study")]
    assert len(obs) == len(decisions) + len(changes) and len(changed) == len(changes)
    interp = [[c["code"] for c in o["interpretation"][0]["coding"]] for o in changed]
    assert interp == [["U", "129721008"], ["260388006"], ["W", "WORSE"], ["IND", "CANNOTCOMPARE"]]
    assert [o["valueCodeableConcept"]["text"] for o in changed][:2] == ["New finding", "No change"]
    comps = {c["code"]["coding"][0]["code"]: c for c in changed[0]["component"]}
    assert comps["PRIORSTATUS"]["valueCodeableConcept"]["text"] == "Absent"
    assert comps["CURRENTSTATUS"]["valueCodeableConcept"]["text"] == "Present"
    assert "PRIORSTATUS" not in {c["code"]["coding"][0]["code"] for c in changed[3]["component"]}
    assert "Flagged for human review" in changed[2]["note"][0]["text"] and "possible change" in changed[3]["note"][0]["text"]
    report = doc["entry"][0]["resource"]
    assert [s["identifier"]["value"] for s in report["imagingStudy"]] == ["urn:oid:1.2.3", "urn:oid:1.2.4"]
    assert len(report["result"]) == len(obs)


def test_a_change_entry_refuses_what_it_cannot_export():
    with pytest.raises(ValidationError, match="unknown finding id 'efusion'"):
        X.ChangeEntry(finding="efusion", change="new", confidence=0.5)
    with pytest.raises(ValidationError, match="change"):
        X.ChangeEntry(finding="edema", change="bigger", confidence=0.5)  # type: ignore[arg-type]
