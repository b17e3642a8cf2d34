"""A working day in a real browser (Chromium + Playwright, the real app on loopback, one server per module):
a message sent while a report runs is queued and answered after it; Stop ends a turn with a visible note
and no answer kept; a reload reopens the conversation; the sidebar lists, reopens and deletes this
browser's conversations, and another browser cannot open one by its id; the page is tidy at 1440x900 and
1280x720 (elements inside their containers, overlay chips shown whole, the real upload limit, no Deploy
button, counters and popovers reset with a new conversation).

The report turns run an extra custom tool (tests/ui/held_app.py) held on a threading.Event that the test
releases, so "while a report runs" is exact, never a fixed delay.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

import pytest
from test_ui_browser import IDLE, TURN_DONE, send_chat, streamlit_page, wait_turns_done
from ui_helpers import nih_png

from cxr_agent.settings import DEMO_WARNING

HELD_APP = Path(__file__).resolve().parent / "held_app.py"
QUEUED = "Queued: answered when the running turn finishes."
STOPPED = "Stopped: no answer was kept for this message."
TIMEOUT_MS = 300_000
STOP = ".st-key-cxr_stop [data-testid^=stBaseButton]"

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def day(ui_env, shared_data, tmp_path_factory):
    """One app server for the module; yields (page, hold dir)."""
    root = tmp_path_factory.mktemp("day")
    hold = root / "hold"
    hold.mkdir()
    env = {**os.environ, **ui_env, "CXR_AGENT_DATA_DIR": str(root / "data"), "CXR_TEST_HOLD_DIR": str(hold),
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "CXR_AGENT_OFFLINE": "1",
           "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false", "CXR_AGENT_VERIFY_CONFLICTS": "false"}
    with streamlit_page(env, root, height=900, width=1440, timeout_ms=TIMEOUT_MS, app=HELD_APP,
                        extra_args=("--server.fileWatcherType", "none")) as (page, _):
        page.get_by_text(DEMO_WARNING).wait_for()
        page.wait_for_selector(IDLE)
        yield page, hold


def _wait_file(path: Path, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        assert time.monotonic() < deadline, f"{path.name} never appeared"
        time.sleep(0.1)


def _done(page: Any) -> int:
    return page.get_by_text(TURN_DONE).count()


def _until(check, what: str, timeout_s: float = 60) -> None:
    """Poll ``check()`` (a click's rerun starts a moment after the click returns)."""
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def _chat_users(page: Any) -> list[str]:
    user = page.locator('[data-testid="stChatMessage"]:has([data-testid="stChatMessageAvatarUser"])')
    return [t.strip() for t in user.locator('[data-testid="stChatMessageContent"]').all_inner_texts()]


def test_a_message_sent_during_a_report_is_queued_then_answered(day, shared_data):
    page, hold = day
    page.locator("input[type=file]").first.set_input_files(str(nih_png(shared_data)))
    page.get_by_text("Size:").first.wait_for()
    send_chat(page, "Write a report")
    _wait_file(hold / "started-1")  # the report is running, held inside its custom tool
    send_chat(page, "Where is the effusion?")
    page.get_by_text(QUEUED).wait_for()  # shown as queued, while the report is still running
    page.locator(STOP).first.wait_for()
    assert _done(page) == 0
    (hold / "release-1").write_text("")
    wait_turns_done(page, 2, timeout_s=240)  # the report was not cut off: both turns are answered, in order
    assert page.get_by_text(QUEUED).count() == 0
    users = _chat_users(page)
    assert users[-2:] == ["Write a report", "Where is the effusion?"], users


def test_stop_ends_a_turn_with_a_note_and_keeps_no_answer(day):
    page, hold = day
    send_chat(page, "Write a report again")
    _wait_file(hold / "started-2")
    page.locator(STOP).first.click()
    page.get_by_text(STOPPED).wait_for()  # at once, while the tool is still held
    (hold / "release-2").write_text("")
    page.wait_for_selector(IDLE, timeout=TIMEOUT_MS)
    assert _done(page) == 2


def test_a_reload_reopens_the_conversation_with_its_study(day):
    page, _ = day
    url = page.url
    assert "c=" in url and "browser=" in url
    page.reload()
    page.wait_for_selector(IDLE, timeout=TIMEOUT_MS)
    page.get_by_text("Size:").first.wait_for()  # the study is back
    assert _chat_users(page) == ["Write a report", "Where is the effusion?", "Write a report again"]
    assert page.get_by_text(STOPPED).count() == 1  # the stopped turn has no answer stored
    page.get_by_text("Evidence", exact=True).first.wait_for()


def test_a_long_reply_opens_at_its_top(day):
    page, hold = day
    before = _done(page)  # turns reopened after the reload show no "Done in" status
    send_chat(page, "Write a report, once more")
    _wait_file(hold / "started-3")
    (hold / "release-3").write_text("")
    wait_turns_done(page, before + 1, timeout_s=240)
    time.sleep(1.5)  # the pane's own scrolling settles
    top, pane_top, pane_bottom, tall = page.evaluate("""() => {
        const pane = document.querySelector('.st-key-cxr_chat_pane');
        const users = pane.querySelectorAll('[data-testid="stChatMessage"]:has([data-testid="stChatMessageAvatarUser"])');
        const all = pane.querySelectorAll('[data-testid="stChatMessage"]');
        const last = users[users.length - 1], p = pane.getBoundingClientRect(), top = last.getBoundingClientRect().top;
        return [top, p.top, p.bottom, all[all.length - 1].getBoundingClientRect().bottom - top];
    }""")
    assert tall > pane_bottom - pane_top  # the exchange is taller than the pane ...
    assert pane_top - 1 <= top < pane_bottom, (top, pane_top, pane_bottom)  # ... and opens at its question


def _overflow(page: Any, child: str, parent: str) -> list[str]:
    """Elements matching ``child`` whose box pokes more than 1 px out of the sides of their closest ``parent``
    (cut off at its edge; above or below is scrolling, which the panes do on purpose)."""
    return page.evaluate(
        """([child, parent]) => [...document.querySelectorAll(child)].flatMap(e => {
             const p = e.closest(parent); if (!p) return [child + ' outside ' + parent];
             const a = e.getBoundingClientRect(), b = p.getBoundingClientRect();
             if (a.width === 0) return [];
             return (a.left < b.left - 1 || a.right > b.right + 1)
               ? [child + ' ' + JSON.stringify([a.left, a.right]) + ' out of ' + JSON.stringify([b.left, b.right])] : [];
           })""", [child, parent])


def _cut_chips(page: Any) -> dict[str, Any]:
    """The overlay pickers' chips above the image: how many, and those whose name is cut short (an ellipsis:
    the text is wider than its box) or whose box pokes out of its field or its column."""
    return page.evaluate(
        """() => { const tags = [...document.querySelectorAll('[data-testid="stMultiSelect"] [data-tag]')];
             const cut = tags.flatMap(t => {
               const name = t.querySelector('span[title]'), a = t.getBoundingClientRect();
               const f = t.closest('[data-testid="stMultiSelectTagsContainer"]').getBoundingClientRect();
               const c = t.closest('[data-testid="stColumn"]').getBoundingClientRect();
               const bad = name.scrollWidth > name.clientWidth + 1 || a.left < f.left - 1 || a.right > f.right + 1
                 || a.bottom > f.bottom + 1 || a.right > c.right + 1;
               return bad ? [name.title + ' ' + JSON.stringify([name.scrollWidth, name.clientWidth, a.left, a.right,
                                                                 a.bottom, f.left, f.right, f.bottom, c.right])] : [];
             });
             return {count: tags.length, cut: cut}; }""")


@pytest.mark.parametrize(("width", "height"), [(1440, 900), (1280, 720)])
def test_the_page_is_tidy(day, width, height, tmp_path):
    page, _ = day
    page.set_viewport_size({"width": width, "height": height})
    page.wait_for_selector(IDLE, timeout=TIMEOUT_MS)
    time.sleep(0.5)  # layout settles after the resize
    page.screenshot(path=str(tmp_path / f"day_{width}x{height}.png"), full_page=True)
    problems = []
    problems += _overflow(page, '[data-testid="stSidebar"] [data-testid="stCode"]', '[data-testid="stSidebarContent"]')
    problems += _overflow(page, '[data-testid="stSidebar"] [data-testid="stButton"]', '[data-testid="stSidebarContent"]')
    problems += _overflow(page, '[data-testid="stDataFrame"]', '[data-testid="stMainBlockContainer"]')
    problems += _overflow(page, '[data-testid="stImage"] img', '[data-testid="stColumn"]')
    problems += _overflow(page, '[data-testid="stChatMessage"]', '[data-testid="stColumn"]')
    assert not problems, problems
    chips = _cut_chips(page)  # the overlay chips above the image, each with its whole name
    assert chips["count"] > 0 and not chips["cut"], chips
    assert page.evaluate("document.scrollingElement.scrollWidth <= window.innerWidth + 1")  # no sideways page scroll
    table = page.get_by_test_id("stDataFrame").first.bounding_box()
    assert table["height"] <= 11 * 35 + 10  # a long table scrolls inside its panel
    assert page.get_by_test_id("stAppDeployButton").count() == 0
    assert "500MB per file" in page.get_by_test_id("stFileUploaderDropzoneInstructions").first.inner_text()


def test_the_sidebar_lists_reopens_and_deletes_this_browsers_conversations(day, shared_data):
    page, _ = day
    page.set_viewport_size({"width": 1440, "height": 900})
    sidebar = page.get_by_test_id("stSidebar")
    first = sidebar.locator(".st-key-cxr_conv_0")
    first.get_by_text("Write a report").wait_for()
    assert "1 study" in first.inner_text() and "deleted on" in first.inner_text()  # the retention date
    old_url = page.url
    sidebar.get_by_role("button", name="New conversation").click()
    _until(lambda: _chat_users(page) == [], "the new conversation is empty")
    page.wait_for_selector(IDLE)
    page.locator("input[type=file]").first.set_input_files(str(nih_png(shared_data)))
    page.get_by_text(re.compile(r"^Study 1( · \w+)? - overlays")).first.wait_for()  # the counter started again
    # Another browser with only the conversation's id opens nothing
    other = page.context.browser.new_page(viewport={"width": 1440, "height": 900})
    thread = re.search(r"[?&]c=([^&]+)", old_url).group(1)
    other.goto(re.sub(r"\?.*", f"?c={thread}", old_url))
    other.wait_for_selector(IDLE, timeout=TIMEOUT_MS)
    other.get_by_text("Conversations you start are listed here").wait_for()
    assert _chat_users(other) == [] and other.get_by_text("Write a report").count() == 0
    other.close()
    # Reopen from the list, then delete it from the list
    first.get_by_role("button", name="Open").click()
    _until(lambda: _chat_users(page)[:2] == ["Write a report", "Where is the effusion?"], "reopened")
    page.wait_for_selector(IDLE)
    first.get_by_role("button", name="Delete", exact=True).click()
    page.get_by_role("button", name="Delete now").last.click()
    page.get_by_text("Conversations you start are listed here").wait_for()
    _until(lambda: _chat_users(page) == [], "the deleted conversation left the page")
    page.wait_for_selector(IDLE)
    assert page.get_by_text("Deletes its messages and the studies").count() == 0  # no popover left open
