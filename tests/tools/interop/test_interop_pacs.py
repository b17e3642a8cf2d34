"""Against a real Orthanc: QIDO/WADO pull through load_study, typed failures, and PACS -> agent -> SR -> PACS."""

from __future__ import annotations

import dataclasses
import http.server
import json
import shutil
import subprocess
import threading

import highdicom as hd
import pydicom
import pytest
from graph_scripted import ScriptedVLM, classifier
from orthanc_server import PASSWORD, USER, free_port
from pydantic import SecretStr
from pydicom.sr.codedict import codes

from knowledge.evidence import Box
from tools.ingestion.loader import load_study
from tools.ingestion.store import StudyStore
from tools.interop.dicomweb import (
    NoRadiograph,
    PacsAuthError,
    PacsClient,
    PacsNotConfigured,
    PacsUnreachable,
    StudyNotFound,
)


def client(settings, url, password=PASSWORD):
    s = settings.model_copy(update={"pacs_username": USER, "pacs_password": SecretStr(password), "pacs_timeout_s": 5})
    return PacsClient(s, url=url)


def test_pull_goes_through_load_study_and_keeps_no_identifier(pacs, settings):
    server, samples = pacs
    pulled = client(settings, server.dicomweb).pull(samples.chest_uid)
    local = load_study(_part10(samples.chest))  # the same file, uploaded
    assert pulled.study.id == local.id and pulled.study.source_format == "dicom"
    assert pulled.study.original_size == (440, 440) and pulled.study.metadata["modality"] == "CR"
    assert pulled.source.sop_uid == samples.chest.SOPInstanceUID and pulled.source.modality == "CR"
    kept = json.dumps(pulled.study.metadata)
    for tag in ("PatientName", "PatientID", "StudyInstanceUID", "SOPInstanceUID", "InstitutionName"):
        value = str(samples.chest.get(tag) or "")
        assert not value or value not in kept, tag


def test_a_secondary_capture_labelled_cr_counts_as_a_radiograph(pacs, settings):
    server, samples = pacs
    refs = client(settings, server.dicomweb).find_radiographs(samples.siim_uid)
    assert [r.modality for r in refs] == ["CR"] and refs[0].view == "PA"


def test_typed_errors(pacs, settings):
    server, samples = pacs
    with pytest.raises(StudyNotFound, match="no study"):
        client(settings, server.dicomweb).pull("1.2.826.0.1.3680043.8.498.1")
    with pytest.raises(StudyNotFound, match="not a DICOM Study Instance UID"):
        client(settings, server.dicomweb).pull("x'; DROP")
    with pytest.raises(NoRadiograph, match="holds: OT"):
        client(settings, server.dicomweb).pull(samples.no_radiograph_uid)
    with pytest.raises(PacsAuthError, match="401") as err:
        client(settings, server.dicomweb, password="wrong").pull(samples.chest_uid)
    assert err.value.status == 401 and "wrong" not in str(err.value)
    with pytest.raises(PacsUnreachable, match="could not be reached"):
        client(settings, f"http://127.0.0.1:{free_port()}/dicom-web").pull(samples.chest_uid)
    with pytest.raises(PacsNotConfigured, match="CXR_AGENT_PACS_URL"):
        PacsClient(settings.model_copy(update={"pacs_url": None}))
    for bad in ("pacs:8042/dicom-web", "ftp://pacs/dicom-web", "http://256.1.1.1:99999/dicom-web"):
        with pytest.raises(PacsNotConfigured, match="not a usable DICOMweb address"):
            client(settings, bad).pull(samples.chest_uid)


def test_forbidden_is_its_own_error(settings):
    class Forbidden(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(403)
            self.end_headers()

        def log_message(self, *a):
            pass

    httpd = http.server.HTTPServer(("127.0.0.1", 0), Forbidden)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        with pytest.raises(PacsAuthError, match="does not allow") as err:
            client(settings, f"http://127.0.0.1:{httpd.server_port}/dicom-web").pull("1.2.3.4")
        assert err.value.status == 403
    finally:
        httpd.shutdown()


def test_pacs_to_agent_to_sr_back_into_the_same_pacs(pacs, settings, make_graph, thread, tmp_path, caplog, recwarn):
    """The issue's 'done when': pull, a report turn, push the SR, read it back from Orthanc, validate it."""
    server, samples = pacs
    pacs_client = client(settings, server.dicomweb)
    vlm = ScriptedVLM(report="Small right pneumothorax. No pleural effusion.")
    clf = classifier({"pneumothorax": 0.82, "cardiomegaly": 0.2},
                     boxes={"pneumothorax": Box(x1=0.55, y1=0.1, x2=0.9, y2=0.45)})
    g = make_graph(vlm, clf)
    pulled = pacs_client.pull(samples.chest_uid)
    StudyStore.from_settings(settings).put(pulled.study)  # where the graph's nodes look studies up
    cfg = thread()
    g.invoke({"messages": [("user", "Write a report")], "study_id": pulled.study.id}, cfg)
    state = g.get_state(cfg).values
    decisions, reply = state["decisions"], state["messages"][-1].content
    assert {d.finding for d in decisions} >= {"pneumothorax"}

    ref = pacs_client.locate(samples.chest_uid, pulled.study.id)  # push finds the read image again
    assert ref == pulled.source
    pushed = pacs_client.push_report(ref, decisions=decisions, evidence=state["evidence"], report_text=reply,
                                     demo=True)
    assert pushed.study_uid == samples.chest_uid and pushed.findings == len(decisions)

    raw = pacs_client._client.retrieve_instance(pushed.study_uid, pushed.series_uid, pushed.sop_uid)
    path = tmp_path / "sr.dcm"
    raw.save_as(path, enforce_file_format=True)
    sr = hd.sr.Comprehensive3DSR.from_dataset(pydicom.dcmread(path))
    assert sr.Modality == "SR" and sr.VerificationFlag == "UNVERIFIED"
    assert str(sr.PatientName) == str(samples.chest.PatientName)  # the patient module came from the PACS, not from us
    evidence_ref = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
    assert evidence_ref.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == samples.chest.SOPInstanceUID
    groups = sr.content.get_image_measurement_groups()
    assert len(groups) == len(decisions)
    ptx = next(g for g in groups if g.finding_type == codes.SCT.Pneumothorax)
    assert ptx.get_qualitative_evaluations()[0].value == codes.SCT.Present
    regions = sr.content.get_planar_roi_measurement_groups()
    assert regions and regions[0].roi.value.tolist()[0] == pytest.approx([0.55 * 440, 0.1 * 440])
    assert "pneumothorax" in reply.lower()
    assert any("pneumothorax" in str(i.get("TextValue", "")).lower() for i in sr.ContentSequence)
    logged = caplog.text + " ".join(str(w.message) for w in recwarn)
    for phi in ("1995.07.20", "1993.02.24", samples.chest.SOPInstanceUID):  # the sample's malformed dates
        assert phi not in logged  # header values never reach logs or warnings
    if shutil.which("dciodvfy"):
        out = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
        assert not [ln for ln in (out.stdout + out.stderr).splitlines() if ln.startswith("Error")], out.stderr


def _part10(ds: pydicom.Dataset) -> bytes:
    buf = pydicom.filebase.DicomBytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def test_pulled_images_meet_the_upload_limits(pacs, settings):
    """The pixel cap of the settings refuses a pulled image exactly as it refuses an upload."""
    from tools.ingestion.study import ImageTooLarge

    server, samples = pacs
    small_cap = settings.model_copy(update={"max_image_pixels": 100_000,  # the sample is 440 x 440
                                            "pacs_username": USER, "pacs_password": SecretStr(PASSWORD)})
    pacs_client = PacsClient(small_cap, url=server.dicomweb)
    ref = pacs_client.find_radiographs(samples.chest_uid)[0]
    assert (ref.rows, ref.columns) == (440, 440)  # QIDO reported the size: refused before the download
    with pytest.raises(ImageTooLarge, match="440 x 440"):
        pacs_client.pull(samples.chest_uid)
    unsized = dataclasses.replace(ref, rows=None, columns=None)  # a PACS that does not report Rows/Columns
    data = pacs_client.retrieve_bytes(unsized)
    with pytest.raises(ImageTooLarge, match="440 x 440"):  # load_study's own header check still refuses it
        load_study(data, settings=small_cap)
