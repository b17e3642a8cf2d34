"""The Streamlit app, driven by streamlit.testing.v1.AppTest against the REAL graph (tiny profile).

One module-scoped session uploads a real NIH PNG and asks for a report (the expensive part: models
load and the prior-report index is built on first use); later tests continue that conversation.
Tests that share it run in file order.
"""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest
from ui_helpers import APP, dicom_file, nih_png

from cxr_agent.settings import DEMO_WARNING, DISCLAIMER
from knowledge.markdown import defang
from ui import session as S
from ui.evidence_table import COL_CLASSIFIER
from ui.exports import conversation_markdown, findings_json

TIMEOUT = 300  # the first report loads the tiny models and builds the index


def new_app() -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def upload(at: AppTest, name: str, data: bytes, mime: str) -> AppTest:
    at.file_uploader[0].upload(name, data, mime)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def settle(at: AppTest) -> AppTest:
    """Let the session's worker thread finish its turns, then draw the page again (a browser's live
    pane would refresh itself; AppTest runs no timers)."""
    try:
        worker = at.session_state[S.K_WORKER]
    except KeyError:
        return at
    assert worker.wait_idle(TIMEOUT), "the turn did not finish"
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def ask(at: AppTest, text: str) -> AppTest:
    at.chat_input[0].set_value(text)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return settle(at)


def texts(elements) -> list[str]:
    return [str(e.value) for e in elements]


def page_text(at: AppTest) -> str:
    parts = texts(at.markdown) + texts(at.caption) + texts(at.error) + texts(at.warning) + texts(at.info)
    parts += [e.label for e in at.get("expander")] + [e.label for e in at.get("status")]
    return "\n".join(parts)


def captions(at: AppTest) -> list[str]:
    return [c for img in at.image for c in img.captions]


@pytest.fixture(scope="module")
def reported(app_env, shared_data) -> AppTest:
    """A session with a real PNG uploaded and one report turn done."""
    at = new_app()
    png = nih_png(shared_data)
    upload(at, png.name, png.read_bytes(), "image/png")
    return ask(at, "Write a report")


def test_demo_warning_and_disclaimer_always_visible(app_env):
    at = new_app()
    assert at.warning[0].value == DEMO_WARNING  # first element on the page
    assert DISCLAIMER in texts(at.info)
    sidebar = "\n".join(texts(at.sidebar.markdown))
    assert "Demo (tiny) models" in sidebar
    assert "Prior-report index" in sidebar
    assert not at.image and not at.chat_message


def test_upload_real_png_shows_image_and_facts(app_env, shared_data):
    png = nih_png(shared_data)
    at = upload(new_app(), png.name, png.read_bytes(), "image/png")
    assert not at.error
    # The page names the study by a short label, never by the uploaded file name.
    assert len(at.image) == 1 and captions(at)[0].startswith("Study 1")
    assert png.name not in page_text(at) and png.stem not in "\n".join(captions(at))
    facts = page_text(at)
    assert "Size: **1024 x 1024 px**" in facts and "Source format: **PNG**" in facts
    assert at.session_state[S.K_STUDY].original_size == (1024, 1024)


def test_upload_real_dicom_shows_deidentified_facts(app_env, shared_data):
    dcm = dicom_file(shared_data)
    at = upload(new_app(), dcm.name, dcm.read_bytes(), "application/dicom")
    assert not at.error and len(at.image) == 1
    facts = page_text(at)
    for expected in ("View: **PA**", "Source format: **DICOM**", "Modality: **CR**", "Body part: **CHEST**"):
        assert expected in facts
    # The header's patient name/id (a UUID here) never reaches the page.
    assert "16d7f894" not in facts and "16d7f894" not in "\n".join(texts(at.sidebar.markdown))


def test_refused_file_shows_the_message_not_a_traceback(app_env):
    at = upload(new_app(), "notes.png", b"this is a text file, not a radiograph\n" * 20, "image/png")
    assert len(at.error) == 1
    msg = at.error[0].value
    assert msg.startswith("The uploaded file was not loaded:") and "Traceback" not in msg and "notes" not in msg
    assert not at.image and at.session_state[S.K_STUDY] is None


def test_report_turn_streams_progress_reply_and_evidence(reported):
    at = reported
    assert not at.error, texts(at.error)
    msgs = at.chat_message
    assert [m.name for m in msgs] == ["user", "assistant"]
    assert msgs[0].markdown[0].value == "Write a report"
    turn = at.session_state[S.K_TURNS][0]
    assert turn.error is None and turn.reply and turn.intent == "report"
    # the chat shows the final reply, defanged (model and corpus text never render as links or images)
    assert defang(turn.reply).strip() in [t.strip() for t in texts(msgs[1].markdown)]
    # Live progress from the graph's stream: router, each tool, reconciliation.
    steps = "\n".join(turn.progress)
    assert "Router: **report**" in steps and "vlm finished" in steps and "classifier finished" in steps
    assert "Reconciler:" in steps
    assert turn.streamed_chars > 0, "the VLM's tokens should stream into the chat while it writes"
    status = list(at.get("status"))
    assert len(status) == 1 and status[0].label.startswith("Done in") and status[0].state == "complete"
    # Evidence panel: findings x sources table, op-point wording, priors.
    assert len(at.dataframe) == 1
    df = at.dataframe[0].value
    assert COL_CLASSIFIER in df.columns and len(df) == len(turn.decisions) > 0
    assert "Evidence" in texts(at.subheader)
    priors = [e.label for e in at.get("expander") if e.label.startswith("#1 - similarity")]
    assert priors, "similar prior reports should be listed (retrieval ran on the small test corpus)"


def test_followup_locate_draws_overlays_that_toggle(reported):
    at = ask(reported, "Where is the pleural effusion?")
    assert [m.name for m in at.chat_message] == ["user", "assistant", "user", "assistant"]
    turn = at.session_state[S.K_TURNS][-1]
    assert turn.error is None and turn.intent == "locate"
    boxes, heats, _ = S.collect_overlays(at.session_state[S.K_TURNS], at.session_state[S.K_STUDY].id)
    assert boxes or heats, "a locate turn should give a box or a heatmap to draw"
    cap = captions(at)[0]
    assert "overlays:" in cap and cap != f"{at.session_state[S.K_STUDY_NAME]} - overlays: 0 box(es), 0 heatmap(s)"
    # Toggle everything off: the caption (what is drawn) follows.
    for ms in at.multiselect:
        ms.set_value([])
    at.run()
    assert captions(at)[0].endswith("overlays: 0 box(es), 0 heatmap(s)")
    # No stray values on the page (Streamlit "magic" writes bare expressions).
    assert "None" not in texts(at.markdown) + texts(at.text)
    # The evidence panel now shows the follow-up's evidence.
    assert any("Where is the pleural effusion?" in c for c in texts(at.caption))


def test_downloads_carry_the_conversation(reported):
    at = reported
    labels = [b.label for b in at.download_button]
    assert labels == ["Download report (Markdown)", "Download findings (JSON)",
                      "Download DICOM SR", "Download FHIR JSON"]  # the report turn has reconciled findings
    turns = at.session_state[S.K_TURNS]
    md = conversation_markdown(turns, demo=True)
    assert turns[0].reply.strip()[:60] in md and DEMO_WARNING in md
    assert '"decisions"' in findings_json(turns)


def test_two_sessions_do_not_share_state(reported, shared_data):
    a = reported
    b = new_app()
    assert not b.chat_message and not b.image
    assert b.session_state[S.K_THREAD] != a.session_state[S.K_THREAD]
    dcm = dicom_file(shared_data)
    upload(b, dcm.name, dcm.read_bytes(), "application/dicom")
    a.run()
    assert a.session_state[S.K_STUDY_NAME] == "Study 1" and b.session_state[S.K_STUDY_NAME] == "Study 1 · PA"
    assert len(a.chat_message) == 4 and not b.chat_message


def test_new_upload_mid_conversation_switches_the_study(reported, shared_data):
    at = reported
    old_id = at.session_state[S.K_STUDY].id
    dcm = dicom_file(shared_data)
    at.file_uploader[0].set_value((dcm.name, dcm.read_bytes(), "application/dicom"))
    at.run()
    new_id = at.session_state[S.K_STUDY].id
    assert new_id != old_id and "Source format: **DICOM**" in page_text(at)
    # Until the next turn, the evidence shown is the old study's, and the page says so.
    assert any("previously loaded study" in c for c in texts(at.caption))
    ask(at, "Where is the pleural effusion?")
    turn = at.session_state[S.K_TURNS][-1]
    assert turn.error is None and turn.study_id == new_id  # the graph now works on the new study
    assert len(at.chat_message) == 6


def test_unexpected_graph_error_keeps_the_conversation(reported, monkeypatch):
    from langgraph.graph.state import CompiledStateGraph

    def broken_stream(self, *args, **kwargs):
        yield ("custom", {"event": "route", "intent": "chat", "tools": ["vlm"], "reason": "test"})
        raise RuntimeError("simulated node crash")

    at = reported
    earlier = len(at.session_state[S.K_TURNS])
    assert earlier >= 3
    monkeypatch.setattr(CompiledStateGraph, "stream", broken_stream)
    ask(at, "and the heart?")
    monkeypatch.undo()
    assert any("This turn failed" in e and "simulated node crash" in e for e in texts(at.error))
    assert len(at.chat_message) == 2 * (earlier + 1)  # the earlier turns are all still there
    assert at.session_state[S.K_TURNS][-1].error


def test_new_conversation_resets_everything(reported):
    at = reported
    old_thread, old_key = at.session_state[S.K_THREAD], S.uploader_key(at.session_state)
    at.sidebar.button[0].click()
    at.run()
    assert not at.exception
    assert at.session_state[S.K_THREAD] != old_thread and S.uploader_key(at.session_state) != old_key
    assert at.session_state[S.K_TURNS] == [] and at.session_state[S.K_STUDY] is None
    assert not at.chat_message and not at.image and not at.dataframe and not at.download_button
    assert at.warning[0].value == DEMO_WARNING
