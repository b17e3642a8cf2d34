"""The review panel in a real headless Chromium: report, open the panel, act on the flagged finding in the
editable table, sign under a typed name; the signed review is on disk, unverified."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from test_ui_browser import ARTIFACTS, IDLE, click_until, streamlit_page
from ui_helpers import nih_png

from cxr_agent.settings import DEMO_WARNING

APP = Path(__file__).resolve().parent / "review_app.py"


@pytest.mark.browser
def test_review_and_sign_in_a_real_browser(shared_data, tmp_path):
    data = tmp_path / "data"
    env = {**os.environ, "CXR_AGENT_DATA_DIR": str(data), "CXR_AGENT_CHECKPOINTER_URL": "memory",
           "CXR_AGENT_MODEL_PROFILE": "tiny", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "CXR_AGENT_OFFLINE": "1", "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false"}
    with streamlit_page(env, tmp_path, app=APP, height=2400) as (page, _):
        page.get_by_text(DEMO_WARNING).wait_for()
        page.locator("input[type=file]").first.set_input_files(str(nih_png(shared_data)))
        page.get_by_text("Size:").first.wait_for()
        box = page.get_by_test_id("stChatInputTextArea")
        box.fill("Write a report")
        box.press("Enter")
        page.get_by_text("Review and sign-off").wait_for(timeout=120_000)
        page.wait_for_selector(IDLE)
        page.get_by_text("Review and sign-off").click()
        name = page.get_by_label("Your name (no login: the review is recorded but never verified)")
        name.fill("Ann")
        name.press("Enter")
        page.wait_for_selector(IDLE)
        grid = page.locator('[data-testid="stExpander"] [data-testid="data-grid-canvas"]').first
        grid.wait_for()
        grid.scroll_into_view_if_needed()
        bb = grid.bounding_box()
        # the flagged row comes first; its "action" cell lies at about 0.76 of the table's width
        listbox = page.locator("#portal [role=listbox]")
        for _ in range(5):  # the grid takes clicks once it has drawn; open the cell's choice list
            page.mouse.dblclick(bb["x"] + 0.76 * bb["width"], bb["y"] + 35 + 17)
            try:
                listbox.wait_for(timeout=2000)
                break
            except PlaywrightTimeout:
                page.keyboard.press("Escape")
        listbox.get_by_role("option", name="present", exact=True).click()
        page.get_by_text("Version 1 · reviewer").click()  # leave the table (plain text): the edit is sent
        page.wait_for_selector(IDLE)
        click_until(page, "Sign", page.get_by_text("Signed by (unauthenticated) Ann"))
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.locator('[data-testid="stExpander"]').last.screenshot(path=str(ARTIFACTS / "ui_review.png"))
        body = page.inner_text("body")
    assert "Traceback" not in body
    signed = [json.loads(p.read_text()) for p in (data / "reviews").rglob("signed-*.json")]
    assert len(signed) == 1 and signed[0]["reviewer"]["authenticated"] is False
    cardio = next(i for i in signed[0]["items"] if i["finding"] == "cardiomegaly")
    assert (cardio["action"], cardio["status"]) == ("changed", "present")
