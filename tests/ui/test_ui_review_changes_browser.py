"""The review panel's change table in a real headless Chromium: two films read, compared; the flagged change
blocks signing until the reader sets its value in the second table; the signed review on disk holds it."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from test_ui_browser import ARTIFACTS, IDLE, click_until, streamlit_page

from cxr_agent.settings import DEMO_WARNING

APP = Path(__file__).resolve().parent / "review_compare_app.py"
pytestmark = [pytest.mark.browser, pytest.mark.timeout(900)]


def _send(page: Any, text: str, done: int) -> None:
    box = page.get_by_test_id("stChatInputTextArea")
    box.fill(text)
    box.press("Enter")
    deadline = time.monotonic() + 300
    while page.get_by_text(re.compile(r"^Done in \d")).count() < done:
        if time.monotonic() > deadline:
            pytest.fail(f"fewer than {done} turns done; the page says:\n{page.inner_text('body')[-3000:]}")
        time.sleep(0.5)
    page.wait_for_selector(IDLE, timeout=120_000)



def test_a_flagged_change_is_set_in_the_change_table_and_signed(shared_data, tmp_path):
    films = sorted((shared_data / "nih_cxr14" / "images").glob("*.png"))[:2]
    data = tmp_path / "data"
    env = {**os.environ, "CXR_AGENT_DATA_DIR": str(data), "CXR_AGENT_CHECKPOINTER_URL": "memory",
           "CXR_AGENT_MODEL_PROFILE": "tiny", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "CXR_AGENT_OFFLINE": "1", "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false",
           "CXR_AGENT_ROUTER_SEMANTIC": "false"}
    with streamlit_page(env, tmp_path, app=APP, height=2600) as (page, _):
        page.get_by_text(DEMO_WARNING).first.wait_for()
        upload = page.locator("input[type=file]").first
        upload.set_input_files(str(films[0]))
        page.get_by_text("Size:").first.wait_for()
        _send(page, "Read this study.", 1)
        upload.set_input_files(str(films[1]))
        page.get_by_text(re.compile(r"^Study 2")).first.wait_for()
        page.wait_for_selector(IDLE)
        _send(page, "Read this study.", 2)
        _send(page, "Is it worse than before?", 3)
        page.get_by_text("Review and sign-off").click()
        name = page.get_by_label("Your name (no login: the review is recorded but never verified)")
        name.fill("Ann")
        name.press("Enter")
        page.wait_for_selector(IDLE)
        page.get_by_text(re.compile("^Change since the prior study")).wait_for()
        click_until(page, "Sign", page.get_by_text(re.compile("flagged change.*Pleural effusion")).first)
        page.wait_for_selector(IDLE)  # the refused sign's rerun has drawn the tables again
        grid = page.locator('[data-testid="stExpander"] [data-testid="data-grid-canvas"]').nth(1)
        listbox = page.locator("#portal [role=listbox]")
        # the flagged change comes first; its "action" cell lies at about 0.86 of the table's width
        for _ in range(8):  # under load a double click can land while the grid is still being drawn
            grid.scroll_into_view_if_needed()
            bb = grid.bounding_box()
            page.mouse.dblclick(bb["x"] + 0.86 * bb["width"], bb["y"] + 35 + 17)
            try:
                listbox.wait_for(timeout=5000)
                break
            except PlaywrightTimeout:
                page.keyboard.press("Escape")
                page.wait_for_selector(IDLE)
        listbox.get_by_role("option", name="stable", exact=True).click()
        page.get_by_text(re.compile("^Version 1 · reviewer")).click()  # leave the table: the edit is sent
        page.wait_for_selector(IDLE)
        click_until(page, "Sign", page.get_by_text("Signed by (unauthenticated) Ann"))
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.locator('[data-testid="stExpander"]').last.screenshot(path=str(ARTIFACTS / "ui_review_changes.png"))
        body = page.inner_text("body")
    assert "Traceback" not in body
    signed = [json.loads(p.read_text()) for p in (data / "reviews").rglob("signed-*.json")]
    assert len(signed) == 1
    effusion = next(c for c in signed[0]["changes"] if c["finding"] == "pleural_effusion")
    assert (effusion["ai_change"], effusion["action"], effusion["change"]) == ("cannot_compare", "changed", "stable")
