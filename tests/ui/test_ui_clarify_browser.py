"""The clarifying question in a real browser (Chromium + Playwright, the real app on loopback, tiny profile,
a shared NIH image): a misspelt finding ("is there pnuemothrx?") gets one short question and two buttons
(the finding the spelling is near, and the user's own words), and no tool runs; clicking the first button
sends its reading as the next turn, which is routed as a finding question about pneumothorax and answered
by the image tools; the conversation then goes on with a typed follow-up about the same finding.
"""

from __future__ import annotations

import os
import re
from typing import Any

import pytest
from test_ui_browser import ARTIFACTS, send_chat, streamlit_page, wait_turns_done
from ui_helpers import nih_png

from cxr_agent.settings import DEMO_WARNING

pytestmark = [pytest.mark.browser, pytest.mark.timeout(900)]
TIMEOUT_MS = 300_000
ASSISTANT = '[data-testid="stChatMessage"]:has([data-testid="stChatMessageAvatarAssistant"])'
CHOSEN = "Is there pneumothorax?"
OWN_WORDS = "Is there 'pnuemothrx'?"




def _steps(page: Any, turn: int) -> str:
    """The agent steps of one answered turn (its status box is collapsed: read the DOM text, not the view)."""
    return page.locator(ASSISTANT).nth(turn).evaluate("e => e.textContent")


def test_clarify_buttons_run_the_chosen_reading(ui_env, shared_data, test_data_dir, tmp_path):
    env = {
        **os.environ, **ui_env,
        "CXR_AGENT_DATA_DIR": str(test_data_dir),
        "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "CXR_AGENT_OFFLINE": "1",
        "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false",
        "CXR_AGENT_VERIFY_CONFLICTS": "false",
    }
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with streamlit_page(env, tmp_path, height=2400, timeout_ms=TIMEOUT_MS) as (page, _):
        page.get_by_text(DEMO_WARNING).wait_for()
        page.locator("input[type=file]").first.set_input_files(str(nih_png(shared_data)))
        page.get_by_text("Size:").first.wait_for()

        send_chat(page, "is there pnuemothrx?")
        wait_turns_done(page, 1)
        first = page.locator(ASSISTANT).nth(0)
        assert "Which of these did you mean?" in first.inner_text()
        buttons = first.get_by_role("button")
        labels = [b.inner_text().strip() for b in buttons.all() if b.inner_text().strip() in (CHOSEN, OWN_WORDS)]
        assert labels == [CHOSEN, OWN_WORDS]
        asked = _steps(page, 0)
        assert "Router: finding_question" in asked and "Reply written" in asked, asked
        assert "started" not in asked and "finished" not in asked, asked  # no tool ran on the guess

        first.get_by_role("button", name=CHOSEN).click()
        user_turns = page.locator('[data-testid="stChatMessage"]:has([data-testid="stChatMessageAvatarUser"])')
        user_turns.nth(1).wait_for(timeout=60_000)  # the click sent the reading as the next message
        wait_turns_done(page, 2)
        assert user_turns.nth(1).inner_text().strip().endswith(CHOSEN)
        chosen = _steps(page, 1)
        assert re.search(r"Router: finding_question about Pneumothorax (?:->|\u2192) tools: [^()]*\bvlm\b", chosen), chosen
        assert "classifier finished" in chosen and "vlm finished" in chosen, chosen
        assert "Which of these did you mean?" not in page.locator(ASSISTANT).nth(1).inner_text()

        send_chat(page, "where is it?")
        wait_turns_done(page, 3)
        follow = _steps(page, 2)
        assert "Router: locate about Pneumothorax" in follow, follow
        page.screenshot(path=str(ARTIFACTS / "ui_clarify.png"), full_page=True)
        body = page.inner_text("body")
    assert "Traceback" not in body
