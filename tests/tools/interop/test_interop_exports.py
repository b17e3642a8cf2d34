"""SR and FHIR writers on real headers, without a PACS: codes, structure, validation, de-identified uploads."""

from __future__ import annotations

import base64
import io
import json
import shutil
import subprocess

import highdicom as hd
import pydicom
import pytest
from fhir.resources.R4B.bundle import Bundle
from pydantic import ValidationError
from pydicom.sr.codedict import codes

from knowledge.evidence import Artifact, Box, Decision, Evidence, FindingCall, Status
from knowledge.vocabulary import FINDINGS
from tools.ingestion.loader import load_study
from tools.interop import codes as C
from tools.interop.fhir import build_fhir_bundle, fhir_json
from tools.interop.sr import SRSourceError, build_sr, deidentified_source


@pytest.fixture
def turn():
    decisions = [
        Decision(finding="pneumothorax", status=Status.present, confidence=0.81, agreeing=["vlm", "classifier"],
                 rationale="VLM says 'right pneumothorax'; classifier 0.82 at its operating point.",
                 calls=[FindingCall(finding="pneumothorax", status=Status.present, source="vlm",
                                    box=Box(x1=0.6, y1=0.1, x2=0.9, y2=0.4))]),
        Decision(finding="lung_opacity", status=Status.uncertain, confidence=0.35, agreeing=["vlm"],
                 disagreeing=["classifier"], conflict=True, needs_review=True, verification="re-ask: unsure"),
        Decision(finding="pleural_effusion", status=Status.absent, confidence=0.7, agreeing=["vlm", "classifier"]),
    ]
    evidence = [Evidence(tool="classifier", artifacts=[
        Artifact(kind="heatmap", finding="lung_opacity", box=Box(x1=0.2, y1=0.5, x2=0.4, y2=0.8))])]
    return decisions, evidence, "Right pneumothorax. No pleural effusion."


@pytest.fixture(scope="module")
def rg1(shared_data):
    return pydicom.dcmread(shared_data / "dicom" / "RG1_J2KI.dcm", stop_before_pixels=True)


def _reopen(sr) -> hd.sr.Comprehensive3DSR:
    buf = io.BytesIO()
    sr.save_as(buf, enforce_file_format=True)
    return hd.sr.Comprehensive3DSR.from_dataset(pydicom.dcmread(io.BytesIO(buf.getvalue())))


def test_codes_come_from_pydicom_or_the_local_scheme():
    """Every lexicon SNOMED CT concept is in pydicom's dictionary with that meaning; the rest are local."""
    from pydicom.sr._concepts_dict import concepts

    pydicom_sct: dict[str, set[str]] = {}
    for by_code in concepts["SCT"].values():
        for code, (meaning, _) in by_code.items():
            pydicom_sct.setdefault(code, set()).add(meaning)
    assert set(C.FINDING_CODES) == set(FINDINGS)
    locals_ = [row.local_code for row in C.FINDING_CODES.values()]
    assert len(set(locals_)) == len(locals_) and all(len(v) <= 16 for v in locals_)  # DICOM SH
    with_sct = 0
    for f, row in C.FINDING_CODES.items():
        code = C.finding_code(f)
        if row.snomed:
            with_sct += 1
            assert code.scheme_designator == "SCT" and code.meaning in pydicom_sct.get(code.value, ()), f
        else:
            assert (code.scheme_designator, code.value) == (C.LOCAL_SCHEME, row.local_code)
    assert with_sct >= 7
    assert C.finding_code("pneumothorax") == codes.SCT.Pneumothorax
    assert C.finding_code("pleural_effusion") == codes.SCT.PleuralEffusion
    with pytest.raises(KeyError):
        C.finding_code("not_a_finding")


def test_the_lexicon_refuses_a_malformed_or_duplicate_local_code(tmp_path):
    from knowledge.lexicon import DEFAULT_PATH, LexiconError, load_lexicon

    text = DEFAULT_PATH.read_text()
    bad = tmp_path / "bad.toml"
    bad.write_text(text.replace('local_code = "HERNIA"', 'local_code = "hernia!"'))
    with pytest.raises(LexiconError, match="local_code must be"):
        load_lexicon(bad)
    bad.write_text(text.replace('local_code = "HERNIA"', 'local_code = "FRACTURE"'))
    with pytest.raises(LexiconError, match="is used by"):
        load_lexicon(bad)


def test_sr_against_a_pacs_header_reopens_with_every_decision_and_box(rg1, turn, tmp_path):
    decisions, evidence, report = turn
    sr = _reopen(build_sr(rg1, decisions=decisions, evidence=evidence, report_text=report))
    assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34" and sr.VerificationFlag == "UNVERIFIED"
    assert sr.StudyInstanceUID == rg1.StudyInstanceUID and str(sr.PatientName) == str(rg1.PatientName)
    assert sr.CodingSchemeIdentificationSequence[0].CodingSchemeDesignator == C.LOCAL_SCHEME
    groups = sr.content.get_image_measurement_groups()
    assert [g.finding_type for g in groups] == [C.finding_code(d.finding) for d in decisions]
    values = [g.get_qualitative_evaluations()[0].value for g in groups]
    assert values == [codes.SCT.Present, codes.SCT.Indeterminate, codes.SCT.Absent]
    assert groups[0].get_measurements()[0].value == pytest.approx(81.0)
    texts = {(i.ConceptNameCodeSequence[0].CodeValue, i.TextValue) for i in groups[1][0].ContentSequence
             if i.ValueType == "TEXT"}
    assert ("AGREESOURCE", "vlm") in texts and ("DISAGREESOURCE", "classifier") in texts
    flags = {i.ConceptNameCodeSequence[0].CodeValue: i.ConceptCodeSequence[0].CodeMeaning
             for i in groups[1][0].ContentSequence if i.ValueType == "CODE"}
    assert flags["NEEDSREVIEW"] == "Yes" and flags["SOURCECONFLICT"] == "Yes"
    rois = sr.content.get_planar_roi_measurement_groups()
    assert len(rois) == 2  # the VLM's pneumothorax box and the classifier's heatmap box
    first = next(g for g in rois if g.finding_type == codes.SCT.Pneumothorax).roi
    assert first.GraphicType == "POLYLINE" and first.value.shape == (5, 2)
    assert first.value[0].tolist() == pytest.approx([0.6 * rg1.Columns, 0.1 * rg1.Rows])
    assert first.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == rg1.SOPInstanceUID
    root_texts = " ".join(str(i.get("TextValue", "")) for i in sr.ContentSequence)
    assert report in root_texts and "AI-generated" in root_texts and "not verified" in root_texts
    assert dciodvfy_errors(sr, tmp_path) == []


def dciodvfy_errors(sr, tmp_path) -> list[str]:
    """dicom3tools' IOD validator's error lines ([] where Debian's dicom3tools is not installed)."""
    if not shutil.which("dciodvfy"):
        return []
    path = tmp_path / "sr.dcm"
    sr.save_as(path, enforce_file_format=True)
    out = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    return [ln for ln in (out.stdout + out.stderr).splitlines() if ln.startswith("Error")]


@pytest.mark.parametrize("name", ["siim_1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm",
                                  "CR-MONO1-10-chest.dcm"])
def test_sr_repairs_malformed_source_values_it_must_copy(shared_data, turn, tmp_path, name):
    """Real headers hold PatientAge '62' (SIIM) and dates '1995.07.20' (CR-MONO1): the SR stays valid."""
    decisions, evidence, report = turn
    source = pydicom.dcmread(shared_data / "dicom" / name, stop_before_pixels=True, force=True)
    before = {e.keyword: e.value for e in source}
    sr = _reopen(build_sr(source, decisions=decisions, evidence=evidence, report_text=report))
    assert {e.keyword: e.value for e in source} == before  # the caller's header is not touched
    assert sr.get("PatientAge") in (None, "", "062Y") and sr.get("StudyDate") in ("", "19010101", None)
    assert sr.StudyInstanceUID == source.StudyInstanceUID
    assert dciodvfy_errors(sr, tmp_path) == []


def test_sr_for_an_upload_references_the_deidentified_study(shared_data, turn, tmp_path):
    decisions, evidence, report = turn
    study = load_study(shared_data / "dicom" / "RG1_J2KI.dcm")
    source = deidentified_source(study)
    again = deidentified_source(load_study(shared_data / "dicom" / "RG1_J2KI.dcm"))
    assert (source.StudyInstanceUID, source.SOPInstanceUID) == (again.StudyInstanceUID, again.SOPInstanceUID)
    assert pydicom.uid.UID(source.SOPInstanceUID).is_valid and source.PatientIdentityRemoved == "YES"
    sr = _reopen(build_sr(source, decisions=decisions, evidence=evidence, report_text=report, demo=True))
    original = pydicom.dcmread(shared_data / "dicom" / "RG1_J2KI.dcm", stop_before_pixels=True)
    assert sr.StudyInstanceUID == source.StudyInstanceUID != original.StudyInstanceUID
    assert str(sr.PatientName) == "" and sr.PatientID == ""
    dump = str(sr)
    for phi in (str(original.PatientName), original.PatientID, original.SOPInstanceUID, original.StudyInstanceUID):
        assert phi not in dump
    assert "DEMO MODE" in " ".join(str(i.get("TextValue", "")) for i in sr.ContentSequence)
    assert sr.PatientIdentityRemoved == "YES" and sr.DeidentificationMethod
    assert dciodvfy_errors(sr, tmp_path) == []


def test_sr_refuses_a_header_it_cannot_reference(turn):
    decisions, evidence, report = turn
    header = pydicom.Dataset()
    header.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
    with pytest.raises(SRSourceError, match="no SOPInstanceUID"):
        build_sr(header, decisions=decisions)


def test_fhir_bundle_validates_and_carries_each_decision(turn):
    decisions, evidence, report = turn
    bundle = build_fhir_bundle(decisions=decisions, evidence=evidence, report_text=report, demo=True,
                               study_uid="1.2.3.4")
    again = Bundle.model_validate_json(fhir_json(bundle))  # the models' own validation, both ways
    kinds = [e.resource.__resource_type__ for e in again.entry]
    assert kinds == ["DiagnosticReport", "Device"] + ["Observation"] * len(decisions)
    report_res, device_entry, observations = again.entry[0].resource, again.entry[1], [e.resource for e in again.entry[2:]]
    assert report_res.status == "preliminary" and len(report_res.result) == len(decisions)
    assert report_res.presentedForm[0].data.decode().count(report) == 1  # the model holds decoded bytes
    as_json = json.loads(fhir_json(bundle))["entry"][0]["resource"]["presentedForm"][0]["data"]
    assert report in base64.b64decode(as_json).decode()  # JSON carries base64, as FHIR requires
    assert report_res.imagingStudy[0].identifier.value == "urn:oid:1.2.3.4"
    ptx = observations[0]
    assert ptx.code.coding[0].system == "http://snomed.info/sct" and ptx.code.coding[0].code == codes.SCT.Pneumothorax.value
    assert ptx.valueCodeableConcept.coding[0].code == codes.SCT.Present.value
    assert ptx.interpretation[0].coding[0].code == "POS" and ptx.device.reference == device_entry.fullUrl
    assert ptx.component[0].valueQuantity.value == pytest.approx(81.0)
    assert "Agreeing sources: vlm, classifier" in ptx.note[0].text and "Region (vlm box)" in ptx.note[0].text
    opacity = observations[1]
    assert opacity.code.coding[0].system == C.FHIR_LOCAL_SYSTEM and opacity.interpretation[0].coding[0].code == "IND"
    assert "Flagged for human review" in opacity.note[0].text and "classifier heatmap" in opacity.note[0].text
    assert observations[2].valueCodeableConcept.coding[0].code == codes.SCT.Absent.value
    doc = json.loads(fhir_json(bundle))
    doc["entry"][2]["resource"]["status"] = 42  # the models reject a malformed resource
    with pytest.raises(ValidationError):
        Bundle.model_validate(doc)


PHRASE = "the line Dr Quillon placed"


def test_the_locate_phrase_stays_out_of_the_sr_and_fhir(rg1):
    """A phrase-grounding box is labelled with the user's words and the reply quotes them; the
    de-identified exports name the region by the vocabulary and replace the words everywhere."""
    box = Box(x1=0.55, y1=0.1, x2=0.8, y2=0.35, label=PHRASE)
    evidence = [Evidence(tool="vlm", artifacts=[Artifact(kind="boxes", finding=None, box=box,
                                                         meta={"location_only": True})])]
    decisions = [Decision(finding="support_devices", status=Status.present, confidence=0.7, agreeing=["vlm"],
                          rationale=f"The VLM located {PHRASE.upper()} in the upper right.",
                          calls=[FindingCall(finding="support_devices", status=Status.present, source="vlm",
                                             box=box)])]
    reply = f"**Where is {PHRASE}?** The VLM places it in the upper right (x 0.55-0.80)."
    sr = _reopen(build_sr(rg1, decisions=decisions, evidence=evidence, report_text=reply, demo=True))
    bundle = fhir_json(build_fhir_bundle(decisions=decisions, evidence=evidence, report_text=reply, demo=True))
    decoded = " ".join(base64.b64decode(e["resource"]["presentedForm"][0]["data"]).decode()
                       for e in json.loads(bundle)["entry"] if e["resource"]["resourceType"] == "DiagnosticReport")
    sr_text = " ".join(str(e.value) for e in sr.iterall() if isinstance(e.value, str))
    for text in (sr_text, bundle, decoded):
        assert "quillon" not in text.lower()
    assert "[the region asked about]" in decoded and "upper right" in decoded  # the rest of the reply stays
    assert "[the region asked about]" in sr_text and "region: support devices (vlm box)" in sr_text.lower(), sr_text[-600:]


def test_an_explicit_phrase_is_replaced_too(turn):
    decisions, evidence, _ = turn
    bundle = fhir_json(build_fhir_bundle(decisions=decisions, evidence=evidence, asked=["Mrs Okafor's drain"],
                                         report_text="Mrs  okafor's DRAIN is not seen."))
    decoded = " ".join(base64.b64decode(e["resource"]["presentedForm"][0]["data"]).decode()
                       for e in json.loads(bundle)["entry"] if e["resource"]["resourceType"] == "DiagnosticReport")
    assert "okafor" not in decoded.lower() and "[the region asked about] is not seen." in decoded
