"""End to end in a real headless browser: `streamlit run ui/app.py` + Debian's Chromium via Playwright.

Uploads a real NIH PNG, asks for a report, waits for the reply and the overlay caption, and saves
a screenshot to tests/_artifacts/ui_report.png. Never runs `playwright install`: it drives the
system Chromium at /usr/bin/chromium and skips when that is absent.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from ui_helpers import APP, nih_png

from cxr_agent.settings import DEMO_WARNING

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "_artifacts"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--no-first-run", "--disable-quic", "--disable-sync",
    "--disable-dev-shm-usage",
]
IDLE = '[data-testid="stApp"][data-test-script-state="notRunning"]'
OVERLAY_DRAWN = re.compile(r"overlays: ([1-9]\d* box\(es\)|\d+ box\(es\), [1-9]\d* heatmap)")


TURN_DONE = re.compile(r"^Done in \d")


def send_chat(page: Any, text: str) -> None:
    """Type a message into the chat box and send it."""
    box = page.get_by_test_id("stChatInputTextArea")
    box.fill(text)
    box.press("Enter")


def click_until(page: Any, button: str, shown: Any, *, tries: int = 3, timeout_ms: int = 20_000) -> None:
    """Click ``button`` until ``shown`` (a locator) appears. A click that lands while the page's live fragment
    reruns can be dropped, and the rerun may briefly show a stale copy of the button beside the new one."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    for attempt in range(tries):
        page.wait_for_selector(IDLE)
        page.get_by_role("button", name=button).first.click()
        try:
            shown.wait_for(timeout=timeout_ms)
            return
        except PlaywrightTimeout:
            if attempt == tries - 1:
                raise


def wait_turns_done(page: Any, n: int, timeout_s: float = 600, idle_timeout_ms: int = 300_000) -> None:
    """Until ``n`` turns show their "Done in" status and the page's rerun after the last has finished."""
    deadline = time.monotonic() + timeout_s
    while (done := page.get_by_text(TURN_DONE).count()) < n:
        if time.monotonic() > deadline:
            pytest.fail(f"{done} of {n} turns done; the page says:\n{page.inner_text('body')[-3000:]}")
        time.sleep(0.25)
    page.wait_for_selector(IDLE, timeout=idle_timeout_ms)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"streamlit exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"streamlit did not answer /_stcore/health in {timeout_s:.0f} s:\n{log.read_text()[-3000:]}")


@contextmanager
def streamlit_page(env: dict[str, str], tmp_path: Path, *, height: int = 3000, timeout_ms: int = 60_000,
                   extra_args: tuple[str, ...] = (), app: Path = APP,
                   width: int = 1500) -> Iterator[tuple[Any, subprocess.Popen]]:
    """`streamlit run ui/app.py` on a free loopback port with ``env`` (HOME is a fresh dir under ``tmp_path``),
    and a headless Chromium page opened on it: yields (page, the Streamlit process); both are stopped after.
    Skips without Debian's Chromium or the playwright package."""
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed at /usr/bin/chromium (`apt-get install -y chromium` or `make browser`)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "streamlit.log"
    cmd = [sys.executable, "-m", "streamlit", "run", str(app), "--server.address", "127.0.0.1",
           "--server.port", str(port), "--server.headless", "true", "--browser.gatherUsageStats", "false", *extra_args]
    with log.open("w") as fh:
        proc = subprocess.Popen(cmd, env={**env, "HOME": str(home)}, stdout=fh, stderr=subprocess.STDOUT,
                                cwd=str(APP.parents[1]))
    try:
        _wait_healthy(url, proc, log)
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
                                        env={**os.environ, "HOME": str(home)})
            try:
                page = browser.new_page(viewport={"width": width, "height": height})
                page.set_default_timeout(timeout_ms)
                page.goto(url)
                yield page, proc
            finally:
                browser.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.mark.browser
def test_report_in_a_real_browser(ui_env, shared_data, test_data_dir, tmp_path):
    env = {
        **os.environ, **ui_env,
        "CXR_AGENT_DATA_DIR": str(test_data_dir),
        "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "CXR_AGENT_OFFLINE": "1",
        "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false",
        # Random weights disagree on many findings; the AppTest suite covers verification, so the
        # browser run skips the re-asks to stay quick.
        "CXR_AGENT_VERIFY_CONFLICTS": "false",
    }
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "ui_report.png"
    with streamlit_page(env, tmp_path) as (page, _):
        page.get_by_text(DEMO_WARNING).wait_for()
        png = nih_png(shared_data)
        page.locator("input[type=file]").first.set_input_files(str(png))
        page.get_by_text("Size:").first.wait_for()
        box = page.get_by_test_id("stChatInputTextArea")
        box.fill("Write a report")
        box.press("Enter")
        # The live status shows each agent, then "Done in ..." once the reply is written.
        page.get_by_text(re.compile(r"^Done in \d")).first.wait_for(timeout=300_000)
        page.wait_for_selector(IDLE, timeout=120_000)  # the rerun after the turn has finished
        page.get_by_text(OVERLAY_DRAWN).first.wait_for(timeout=60_000)
        page.get_by_test_id("stDataFrame").first.wait_for()  # the evidence table (drawn on a canvas) and its legend
        page.get_by_text("Classifier: operating-point-normalised score", exact=False).first.wait_for()
        # Show the top of the page (and of the chat pane): every scrolled element back to 0.
        page.evaluate("document.activeElement && document.activeElement.blur()")
        page.evaluate("document.querySelectorAll('*').forEach(e => { if (e.scrollTop > 0) e.scrollTop = 0; })")
        page.get_by_text(DEMO_WARNING).first.scroll_into_view_if_needed()
        time.sleep(1.0)  # let images finish painting
        page.screenshot(path=str(shot), full_page=True)
        page.get_by_test_id("stImage").first.screenshot(path=str(ARTIFACTS / "ui_overlay.png"))
        body = page.inner_text("body")
    assert shot.stat().st_size > 20_000
    assert "Traceback" not in body
    assert "Write a report" in body and "Evidence" in body
    assert "decision-support research tool, not a diagnosis" in body
