"""Sign-off under a real OIDC login, in a real headless Chromium.

An OpenID provider runs on loopback (``oidc-provider-mock``: discovery, authorize, token, JWKS) with two
predefined users; the app gets Streamlit's ``[auth]`` secrets for it and ``CXR_AGENT_UI_REQUIRE_LOGIN``.
Reader A logs in through the provider's page, opens a study from a real Orthanc, asks for a report, acts on
the flagged finding, signs, downloads the signed SR and FHIR, and sends the verified SR to the PACS; the SR
read back from Orthanc is VERIFIED with the observer's name, id and organisation from A's claims. Reader B
then logs in in a fresh browser context and sees none of A's conversations."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

import highdicom as hd
import oidc_provider_mock
import pydicom
import pytest
import test_ui_browser
from orthanc_server import PASSWORD, USER
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from test_ui_browser import ARTIFACTS, IDLE, click_until, streamlit_page

from cxr_agent.settings import DEMO_WARNING

APP = test_ui_browser.Path(__file__).resolve().parent / "review_app.py"
READER_A = {"sub": "dr-lee-7", "claims": {"name": "Ann Lee", "email": "ann.lee@example.org", "org": "St Elsewhere Radiology"}}
EDITED = "Small right pneumothorax. Mild cardiomegaly."
READER_B = {"sub": "dr-kim-9", "claims": {"name": "Bo Kim", "email": "bo.kim@example.org", "org": "Other Hospital"}}


@pytest.fixture
def oidc_provider():
    """A real OpenID provider on loopback with the two readers; yields its base URL."""
    users = [oidc_provider_mock.User(sub=u["sub"], claims=u["claims"]) for u in (READER_A, READER_B)]
    with oidc_provider_mock.run_server_in_thread(user_claims=users) as server:
        yield f"http://localhost:{server.server_port}"


def _log_in(page, who: str) -> None:
    page.get_by_text("Please log in to use cxr-agent.").wait_for()
    provider_user = page.get_by_role("button", name=who, exact=True)  # the provider's page: a predefined user
    for attempt in range(3):  # a click that lands during a rerun can be dropped
        page.get_by_role("button", name="Log in").click()
        try:
            provider_user.wait_for(timeout=20_000)
            break
        except PlaywrightTimeout:
            if attempt == 2:
                raise
    provider_user.click()
    page.get_by_role("button", name="Log out").wait_for()  # back in the app, signed in


def _download(page, label: str, folder) -> object:
    """Click a download button and save the file; again when the click was dropped, or the download
    cancelled because a rerun replaced the button's file, during a rerun."""
    for attempt in range(5):
        try:
            with page.expect_download(timeout=20_000) as got:
                page.get_by_role("button", name=label).first.click()  # a live-fragment rerun may show a stale copy beside it
            path = folder / got.value.suggested_filename
            got.value.save_as(path)
            return path
        except PlaywrightError:  # a timeout, or "canceled"
            if attempt == 4:
                raise
            page.wait_for_selector(IDLE)
    raise AssertionError("unreachable")


def _pick_action(page, value: str) -> None:
    """Set the flagged (first) row's action in the review grid (a canvas: clicked by position)."""
    grid = page.locator('[data-testid="stExpander"] [data-testid="data-grid-canvas"]').first
    grid.wait_for()
    grid.scroll_into_view_if_needed()
    bb = grid.bounding_box()
    listbox = page.locator("#portal [role=listbox]")
    for _ in range(5):  # the grid takes clicks once it has drawn
        page.mouse.dblclick(bb["x"] + 0.76 * bb["width"], bb["y"] + 35 + 17)
        try:
            listbox.wait_for(timeout=2000)
            break
        except PlaywrightTimeout:
            page.keyboard.press("Escape")
    listbox.get_by_role("option", name=value, exact=True).click()


def _send(page, text: str) -> None:
    """Send a chat message, again if the page dropped it during a rerun (it then never shows as sent)."""
    sent = page.locator('[data-testid="stChatMessage"]:has([data-testid="stChatMessageAvatarUser"])')
    for attempt in range(3):
        box = page.get_by_test_id("stChatInputTextArea")
        box.fill(text)
        box.press("Enter")
        try:
            sent.filter(has_text=text).first.wait_for(timeout=30_000)
            return
        except PlaywrightTimeout:
            if attempt == 2:
                raise
            page.wait_for_selector(IDLE)



@contextmanager
def _screenshot_on_failure(page, name: str) -> Iterator[None]:
    try:
        yield
    except Exception:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / name), full_page=True)
        raise


@pytest.mark.browser
def test_sign_off_under_an_oidc_login_and_per_user_conversations(pacs, oidc_provider, tmp_path, monkeypatch):
    server, samples = pacs
    port = test_ui_browser._free_port()
    monkeypatch.setattr(test_ui_browser, "_free_port", lambda: port)  # the redirect URI names the app's port
    home = tmp_path / "home"
    (home / ".streamlit").mkdir(parents=True)
    (home / ".streamlit" / "secrets.toml").write_text(
        "[auth]\n"
        f'redirect_uri = "http://127.0.0.1:{port}/oauth2callback"\n'
        f'cookie_secret = "{secrets.token_hex(16)}"\n'
        'client_id = "cxr-agent-ui"\n'
        f'client_secret = "{secrets.token_hex(8)}"\n'
        f'server_metadata_url = "{oidc_provider}/.well-known/openid-configuration"\n')
    data = tmp_path / "data"
    env = {**os.environ, "CXR_AGENT_DATA_DIR": str(data), "CXR_AGENT_CHECKPOINTER_URL": "memory",
           "CXR_AGENT_MODEL_PROFILE": "tiny", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "CXR_AGENT_OFFLINE": "1", "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false",
           "CXR_AGENT_UI_REQUIRE_LOGIN": "true", "CXR_AGENT_PACS_URL": server.dicomweb,
           "CXR_AGENT_PACS_USERNAME": USER, "CXR_AGENT_PACS_PASSWORD": PASSWORD, "CXR_AGENT_PACS_TIMEOUT_S": "10"}
    env.pop("CXR_AGENT_UI_REQUIRE_LOGIN_DISABLED", None)
    downloads = tmp_path / "downloads"
    with streamlit_page(env, tmp_path, app=APP, height=2400, timeout_ms=90_000) as (page, _), \
            _screenshot_on_failure(page, "ui_review_login_failed.png"):
        _log_in(page, READER_A["sub"])
        page.get_by_text(DEMO_WARNING).wait_for()
        page.get_by_text("Open from PACS").click()
        page.get_by_label("Study Instance UID").fill(samples.chest_uid)
        page.get_by_role("button", name="Open").first.click()
        page.get_by_text("Size:").first.wait_for(timeout=60_000)
        _send(page, "Write a report")
        page.get_by_text("Review and sign-off").wait_for(timeout=240_000)
        page.wait_for_selector(IDLE)
        page.get_by_text("Review and sign-off").click()
        page.get_by_text("reviewer: Ann Lee").wait_for()  # the login's name, no typed-name field
        assert page.get_by_label("Your name (no login: the review is recorded but never verified)").count() == 0
        _pick_action(page, "present")
        page.get_by_text("reviewer: Ann Lee").click()  # leave the table: the edit is sent
        page.wait_for_selector(IDLE)
        report = page.get_by_role("textbox", name="Report", exact=True)
        report.fill(EDITED)
        page.get_by_text("reviewer: Ann Lee").click()  # leave the text area: the edit is sent
        page.wait_for_selector(IDLE)
        click_until(page, "Sign", page.get_by_text("Signed by Ann Lee").first, tries=4, timeout_ms=30_000)
        files = {label: _download(page, label, downloads) for label in ("Signed SR (DICOM)", "Signed report (FHIR)")}
        click_until(page, "Send to the PACS", page.get_by_text("The verified SR is on the PACS").first, tries=4,
                    timeout_ms=30_000)
        sidebar_a = page.get_by_test_id("stSidebar").inner_text()
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.locator('[data-testid="stExpander"]').last.screenshot(path=str(ARTIFACTS / "ui_review_login.png"))
        body = page.inner_text("body")

        other = page.context.browser.new_context(viewport={"width": 1500, "height": 1600})
        try:
            second = other.new_page()
            second.set_default_timeout(60_000)
            second.goto(f"http://127.0.0.1:{port}")
            _log_in(second, READER_B["sub"])
            second.get_by_text("Your conversations").wait_for()
            second.wait_for_selector(IDLE)
            sidebar_b = second.get_by_test_id("stSidebar").inner_text()
        finally:
            other.close()

    assert "Traceback" not in body
    # A's own list holds A's conversation; B, logged in as someone else, sees none of it
    assert "Write a report" in sidebar_a
    assert "Write a report" not in sidebar_b
    assert "Conversations you start are listed here" in sidebar_b

    signed = [json.loads(p.read_text()) for p in (data / "reviews").rglob("signed-*.json")]
    assert len(signed) == 1
    reviewer = signed[0]["reviewer"]
    assert reviewer["authenticated"] is True and reviewer["issuer"] == oidc_provider
    assert (reviewer["name"], reviewer["id"], reviewer["org"]) == ("Ann Lee", READER_A["sub"], "St Elsewhere Radiology")
    assert signed[0]["report_text"] == EDITED
    cardio = next(i for i in signed[0]["items"] if i["finding"] == "cardiomegaly")
    assert (cardio["action"], cardio["status"]) == ("changed", "present")

    downloaded = pydicom.dcmread(files["Signed SR (DICOM)"])
    assert downloaded.VerificationFlag == "VERIFIED"
    bundle = json.loads(files["Signed report (FHIR)"].read_text())
    practitioner = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Practitioner")
    assert practitioner["identifier"] == [{"system": oidc_provider, "value": READER_A["sub"]}]
    assert "final" in {e["resource"].get("status") for e in bundle["entry"]
                       if e["resource"]["resourceType"] == "DiagnosticReport"}

    import requests
    from dicomweb_client import DICOMwebClient

    session = requests.Session()
    session.auth = (USER, PASSWORD)
    web = DICOMwebClient(server.dicomweb, session=session)
    sop = downloaded.SOPInstanceUID
    back = web.retrieve_instance(samples.chest_uid, downloaded.SeriesInstanceUID, sop)
    path = tmp_path / "from-orthanc.dcm"
    back.save_as(path, enforce_file_format=True)
    sr = hd.sr.Comprehensive3DSR.from_dataset(pydicom.dcmread(path))
    assert (sr.VerificationFlag, sr.CompletionFlag) == ("VERIFIED", "COMPLETE")
    assert EDITED in [str(getattr(item, "TextValue", "")) for item in sr.ContentSequence]
    observer = sr.VerifyingObserverSequence[0]
    assert str(observer.VerifyingObserverName) == "Lee^Ann"
    assert observer.VerifyingOrganization == "St Elsewhere Radiology"
    ident = observer.VerifyingObserverIdentificationCodeSequence[0]
    assert (ident.get("CodeValue") or ident.get("LongCodeValue")) == READER_A["sub"]
    out = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    assert shutil.which("dciodvfy") and not [ln for ln in (out.stdout + out.stderr).splitlines()
                                              if ln.startswith("Error")]
