"""The UI's PACS actions and structured downloads: open from a real Orthanc, push on request, SR/FHIR files."""

from __future__ import annotations

import io

import highdicom as hd
import pydicom
import pytest
from fhir.resources.R4B.bundle import Bundle
from orthanc_server import PASSWORD, USER
from pydantic import SecretStr
from ui_helpers import APP, sample_decisions, sample_evidence

from tools.ingestion.loader import load_study
from ui import session as S
from ui.exports import dicom_sr_bytes, fhir_report_json
from ui.pacs import K_PACS_SOURCE, can_push, open_from_pacs, push_to_pacs
from ui.turn import TurnResult


@pytest.fixture
def pacs_settings(pacs, settings):
    server, _ = pacs
    return settings.model_copy(update={"pacs_url": server.dicomweb, "pacs_username": USER,
                                       "pacs_password": SecretStr(PASSWORD), "pacs_timeout_s": 5})


def _turn(study_id: str) -> TurnResult:
    return TurnResult(user_text="Write a report", reply="Small left pleural effusion.", evidence=sample_evidence(),
                      decisions=sample_decisions(), study_id=study_id)


def test_downloads_reference_the_deidentified_study(shared_data):
    study = load_study(shared_data / "dicom" / "RG1_J2KI.dcm")
    original = pydicom.dcmread(shared_data / "dicom" / "RG1_J2KI.dcm", stop_before_pixels=True)
    turns = [TurnResult(user_text="hi", reply="Hello."), _turn(study.id)]
    data = dicom_sr_bytes(turns, study, demo=True)
    sr = hd.sr.Comprehensive3DSR.from_dataset(pydicom.dcmread(io.BytesIO(data)))
    assert sr.StudyInstanceUID != original.StudyInstanceUID and str(sr.PatientName) == ""
    for phi in (str(original.PatientName), original.PatientID, original.StudyInstanceUID):
        assert phi.encode() not in data
    assert len(sr.content.get_image_measurement_groups()) == len(sample_decisions())
    bundle = Bundle.model_validate_json(fhir_report_json(turns, study, demo=True))
    assert bundle.entry[0].resource.imagingStudy[0].identifier.value == f"urn:oid:{sr.StudyInstanceUID}"
    assert dicom_sr_bytes([TurnResult(user_text="hi", reply="Hello.")], study) is None  # nothing to report yet


def test_open_from_pacs_ingests_like_an_upload_and_push_only_on_request(pacs, pacs_settings):
    server, samples = pacs
    state: dict = {}
    S.init_session(state)
    assert "no single-frame CR/DX" in open_from_pacs(state, pacs_settings, samples.no_radiograph_uid)
    assert state[S.K_STUDY] is None and K_PACS_SOURCE not in state
    assert open_from_pacs(state, pacs_settings, f"  {samples.chest_uid} ") is None
    study = state[S.K_STUDY]
    assert study.original_size == (440, 440) and state[S.K_PENDING] == study.id  # queued for the next turn
    assert state[S.K_STUDY_NAME].startswith("Study 1")  # never a name from the PACS
    assert not can_push(state)  # no findings yet: no button, nothing sent
    ok, message = push_to_pacs(state, pacs_settings)
    assert not ok and "ask for a report first" in message
    state[S.K_TURNS].append(_turn(study.id))
    assert can_push(state)
    ok, message = push_to_pacs(state, pacs_settings)
    assert ok and "UNVERIFIED" in message, message
    import requests
    from dicomweb_client import DICOMwebClient

    session = requests.Session()
    session.auth = (USER, PASSWORD)
    series = DICOMwebClient(server.dicomweb, session=session).search_for_series(
        samples.chest_uid, fields=["Modality"])
    assert ["SR"] in [s["00080060"]["Value"] for s in series]
    from agents.review import ReviewStore

    pushed = ReviewStore.for_settings(pacs_settings).pushed_srs(state[S.K_THREAD], study.id)
    assert len(pushed) == 1 and pushed[0].study_uid == samples.chest_uid  # a verified SR will reference it
    state[S.K_STUDY] = load_study(_png())  # another study now on screen: its SR must not go to the PACS study
    assert not can_push(state)


def test_remote_mode_uploads_the_pulled_study_to_the_graph_server(pacs, pacs_settings):
    """In remote mode the pulled file goes through the server's upload, like a dropped file (#15's gap)."""
    import httpx

    from ui.remote import RemoteAgent

    _, samples = pacs
    posted: list[httpx.Request] = []

    def server(request: httpx.Request) -> httpx.Response:
        posted.append(request)
        study = load_study(request.content, filename=request.url.params.get("filename"), settings=pacs_settings)
        return httpx.Response(201, json={"study_id": study.id, "width": study.width, "height": study.height})

    url = "http://graph.localhost:2024"  # loopback by name: plain http is allowed there
    agent = RemoteAgent(pacs_settings.model_copy(update={"graph_url": url}),
                        http=httpx.Client(base_url=url, transport=httpx.MockTransport(server)))
    state: dict = {}
    S.init_session(state)
    assert open_from_pacs(state, pacs_settings, samples.chest_uid, loader=agent.load_study) is None
    assert [(r.method, r.url.path) for r in posted] == [("POST", "/cxr/studies")]
    assert posted[0].content[128:132] == b"DICM"  # the pulled DICOM file itself
    assert state[S.K_PENDING] == state[S.K_STUDY].id  # the server's study id, queued for the next turn


def _png() -> bytes:
    import numpy as np
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray((np.random.default_rng(0).random((128, 128)) * 255).astype("uint8")).save(buf, "PNG")
    return buf.getvalue()


def test_the_app_opens_a_study_from_the_pacs(pacs, app_env, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from cxr_agent.settings import get_settings

    server, samples = pacs
    for key, value in {"PACS_URL": server.dicomweb, "PACS_USERNAME": USER, "PACS_PASSWORD": PASSWORD}.items():
        monkeypatch.setenv(f"CXR_AGENT_{key}", value)
    get_settings.cache_clear()
    try:
        at = AppTest.from_file(str(APP), default_timeout=120)
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        assert "Open from PACS" in [e.label for e in at.get("expander")]
        at.text_input(key="cxr_pacs_uid").set_value(samples.chest_uid)
        at.button[[b.label for b in at.button].index("Open")].click()
        at.run()
        assert not at.exception and not at.error, [e.value for e in at.error]
        assert [c for img in at.image for c in img.captions][0].startswith("Study 1")
        assert "Send SR to PACS" not in [b.label for b in at.button]  # no findings yet: nothing to send
    finally:
        get_settings.cache_clear()
