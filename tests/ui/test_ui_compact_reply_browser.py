"""The compact report reply beside the evidence panel, in a real browser (Chromium + Playwright, the real
app on loopback, tiny profile, a shared NIH image; re-asks off, so the report's conflict stays flagged):

- "Write a report": the reply opens with "Needs your review", then the report, then one compact table;
  outside the quoted report each finding is named once; the evidence panel lists every decision the
  study holds after the turn (read from the app's own checkpoint), each row reached by scrolling inside
  the panel's table;
- a follow-up finding question; then the Markdown and FHIR exports, downloaded in the browser, match
  the study's decisions after the follow-up, and a finding the report flagged is still flagged there.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

import pytest
from test_ui_browser import ARTIFACTS, send_chat, streamlit_page, wait_turns_done
from ui_helpers import nih_png

from cxr_agent.settings import DEMO_WARNING, Settings
from knowledge.vocabulary import display_name
from ui.evidence_table import CONFLICT_MARK, REVIEW_MARK

pytestmark = [pytest.mark.browser, pytest.mark.timeout(900)]
TIMEOUT_MS = 300_000
ASSISTANT = '[data-testid="stChatMessage"]:has([data-testid="stChatMessageAvatarAssistant"])'
GRID = '[data-testid="stDataFrame"]'




def _study_decisions(data_dir: Path) -> list[Any]:
    """The study's decisions as the app checkpointed them after its latest turn (one conversation)."""
    from agents.memory.checkpointers import make_checkpointer
    from ui.evidence_table import as_decisions

    saver = make_checkpointer(Settings(data_dir=data_dir, model_profile="tiny"))
    latest = next(iter(saver.list(None, limit=1)))
    return as_decisions(latest.checkpoint["channel_values"].get("decisions"))


def _reply(page: Any) -> Any:
    """The latest assistant reply's markdown (not its collapsed step list)."""
    return page.locator(ASSISTANT).last.locator('[data-testid="stMarkdownContainer"]').filter(
        has_text=DEMO_WARNING).last


def _grid_findings(page: Any) -> tuple[list[str], int, int]:
    """The Finding column of the evidence table, every row, reached by scrolling inside the table (the
    grid draws on a canvas; its accessibility table holds the rows in view), its row count, and how many
    rows were in view before scrolling."""
    grid = page.locator(GRID).first
    grid.scroll_into_view_if_needed()
    (ARTIFACTS / "ui_evidence_grid.html").write_text(grid.inner_html())  # what the grid held, for a failure
    rows = int(grid.locator("table[role=grid]").get_attribute("aria-rowcount") or 0) - 1  # less the header
    seen: dict[int, str] = {}
    in_view = grid.locator("table[role=grid] tbody tr").count()
    scroller = grid.locator(".dvn-scroller").first
    for _ in range(60):
        for tr in grid.locator("table[role=grid] tbody tr").all():
            index = int(tr.get_attribute("aria-rowindex") or 0)
            seen[index] = tr.locator("td").first.inner_text().strip()
        if len(seen) >= rows:
            break
        scroller.evaluate("e => { e.scrollTop += 4 * 35; }")
        time.sleep(0.3)
    return [seen[i] for i in sorted(seen)], rows, in_view


def _download(page: Any, label: str) -> str:
    with page.expect_download() as dl:
        page.get_by_role("button", name=label).first.click()  # a live-fragment rerun may show a stale copy beside it
    return Path(dl.value.path()).read_text()


def _last_markdown_table(md: str) -> dict[str, dict[str, str]]:
    """Finding -> row of the last turn's structured findings table in the Markdown export."""
    section = md.rsplit("**Structured findings (this turn):**", 1)[1]
    lines = [ln for ln in section.strip().splitlines() if ln.startswith("|")]
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = [dict(zip(head, (c.strip() for c in ln.strip("|").split("|")), strict=False)) for ln in lines[2:]]
    return {r["Finding"]: r for r in rows}


def test_compact_reply_evidence_panel_and_exports_after_a_follow_up(ui_env, shared_data, tmp_path):
    from bench.replies import namings

    data = tmp_path / "data"
    env = {**os.environ, **ui_env, "CXR_AGENT_DATA_DIR": str(data), "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "CXR_AGENT_OFFLINE": "1", "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false",
           "CXR_AGENT_VERIFY_CONFLICTS": "false"}
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with streamlit_page(env, tmp_path, height=1100, width=1500, timeout_ms=TIMEOUT_MS) as (page, _):
        page.get_by_text(DEMO_WARNING).first.wait_for()
        page.locator("input[type=file]").first.set_input_files(str(nih_png(shared_data)))
        page.get_by_text("Size:").first.wait_for()
        send_chat(page, "Write a report")
        wait_turns_done(page, 1)
        decisions = _study_decisions(data)
        flagged = [d.finding for d in decisions if d.needs_review]

        # The reply: Needs your review, then the report, then one table; each finding named once outside.
        reply = _reply(page)
        text = reply.inner_text()
        page.screenshot(path=str(ARTIFACTS / "ui_compact_reply.png"), full_page=True)
        review = text.index("Needs your review")
        report = re.search(r"^Report$", text, re.MULTILINE)
        other = text.index("Other findings")
        assert report is not None and review < report.start() < other, text
        assert text[:review].strip() == DEMO_WARNING  # nothing before it but the demo warning
        assert reply.locator("table").count() == 1
        outside = text[:report.start()] + text[other:]
        # re-asks are off: the note on the conflicts left unchecked names none of them again
        assert "not re-checked: verification is turned off" in outside
        named = namings(outside)
        assert flagged and decisions
        for d in decisions:
            if d.finding != "no_finding":
                assert named.get(d.finding) == 1, (d.finding, named, outside)

        # The evidence panel: a row for every decision the study holds, each reached inside the table.
        found, rows, in_view = _grid_findings(page)
        assert rows == len(decisions) and len(found) == rows, (found, rows)
        assert in_view < rows  # the panel stays its fixed height: the last rows were reached by scrolling
        assert sorted(found) == sorted(display_name(d.finding) for d in decisions)

        # A follow-up about one finding, then the exports as the browser downloads them.
        send_chat(page, "Is there cardiomegaly?")
        wait_turns_done(page, 2)
        after = _study_decisions(data)
        assert {d.finding for d in after} == {d.finding for d in decisions}
        still = {d.finding for d in after if d.needs_review}
        assert set(flagged) <= still  # a follow-up settles no conflict it was not asked about
        md = _download(page, "Download report (Markdown)")
        fhir = json.loads(_download(page, "Download FHIR JSON"))

    table = _last_markdown_table(md)
    assert set(table) == {display_name(d.finding) for d in after}
    for d in after:
        row = table[display_name(d.finding)]
        assert row["Decision"] == d.status.value and row["Confidence"] == f"{d.confidence:.2f}"
        assert (row["Conflict"] in (CONFLICT_MARK, REVIEW_MARK)) == (d.conflict or d.needs_review), row
    notes = {o["resource"]["code"]["text"]: o["resource"]["note"][0]["text"] for o in fhir["entry"]
             if o["resource"]["resourceType"] == "Observation"}
    assert set(notes) == {display_name(d.finding) for d in after}
    for d in after:
        note = notes[display_name(d.finding)]
        assert note.startswith(f"{display_name(d.finding)}: {d.status.value}, confidence {d.confidence:.2f}.")
        assert ("Flagged for human review." in note) == d.needs_review, note
