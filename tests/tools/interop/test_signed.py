"""The signed reading's outputs: a verified SR referencing the AI's SR, a final FHIR report with Provenance."""

from __future__ import annotations

import base64
import shutil
import subprocess
from datetime import datetime, timezone

import highdicom as hd
import pydicom
import pytest
from pydicom.sr.codedict import codes

from knowledge.evidence import Box, Decision, FindingCall, Status
from tools.interop.signed import (
    NotVerifiable,
    Reader,
    SignedFinding,
    SignedResult,
    ai_draft_sr,
    require_verified,
    sr_uids,
    verified_fhir,
    verified_sr,
)

AI = [
    Decision(finding="pneumothorax", status=Status.present, confidence=0.81, agreeing=["vlm", "classifier"],
             calls=[FindingCall(finding="pneumothorax", status=Status.present, source="vlm",
                                box=Box(x1=0.6, y1=0.1, x2=0.9, y2=0.4))]),
    Decision(finding="cardiomegaly", status=Status.uncertain, confidence=0.5, needs_review=True, conflict=True),
]
FINDINGS = [SignedFinding("pneumothorax", "absent", "present", "rejected", 0.81, "skin fold"),
            SignedFinding("cardiomegaly", "present", "uncertain", "changed", 0.5),
            SignedFinding("fracture", "present", None, "added")]
ANN = Reader(name="Ann Lee", identifier="u-123", organisation="St Elsewhere Radiology",
             issuer="https://login.example.org", verified=True)


def result(reader=ANN, **over) -> SignedResult:
    base = dict(document_id="r1", lineage="r1", version=1, reader=reader,
                signed_at=datetime(2026, 12, 7, 13, 0, tzinfo=timezone.utc), findings=FINDINGS,
                report_text="No pneumothorax. Cardiomegaly. Rib fracture.",
                ai_report_text="Small right pneumothorax.", ai_decisions=AI, demo=True)
    return SignedResult(**{**base, **over})


@pytest.fixture(scope="module")
def rg1(shared_data):
    return pydicom.dcmread(shared_data / "dicom" / "RG1_J2KI.dcm", stop_before_pixels=True)


def _reopen(sr, path):
    sr.save_as(path, enforce_file_format=True)
    return hd.sr.Comprehensive3DSR.from_dataset(pydicom.dcmread(path))


def dciodvfy_errors(path) -> list[str]:
    assert shutil.which("dciodvfy"), "dicom3tools (dciodvfy) is installed on this machine"
    out = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    return [ln for ln in (out.stdout + out.stderr).splitlines() if ln.startswith("Error")]


def test_verified_sr_references_the_ai_sr_and_passes_dciodvfy(rg1, tmp_path):
    res = result()
    ai = ai_draft_sr(rg1, res)
    assert ai.VerificationFlag == "UNVERIFIED"
    sr = _reopen(verified_sr(rg1, res, ai), tmp_path / "signed.dcm")
    assert dciodvfy_errors(tmp_path / "signed.dcm") == []
    assert (sr.CompletionFlag, sr.VerificationFlag, sr.PreliminaryFlag) == ("COMPLETE", "VERIFIED", "FINAL")
    obs = sr.VerifyingObserverSequence[0]
    assert str(obs.VerifyingObserverName) == "Lee^Ann" and obs.VerifyingOrganization == "St Elsewhere Radiology"
    assert obs.VerifyingObserverIdentificationCodeSequence[0].CodeValue == "u-123"
    other = sr.PertinentOtherEvidenceSequence[0]
    assert other.StudyInstanceUID == rg1.StudyInstanceUID
    assert other.ReferencedSeriesSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == ai.SOPInstanceUID
    assert sr.SOPInstanceUID != ai.SOPInstanceUID and sr.StudyInstanceUID == rg1.StudyInstanceUID
    groups = {g.finding_type.value: g for g in sr.content.get_image_measurement_groups()}
    assert groups[codes.SCT.Pneumothorax.value].get_qualitative_evaluations()[0].value == codes.SCT.Absent
    texts = " ".join(str(i.get("TextValue", "")) for i in pydicom.dcmread(tmp_path / "signed.dcm").ContentSequence)
    assert "Pneumothorax: AI present, reader absent (rejected)" in texts  # the difference, visible
    assert "added by the reader" in texts and "Report text edited" in texts
    assert "Reviewed and verified by Ann Lee" in texts


def test_a_correction_lists_its_predecessor(rg1, tmp_path):
    res = result(document_id="r2", version=2, supersedes="r1")
    sr = _reopen(verified_sr(rg1, res, ai_draft_sr(rg1, res)), tmp_path / "v2.dcm")
    prev = sr.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert prev.ReferencedSOPInstanceUID == sr_uids("r1")[1]
    assert dciodvfy_errors(tmp_path / "v2.dcm") == []


def test_without_a_login_nothing_is_verified(rg1, tmp_path):
    res = result(reader=Reader(name="Ann", verified=False))
    sr = _reopen(verified_sr(rg1, res, ai_draft_sr(rg1, res)), tmp_path / "typed.dcm")
    assert sr.VerificationFlag == "UNVERIFIED" and sr.PreliminaryFlag == "PRELIMINARY"
    assert "VerifyingObserverSequence" not in sr
    assert dciodvfy_errors(tmp_path / "typed.dcm") == []
    texts = " ".join(str(i.get("TextValue", "")) for i in pydicom.dcmread(tmp_path / "typed.dcm").ContentSequence)
    assert "Reviewed by (unauthenticated) Ann" in texts and "not verified" in texts
    bundle = verified_fhir(res).model_dump(mode="json", exclude_none=True)
    reports = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "DiagnosticReport"]
    assert all(r["status"] == "preliminary" for r in reports)
    assert "(unauthenticated) Ann" in reports[0]["resultsInterpreter"][0]["display"]
    prov = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Provenance")
    assert all(a["type"]["coding"][0]["code"] != "verifier" for a in prov["agent"])
    with pytest.raises(NotVerifiable, match="without a login"):
        require_verified(res)


def test_fhir_final_report_with_reader_and_provenance():
    bundle = verified_fhir(result(), study_uid="1.2.3.4").model_dump(mode="json", exclude_none=True)
    by_url = {e["fullUrl"]: e["resource"] for e in bundle["entry"]}
    reports = [r for r in by_url.values() if r["resourceType"] == "DiagnosticReport"]
    final = next(r for r in reports if r["status"] == "final")
    draft = next(r for r in reports if r["status"] == "preliminary")  # the AI draft stays beside it
    reader = by_url[final["resultsInterpreter"][0]["reference"]]
    assert reader["resourceType"] == "Practitioner" and reader["identifier"][0]["value"] == "u-123"
    prov = next(r for r in by_url.values() if r["resourceType"] == "Provenance")
    agents = {a["type"]["coding"][0]["code"]: by_url[a["who"]["reference"]] for a in prov["agent"]}
    assert agents["verifier"] is reader and agents["author"]["resourceType"] == "Device"
    assert by_url[prov["agent"][0]["onBehalfOf"]["reference"]]["name"] == "St Elsewhere Radiology"
    assert by_url[prov["entity"][0]["what"]["reference"]] is draft
    assert by_url[prov["target"][0]["reference"]] is final
    finals = [by_url[r["reference"]] for r in final["result"]]
    ptx = next(o for o in finals if o["code"]["text"] == "Pneumothorax")
    assert ptx["status"] == "final" and ptx["valueCodeableConcept"]["text"] == "Absent"
    assert "AI draft: present" in ptx["note"][0]["text"] and "rejected" in ptx["note"][0]["text"]
    assert "Pneumothorax: AI present, reader absent" in final["conclusion"]
    text = base64.b64decode(final["presentedForm"][0]["data"]).decode()
    assert text.startswith("No pneumothorax. Cardiomegaly. Rib fracture.")
    assert len([o for o in finals if o["code"]["text"]]) == 3  # the added finding too


def test_sr_uids_are_stable_per_version():
    assert sr_uids("r1") == sr_uids("r1") != sr_uids("r2")
