"""Comparing with a prior in a real browser (Chromium + Playwright, the real app on loopback, tiny profile):
NIH patient 5567's two films, ordered by follow_up (15: ``_025``, then 16: ``_000``), not by file name. The
reader names the prior with the page's control; the reply compares with it, and the two films are shown
side by side, each with its own overlays."""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path

import pytest
from test_ui_browser import ARTIFACTS, IDLE, send_chat, streamlit_page, wait_turns_done

from cxr_agent.settings import DEMO_WARNING

pytestmark = [pytest.mark.browser, pytest.mark.timeout(900)]
TIMEOUT_MS = 300_000
ASSISTANT = '[data-testid="stChatMessage"]:has([data-testid="stChatMessageAvatarAssistant"])'


def _patient_films(shared_data: Path, patient: str) -> list[Path]:
    """The patient's films, oldest first by the notes' follow_up number."""
    root = shared_data / "nih_cxr14"
    films = []
    with (root / "labels.csv").open() as fh:
        for row in csv.DictReader(fh):
            notes = dict(kv.split("=", 1) for kv in row["notes"].split("; ") if "=" in kv)
            if notes.get("patient_id") == patient:
                films.append((int(notes["follow_up"]), root / row["filename"]))
    return [path for _, path in sorted(films)]




def test_the_reader_names_the_prior_and_sees_both_films_side_by_side(ui_env, shared_data, tmp_path):
    prior, current = _patient_films(shared_data, "5567")
    assert (prior.name, current.name) == ("00005567_025.png", "00005567_000.png")
    env = {**os.environ, **ui_env, "CXR_AGENT_DATA_DIR": str(tmp_path / "data"), "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "CXR_AGENT_OFFLINE": "1", "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false",
           "CXR_AGENT_VERIFY_CONFLICTS": "false", "CXR_AGENT_ROUTER_SEMANTIC": "false"}
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with streamlit_page(env, tmp_path, height=1600, width=1500, timeout_ms=TIMEOUT_MS) as (page, _):
        page.get_by_text(DEMO_WARNING).first.wait_for()
        upload = page.locator("input[type=file]").first
        upload.set_input_files(str(prior))
        page.get_by_text("Size:").first.wait_for()
        send_chat(page, "Is there a pleural effusion?")
        wait_turns_done(page, 1)
        assert page.get_by_text("Prior study (for comparisons)").count() == 0  # one study: nothing to choose

        upload.set_input_files(str(current))
        page.get_by_text(re.compile(r"^Study 2")).first.wait_for()
        page.wait_for_selector(IDLE, timeout=TIMEOUT_MS)
        control = page.locator('[data-testid="stSelectbox"]').filter(has_text="Prior study (for comparisons)")
        control.wait_for()
        control.click()
        page.get_by_role("option", name=re.compile(r"^Study 1")).click()
        page.wait_for_selector(IDLE, timeout=TIMEOUT_MS)
        (ARTIFACTS / "ui_compare_control.html").write_text(control.inner_html())  # what it shows, for a failure

        send_chat(page, "Is the pleural effusion worse than before?")
        wait_turns_done(page, 2)
        page.screenshot(path=str(ARTIFACTS / "ui_compare.png"), full_page=True)
        reply = page.locator(ASSISTANT).last.inner_text()
        assert "Compared with the prior study" in reply and "the study you named as the prior" in reply, reply
        assert "Not confirmed to be the same patient" in reply  # PNGs carry no headers
        page.get_by_text("Compared: prior and current").wait_for()
        captions = page.locator('[data-testid="stImageCaption"]').all_inner_texts()
        assert any(c.startswith("Prior · Study 1") for c in captions), captions
        assert any(c.startswith("Current · Study 2") for c in captions), captions
        assert any(c.startswith("Prior · Study 1") and "1 heatmap(s)" in c for c in captions), captions


def test_two_dicom_films_loaded_together_are_compared_with_their_interval(ui_env, shared_data, tmp_path):
    from test_ui_compare_logic import _dicom

    source = shared_data / "dicom" / "CR-MONO1-10-chest.dcm"
    files = [tmp_path / "current.dcm", tmp_path / "prior.dcm"]  # the current film chosen first
    files[0].write_bytes(_dicom(source, day="20260301", seed=1))
    files[1].write_bytes(_dicom(source, day="20260110", seed=2))
    env = {**os.environ, **ui_env, "CXR_AGENT_DATA_DIR": str(tmp_path / "data"), "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "CXR_AGENT_OFFLINE": "1", "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false",
           "CXR_AGENT_VERIFY_CONFLICTS": "false", "CXR_AGENT_ROUTER_SEMANTIC": "false"}
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with streamlit_page(env, tmp_path, height=1600, width=1500, timeout_ms=TIMEOUT_MS) as (page, _):
        page.get_by_text(DEMO_WARNING).first.wait_for()
        page.locator("input[type=file]").nth(1).set_input_files([str(f) for f in files])
        page.get_by_text(re.compile("Ordered by their headers: the prior was taken 50 days before")).wait_for()
        wait_turns_done(page, 1)  # the prior's full read, sent by the page
        send_chat(page, "Is it worse than before?")
        wait_turns_done(page, 2)
        page.screenshot(path=str(ARTIFACTS / "ui_compare_pair.png"), full_page=True)
        reply = page.locator(ASSISTANT).last.inner_text()
        assert "Compared with the prior study" in reply and "taken 50 days earlier" in reply, reply
        assert "Not confirmed to be the same patient" not in reply  # same patient id (salted hashes) in both headers
        page.get_by_text("Compared: prior and current").wait_for()
        captions = page.locator('[data-testid="stImageCaption"]').all_inner_texts()
        assert any(c.startswith("Prior · Study 1") for c in captions), captions
        assert any(c.startswith("Current · Study 2") for c in captions), captions
