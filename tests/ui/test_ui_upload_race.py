"""The upload race in a real browser (issue 14.7): a question sent the moment a file is chosen, while
the study is still being read, is answered about that study, never "please upload a chest radiograph".

Drives `streamlit run ui/app.py` with Debian's Chromium through Playwright (skipped without them), like
test_ui_browser.py. The file is a JPEG 2000 DICOM (the slowest of the shared samples to decode, ~2 s); the
message is sent the moment the file is chosen, while it is being read. The mechanism behind the race (the message's
run starting while the upload's run is still decoding) is reproduced deterministically by
tests/ui/test_ui_logic.py::test_a_run_that_starts_mid_ingest_reads_the_file_itself.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from test_ui_browser import CHROMIUM, CHROMIUM_ARGS, IDLE, _free_port, _wait_healthy
from ui_helpers import APP

from cxr_agent.settings import DEMO_WARNING

NO_IMAGE = "upload a chest radiograph"


@pytest.mark.browser
def test_question_sent_during_ingest_waits_for_the_study(ui_env, shared_data, tmp_path):
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed at /usr/bin/chromium (`make browser`)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    dicom = shared_data / "dicom" / "RG1_J2KI.dcm"
    home, data = tmp_path / "home", tmp_path / "data"
    home.mkdir()
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, **ui_env, "HOME": str(home), "CXR_AGENT_DATA_DIR": str(data),
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "CXR_AGENT_OFFLINE": "1",
           "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false", "CXR_AGENT_VERIFY_CONFLICTS": "false"}
    log = tmp_path / "streamlit.log"
    cmd = [sys.executable, "-m", "streamlit", "run", str(APP), "--server.address", "127.0.0.1",
           "--server.port", str(port), "--server.headless", "true", "--browser.gatherUsageStats", "false",
           "--server.fileWatcherType", "none"]  # other edits to the tree must not rerun the app mid-test
    with log.open("w") as fh:
        proc = subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, cwd=str(APP.parents[1]))
    try:
        _wait_healthy(url, proc, log)
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
                                        env={**os.environ, "HOME": str(home)})
            try:
                page = browser.new_page(viewport={"width": 1500, "height": 2400})
                page.set_default_timeout(120_000)
                page.goto(url)
                page.get_by_text(DEMO_WARNING).wait_for()
                page.wait_for_selector(IDLE)  # the first load (graph, model checks) has finished
                box = page.get_by_test_id("stChatInputTextArea")
                box.fill("Is there cardiomegaly?")
                page.locator("input[type=file]").first.set_input_files(str(dicom))
                # Enter at once: the decode (~0.7-2 s) is still running, so the message's run starts mid-ingest.
                # (Waiting for the "Reading the study..." spinner first made the test flaky: on a quiet machine
                # the decode can finish before the spinner is ever painted.)
                box.press("Enter")
                page.get_by_text(re.compile(r"^Done in \d")).first.wait_for(timeout=300_000)
                page.wait_for_selector(IDLE, timeout=120_000)
                body = page.inner_text("body")
            finally:
                browser.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
    assert "Traceback" not in body
    assert NO_IMAGE not in body, body[-3000:]
    assert "Is there cardiomegaly?" in body and "Evidence" in body  # answered about the study, with evidence
