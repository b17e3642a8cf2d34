"""Review -> sign -> verified SR and FHIR -> STOW-RS to a real Orthanc -> read back VERIFIED."""

from __future__ import annotations

import shutil
import subprocess

import highdicom as hd
import pydicom
import pytest
from graph_scripted import ScriptedVLM, classifier
from orthanc_server import PASSWORD, USER
from pydantic import SecretStr

from agents.review import Reviewer, ReviewStore, open_review
from agents.review.outputs import fhir_bundle, push_verified, sr_pair
from knowledge.evidence import Box
from tools.ingestion.store import StudyStore
from tools.interop.dicomweb import NoRadiograph, PacsClient
from tools.interop.signed import NotVerifiable, sr_uids
from tools.interop.sr import _uid, deidentified_source

READER = Reviewer.from_identity(type("Identity", (), {"id": "dr-lee", "name": "Ann Lee", "org": "Radiology Dept"})())


def _turn(make_graph, thread, study_id):
    vlm = ScriptedVLM(report="Small right pneumothorax. No pleural effusion.")
    clf = classifier({"pneumothorax": 0.82, "cardiomegaly": 0.9},
                     boxes={"pneumothorax": Box(x1=0.55, y1=0.1, x2=0.9, y2=0.45)})
    g = make_graph(vlm, clf)
    cfg = thread()
    g.invoke({"messages": [("user", "Write a report")], "study_id": study_id}, cfg)
    return g, cfg["configurable"]["thread_id"]


def _sign(g, tid, settings, reviewer=READER):
    review = open_review(g, tid, reviewer=reviewer, settings=settings)
    review.reject("pneumothorax", note="skin fold")
    review.accept("cardiomegaly")
    review.edit_report("No pneumothorax. Cardiomegaly.")
    signed = review.sign()
    ReviewStore.for_settings(settings).save_signed(signed)
    return signed


def test_signed_review_pushed_to_orthanc_reads_back_verified(pacs, settings, make_graph, thread, tmp_path):
    server, samples = pacs
    s = settings.model_copy(update={"pacs_username": USER, "pacs_password": SecretStr(PASSWORD), "pacs_timeout_s": 5})
    client = PacsClient(s, url=server.dicomweb)
    pulled = client.pull(samples.chest_uid)
    StudyStore.from_settings(settings).put(pulled.study)
    g, tid = _turn(make_graph, thread, pulled.study.id)

    typed = _sign(g, tid, settings, Reviewer.typed("Ann"))
    with pytest.raises(NotVerifiable, match="without a login"):  # no login: never sent as a verified result
        push_verified(typed, client, samples.chest_uid, demo=True)

    signed = _sign(g, tid, settings)  # a correction of the typed one, now under a login
    assert signed.supersedes == typed.review_id
    pushed = push_verified(signed, client, samples.chest_uid, demo=True)
    series = {x["0020000E"]["Value"][0]: x["00080060"]["Value"][0]
              for x in client._client.search_for_series(samples.chest_uid)}
    ai_series, verified_series = _uid("review", signed.lineage, "ai-series"), sr_uids(signed.review_id)[0]
    assert series[ai_series] == series[verified_series] == "SR"  # the AI's SR beside the reading
    path = tmp_path / "verified.dcm"
    sop = client._client.retrieve_instance(samples.chest_uid, verified_series, pushed.verified_sop_uid)
    sop.save_as(path, enforce_file_format=True)
    sr = hd.sr.Comprehensive3DSR.from_dataset(pydicom.dcmread(path))
    assert (sr.VerificationFlag, sr.CompletionFlag) == ("VERIFIED", "COMPLETE")
    assert str(sr.VerifyingObserverSequence[0].VerifyingObserverName) == "Lee^Ann"
    assert sr.VerifyingObserverSequence[0].VerifyingOrganization == "Radiology Dept"
    assert str(sr.PatientName) == str(samples.chest.PatientName)  # the patient module is the PACS's
    ref = sr.PertinentOtherEvidenceSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert ref.ReferencedSOPInstanceUID == pushed.ai_sop_uid
    assert sr.PredecessorDocumentsSequence  # the correction names the version it supersedes
    out = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    assert shutil.which("dciodvfy") and not [ln for ln in (out.stdout + out.stderr).splitlines()
                                              if ln.startswith("Error")]


def test_an_uploaded_study_gets_files_but_is_never_pushed(pacs, settings, make_graph, thread, cxr_image):
    server, samples = pacs
    s = settings.model_copy(update={"pacs_username": USER, "pacs_password": SecretStr(PASSWORD), "pacs_timeout_s": 5})
    from tools.ingestion.loader import load_study

    study = load_study(cxr_image)
    StudyStore.from_settings(settings).put(study)
    g, tid = _turn(make_graph, thread, study.id)
    signed = _sign(g, tid, settings)
    ai, ver = sr_pair(signed, deidentified_source(study), demo=True)  # files to download
    assert ver.VerificationFlag == "VERIFIED" and ai.VerificationFlag == "UNVERIFIED"
    bundle = fhir_bundle(signed, demo=True).model_dump(mode="json", exclude_none=True)
    assert {e["resource"]["status"] for e in bundle["entry"] if e["resource"]["resourceType"] == "DiagnosticReport"} \
        == {"final", "preliminary"}
    with pytest.raises(NoRadiograph, match="not in that PACS study"):
        push_verified(signed, PacsClient(s, url=server.dicomweb), samples.chest_uid, demo=True)
