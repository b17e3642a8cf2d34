"""Exports after a second upload, in a real browser (Chromium + Playwright, the real app on loopback, tiny
profile, two NIH images; re-asks off): a report on study A, then a report on study B; the reader picks a
study in the sidebar's export picker, and the DICOM SR and FHIR downloaded then describe that study's
decisions (as the app checkpointed them) against its own de-identified UID, whichever study the page shows.
The Markdown names for every turn the study it concerns, with each reply's headings nested under its turn.
"""

from __future__ import annotations

import io
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
from test_ui_browser import ARTIFACTS, IDLE, send_chat, streamlit_page, wait_turns_done
from test_ui_compact_reply_browser import TIMEOUT_MS

from cxr_agent.settings import DEMO_WARNING, Settings
from knowledge.evidence import Decision
from knowledge.vocabulary import display_name
from ui.evidence_table import CONFLICT_MARK, REVIEW_MARK

pytestmark = [pytest.mark.browser, pytest.mark.timeout(900)]
PICKER = '[data-testid="stSelectbox"]'
PICKER_LABEL = "Study to export (SR, FHIR)"


def _films(shared_data: Path) -> tuple[Path, Path]:
    images = sorted((shared_data / "nih_cxr14" / "images").glob("*.png"))
    return images[0], images[1]


def _checkpointed(data_dir: Path) -> dict[str, Any]:
    """The conversation's state values as the app checkpointed them after its latest turn."""
    from agents.memory.checkpointers import make_checkpointer

    saver = make_checkpointer(Settings(data_dir=data_dir, model_profile="tiny"))
    return next(iter(saver.list(None, limit=1))).checkpoint["channel_values"]


def _download(page: Any, label: str) -> bytes:
    with page.expect_download() as dl:
        page.get_by_role("button", name=label).first.click()  # a live-fragment rerun may show a stale copy beside it
    return Path(dl.value.path()).read_bytes()


def _pick(page: Any, number: int) -> None:
    """Choose "Study <number>" in the export picker and wait for the rerun it starts to finish (the
    download buttons carry the new study's files only then; the picker shows the choice before)."""
    page.evaluate("""() => {
        const app = document.querySelector('[data-testid="stApp"]');
        window.cxrRunChanges = 0;
        new MutationObserver(records => { window.cxrRunChanges += records.length; })
            .observe(app, {attributes: true, attributeFilter: ['data-test-script-state']});
    }""")
    control = page.locator(PICKER).filter(has_text=PICKER_LABEL)
    control.click()
    page.get_by_role("option", name=re.compile(rf"^Study {number}\b")).click()
    page.wait_for_function("window.cxrRunChanges > 0", timeout=TIMEOUT_MS)  # the rerun began
    page.wait_for_selector(IDLE, timeout=TIMEOUT_MS)  # and ended
    (ARTIFACTS / "ui_export_picker.html").write_text(control.inner_html())  # what it shows, for a failure
    shown = control.get_by_role("combobox").input_value()
    assert re.match(rf"Study {number}\b", shown), shown


def _fhir_notes(fhir: dict[str, Any]) -> dict[str, str]:
    return {o["resource"]["code"]["text"]: o["resource"]["note"][0]["text"] for o in fhir["entry"]
            if o["resource"]["resourceType"] == "Observation"}


def _check_fhir(text: str, uid: str, decisions: list[Decision]) -> None:
    assert uid in text  # the chosen study's de-identified UID
    notes = _fhir_notes(json.loads(text))
    assert set(notes) == {display_name(d.finding) for d in decisions}
    for d in decisions:
        note = notes[display_name(d.finding)]
        assert note.startswith(f"{display_name(d.finding)}: {d.status.value}, confidence {d.confidence:.2f}."), note
        assert ("Flagged for human review." in note) == d.needs_review, note


def _check_sr(data: bytes, uid: str, decisions: list[Decision]) -> None:
    import highdicom as hd
    import pydicom

    from tools.interop import codes as C

    sr = hd.sr.Comprehensive3DSR.from_dataset(pydicom.dcmread(io.BytesIO(data)))
    assert sr.StudyInstanceUID == uid
    groups = sr.content.get_image_measurement_groups()
    assert [g.finding_type for g in groups] == [C.finding_code(d.finding) for d in decisions]
    for g, d in zip(groups, decisions, strict=True):
        assert g.get_qualitative_evaluations()[0].value == C.STATUS_CODES[d.status.value]
        assert g.get_measurements()[0].value == pytest.approx(round(d.confidence * 100.0, 1))
        flags = {i.ConceptNameCodeSequence[0].CodeValue: i.ConceptCodeSequence[0].CodeMeaning
                 for i in g[0].ContentSequence if i.ValueType == "CODE"}
        assert flags["NEEDSREVIEW"] == ("Yes" if d.needs_review else "No"), (d.finding, flags)


def _turn_table(section: str) -> dict[str, dict[str, str]]:
    """Finding -> row of one turn's structured findings table in the Markdown export."""
    lines = [ln for ln in section.split("**Structured findings (this turn):**", 1)[1].strip().splitlines()
             if ln.startswith("|")]
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = [dict(zip(head, (c.strip() for c in ln.strip("|").split("|")), strict=False)) for ln in lines[2:]]
    return {r["Finding"]: r for r in rows}


def _check_markdown(md: str, per_turn: list[tuple[str, list[Decision]]]) -> None:
    """Each turn names its study ("Study 1", "Study 2": the page's labels) and lists that study's decisions;
    headings nest: the file's title, then "##" sections, "### Turn n", and a reply's own headings below."""
    levels = [len(m.group(1)) for m in re.finditer(r"^(#{1,6}) ", md, re.MULTILINE)]
    assert levels[0] == 1 and levels.count(1) == 1, levels
    head, *turns = re.split(r"^### Turn \d+$", md, flags=re.MULTILINE)
    assert [ln for ln in head.splitlines() if ln.startswith("## ")][-1] == "## Conversation"
    described = [ln[4:] for ln in head.split("## Studies (de-identified)", 1)[1].splitlines() if ln.startswith("### ")]
    assert [d.split(" ")[:2] for d in described] == [["Study", "1"], ["Study", "2"]]  # both, not the one on screen
    assert len(turns) == len(per_turn)
    for section, (label, decisions) in zip(turns, per_turn, strict=True):
        named = section.split("**Study:** ", 1)[1].split("\n", 1)[0]
        assert re.match(rf"{label}\b", named), (label, named)
        inner = [len(m.group(1)) for m in re.finditer(r"^(#{1,6}) ", section, re.MULTILINE)]
        assert inner and min(inner) >= 4, (inner, section[:600])  # the report's headings, under "### Turn n"
        table = _turn_table(section)
        assert set(table) == {display_name(d.finding) for d in decisions}
        for d in decisions:
            row = table[display_name(d.finding)]
            assert row["Decision"] == d.status.value and row["Confidence"] == f"{d.confidence:.2f}", row
            assert (row["Conflict"] in (CONFLICT_MARK, REVIEW_MARK)) == (d.conflict or d.needs_review), row


def test_exports_follow_the_study_picked_after_a_second_upload(ui_env, shared_data, tmp_path):
    from agents.memory.ledger import as_ledger, study_decisions
    from tools.ingestion.loader import load_study
    from tools.interop.sr import deidentified_source

    film_a, film_b = _films(shared_data)
    study_a, study_b = (load_study(f.read_bytes(), filename=f.name) for f in (film_a, film_b))
    uid = {"a": deidentified_source(study_a).StudyInstanceUID, "b": deidentified_source(study_b).StudyInstanceUID}
    data = tmp_path / "data"
    env = {**os.environ, **ui_env, "CXR_AGENT_DATA_DIR": str(data), "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "CXR_AGENT_OFFLINE": "1", "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false",
           "CXR_AGENT_VERIFY_CONFLICTS": "false", "CXR_AGENT_ROUTER_SEMANTIC": "false"}
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with streamlit_page(env, tmp_path, height=1100, width=1500, timeout_ms=TIMEOUT_MS) as (page, _):
        page.get_by_text(DEMO_WARNING).first.wait_for()
        upload = page.locator("input[type=file]").first
        upload.set_input_files(str(film_a))
        page.get_by_text("Size:").first.wait_for()
        send_chat(page, "Write a report")
        wait_turns_done(page, 1)
        assert page.locator(PICKER).filter(has_text=PICKER_LABEL).count() == 0  # one study: nothing to pick

        upload.set_input_files(str(film_b))
        page.get_by_text(re.compile(r"^Study 2")).first.wait_for()
        page.wait_for_selector(IDLE, timeout=TIMEOUT_MS)
        send_chat(page, "Write a report")
        wait_turns_done(page, 2)

        values = _checkpointed(data)
        ledger = as_ledger(values.get("ledger"))
        assert ledger is not None and ledger.study_id == study_b.id  # the page now shows study B
        decided = {"a": study_decisions(values, study_a.id), "b": study_decisions(values, study_b.id)}
        assert decided["a"] and decided["b"]
        # the two studies' exports differ, so an export of the wrong study cannot pass for the right one
        assert [(d.finding, d.status, round(d.confidence, 2), d.needs_review) for d in decided["a"]] != \
            [(d.finding, d.status, round(d.confidence, 2), d.needs_review) for d in decided["b"]]

        downloads: dict[str, dict[str, bytes]] = {}
        for key, number in (("a", 1), ("b", 2)):  # study A first: the picker starts on the page's study, B
            _pick(page, number)
            downloads[key] = {"md": _download(page, "Download report (Markdown)"),
                              "sr": _download(page, "Download DICOM SR"),
                              "fhir": _download(page, "Download FHIR JSON")}
        page.screenshot(path=str(ARTIFACTS / "ui_exports_two_studies.png"), full_page=True)

    for key in ("a", "b"):
        _check_sr(downloads[key]["sr"], uid[key], decided[key])
        _check_fhir(downloads[key]["fhir"].decode(), uid[key], decided[key])
        other = uid["b" if key == "a" else "a"]
        assert other not in downloads[key]["fhir"].decode()
        md = downloads[key]["md"].decode()
        (ARTIFACTS / f"ui_exports_two_studies_{key}.md").write_text(md)  # what was downloaded, for a failure
        _check_markdown(md, [("Study 1", decided["a"]), ("Study 2", decided["b"])])
