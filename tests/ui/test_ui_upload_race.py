"""The upload race in a real browser: a question sent the moment a file is chosen, while
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

import pytest
from test_ui_browser import IDLE, streamlit_page

from cxr_agent.settings import DEMO_WARNING

NO_IMAGE = "upload a chest radiograph"


@pytest.mark.browser
def test_question_sent_during_ingest_waits_for_the_study(ui_env, shared_data, tmp_path):
    dicom = shared_data / "dicom" / "RG1_J2KI.dcm"
    env = {**os.environ, **ui_env, "CXR_AGENT_DATA_DIR": str(tmp_path / "data"),
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "CXR_AGENT_OFFLINE": "1",
           "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false", "CXR_AGENT_VERIFY_CONFLICTS": "false"}
    # other edits to the tree must not rerun the app mid-test
    with streamlit_page(env, tmp_path, height=2400, timeout_ms=120_000,
                        extra_args=("--server.fileWatcherType", "none")) as (page, _):
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
    assert "Traceback" not in body
    assert NO_IMAGE not in body, body[-3000:]
    assert "Is there cardiomegaly?" in body and "Evidence" in body  # answered about the study, with evidence
