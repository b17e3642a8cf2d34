"""Pure UI logic: the evidence table, stream handling, exports and per-session state."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from ui_helpers import ScriptedGraph, sample_decisions, sample_evidence, scripted_report_graph

from cxr_agent.settings import DEMO_WARNING, DISCLAIMER
from tools.ingestion.study import CorruptFile, Study
from ui import session as S
from ui.evidence_table import (
    COL_CLASSIFIER,
    COL_CONFLICT,
    COL_DECISION,
    COL_FINDING,
    COL_OTHER,
    COL_RETRIEVAL,
    COL_VERIFICATION,
    COL_VLM,
    CONFLICT_MARK,
    build_rows,
    prior_reports,
    style_conflicts,
    to_dataframe,
    tool_summary,
)
from ui.exports import conversation_markdown, findings_json
from ui.turn import TurnResult, describe_event, run_turn

# --- evidence table ------------------------------------------------------------------------------


def test_rows_one_per_finding_conflicts_first_with_every_source():
    rows = build_rows(sample_evidence(), sample_decisions())
    names = [r[COL_FINDING] for r in rows]
    assert names == ["Pneumothorax", "Pleural effusion", "Cardiomegaly"]  # conflict, present, absent
    ptx, eff, cm = rows
    assert ptx[COL_CONFLICT] == CONFLICT_MARK and ptx["_conflict"] is True
    assert ptx[COL_VERIFICATION] == "VLM re-ask: uncertain"
    assert eff[COL_VLM] == "present (box)"
    assert eff[COL_CLASSIFIER] == "0.81 -> present"
    assert eff[COL_RETRIEVAL] == "6/10 priors"  # fraction 0.6 of 10 neighbours
    assert "present" in eff[COL_DECISION] and eff["Confidence"] == 0.86
    assert cm[COL_RETRIEVAL] == "" and cm[COL_CONFLICT] == ""
    # Retrieval-only findings are priors, not rows.
    assert "Emphysema" not in names


def test_classifier_column_is_never_called_a_probability():
    assert "probability" not in COL_CLASSIFIER.lower()
    assert "0.5 = threshold" in COL_CLASSIFIER


def test_rows_accept_dicts_and_skip_garbage():
    evs = [e.model_dump(mode="json") for e in sample_evidence()] + [{"not": "evidence"}]
    decs = [d.model_dump(mode="json") for d in sample_decisions()]
    assert build_rows(evs, decs) == build_rows(sample_evidence(), sample_decisions())


def test_undecided_image_finding_and_custom_tool_column():
    from knowledge.evidence import Evidence, FindingCall, Status

    evs = [Evidence(tool="rib_counter", calls=[FindingCall(finding="fracture", status=Status.present, score=0.9,
                                                           source="rib_counter")])]
    rows = build_rows(evs, [])
    assert rows[0][COL_FINDING] == "Fracture"
    assert rows[0][COL_DECISION] == "not decided"
    assert rows[0][COL_OTHER] == "rib_counter: present 0.90"


def test_verification_from_stream_events_fills_the_column():
    decs = [d.model_copy(update={"verification": None}) for d in sample_decisions()]
    rows = build_rows(sample_evidence(), decs, verifications={"pneumothorax": "unresolved"})
    assert rows[0][COL_VERIFICATION] == "unresolved"


def test_dataframe_and_styler_highlight_the_conflict_row():
    rows = build_rows(sample_evidence(), sample_decisions())
    df = to_dataframe(rows)
    assert "_finding_id" not in df.columns and COL_CLASSIFIER in df.columns
    assert COL_OTHER not in df.columns  # no custom tool called a finding: empty column dropped
    html = style_conflicts(df).to_html()
    assert "rgba(255, 80, 80, 0.25)" in html


def test_prior_reports_sorted_and_tool_summary():
    priors = prior_reports(sample_evidence())
    assert len(priors) == 10 and priors[0].score >= priors[-1].score
    summary = {t["tool"]: t for t in tool_summary(sample_evidence())}
    assert summary["rib_counter"]["ok"] is False and "timed out" in summary["rib_counter"]["error"]
    assert summary["vlm"]["latency_ms"] == 1234


# --- stream handling ---------------------------------------------------------------------------


def test_describe_events():
    assert "report" in describe_event({"event": "route", "intent": "report", "tools": ["vlm"], "reason": "r"})
    assert describe_event({"event": "tool_end", "tool": "vlm", "ok": True, "latency_ms": 12.4}) == ":material/check_circle: vlm finished in 12 ms"
    failed = describe_event({"event": "tool_end", "tool": "vlm", "ok": False, "latency_ms": 5, "error": "no weights"})
    assert failed.startswith(":material/error: vlm failed") and "no weights" in failed
    assert "Pneumothorax" in describe_event({"event": "reconcile", "decisions": 2, "conflicts": ["pneumothorax"]})
    assert describe_event({"event": "token", "tool": "vlm", "text": "x"}) is None
    assert "index" in describe_event({"event": "tool_start", "tool": "retrieval", "building_index": True})


def test_run_turn_collects_progress_tokens_reply_and_state():
    g = scripted_report_graph()
    lines, tokens, replies = [], [], []
    t = run_turn(g, "Write a report", thread_id="t1", extra_inputs={"study_id": "a" * 64},
                 on_progress=lines.append, on_token=tokens.append, on_reply=replies.append)
    inputs, config, modes = g.calls[0]
    assert inputs == {"messages": [("user", "Write a report")], "study_id": "a" * 64}
    assert config == {"configurable": {"thread_id": "t1"}} and set(modes) == {"custom", "updates"}
    assert tokens == ["Small ", "effusion."] and t.streamed_chars == len("Small effusion.")
    assert replies == ["Small left pleural effusion [vlm, classifier]."]
    assert t.error is None and t.reply == replies[0] and t.intent == "report"
    assert t.failed_tools == ["rib_counter"] and t.verifications == {"pneumothorax": "VLM re-ask: uncertain"}
    assert any("building the prior-report index" in x for x in lines)
    assert len(t.evidence) == 4 and len(t.decisions) == 3 and t.study_id == "a" * 64
    assert lines == t.progress and any(x.startswith(":material/alt_route: Router") for x in lines)


def test_run_turn_never_raises():
    g = scripted_report_graph()
    broken = ScriptedGraph(g.items, g.values, fail_at=3)
    t = run_turn(broken, "Write a report", thread_id="t1")
    assert t.error is not None and "boom in node" in t.error and t.reply == ""
    assert len(t.progress) == 2  # route and vlm start came before the failure


# --- exports ------------------------------------------------------------------------------------


def _turns() -> list[TurnResult]:
    t = run_turn(scripted_report_graph(), "Write a report", thread_id="t1")
    err = TurnResult(user_text="and now?", error="RuntimeError: boom")
    return [t, err]


def test_markdown_export_has_disclaimer_facts_reply_and_table():
    md = conversation_markdown(_turns(), study_facts={"View": "PA", "Size": "10 x 20 px"}, demo=True, thread_id="t1")
    assert DISCLAIMER in md and DEMO_WARNING in md
    assert "**View**: PA" in md and "Write a report" in md
    assert "Small left pleural effusion \\[vlm, classifier\\]." in md  # brackets escaped: rendered as written
    assert "| Pneumothorax |" in md and "6/10 priors" in md and CONFLICT_MARK in md
    assert "_(error: RuntimeError: boom)_" in md
    assert DEMO_WARNING not in conversation_markdown(_turns(), demo=False)


def test_markdown_export_fetches_and_links_nothing():
    """Model and user text are defanged in the file as on screen: no image beacon, link or HTML survives."""
    evil = TurnResult(user_text="see <img src=x> www.evil.test", reply="Effusion. ![x](http://evil.test/?q=1) "
                      "[click](javascript:alert(1)) <script>x</script>")
    md = conversation_markdown([evil])
    unescaped = re.compile(r"(?<!\\)(?:\[|\]|<|https?:|javascript:|www\.)")  # what makes links, images, HTML
    body = md.split("## Conversation", 1)[1]
    assert not unescaped.findall(body), unescaped.findall(body)
    assert "Effusion." in body and "\\<script>" in body  # shown as written, not run


def test_json_export_round_trips_decisions_and_evidence():
    doc = json.loads(findings_json(_turns(), study_facts={"View": "PA"}, demo=False, thread_id="t1"))
    assert doc["disclaimer"] == DISCLAIMER and doc["demo_warning"] is None and doc["study"] == {"View": "PA"}
    first = doc["turns"][0]
    assert [d["finding"] for d in first["decisions"]] == ["pleural_effusion", "pneumothorax", "cardiomegaly"]
    assert first["decisions"][1]["conflict"] is True
    assert {e["tool"] for e in first["evidence"]} == {"vlm", "classifier", "retrieval", "rib_counter"}
    assert first["boxes"][0]["finding"] == "pleural_effusion"
    assert doc["turns"][1]["error"] == "RuntimeError: boom"


# --- session state ------------------------------------------------------------------------------


def _study() -> Study:
    return Study.from_array(np.linspace(0, 1, 64 * 48, dtype=np.float32).reshape(48, 64), view="PA",
                            source_format="dicom", metadata={"modality": "CR", "body_part": "CHEST", "pixel_spacing_mm": [0.168, 0.168],
                                      "patient_age": "60-69", "inverted": True})


def test_sessions_are_independent_and_reset():
    a, b = {}, {}
    S.init_session(a)
    S.init_session(b)
    assert a[S.K_THREAD] != b[S.K_THREAD]
    tid = a[S.K_THREAD]
    S.init_session(a)
    assert a[S.K_THREAD] == tid  # idempotent across reruns
    assert S.ingest_upload(a, "x.dcm", b"bytes", loader=lambda data, filename=None: _study()) is None
    assert a[S.K_STUDY] is not None and b[S.K_STUDY] is None
    key = S.uploader_key(a)
    a[S.K_TURNS].append(TurnResult(user_text="hi"))
    S.new_conversation(a)
    assert a[S.K_THREAD] != tid and a[S.K_TURNS] == [] and a[S.K_STUDY] is None and a[S.K_PENDING] is None
    assert S.uploader_key(a) != key  # the uploader widget resets too


def test_ingest_refusal_keeps_previous_study_and_is_not_repeated():
    state: dict = {}
    S.init_session(state)
    S.ingest_upload(state, "good.dcm", b"good", loader=lambda data, filename=None: _study())
    calls = []

    def refuse(data, filename=None):
        calls.append(filename)
        raise CorruptFile("the file is empty or truncated")

    msg = S.ingest_upload(state, "bad.png", b"bad", loader=refuse)
    assert msg == "The uploaded file was not loaded: the file is empty or truncated"  # no file name echoed
    assert state[S.K_STUDY_NAME] == "Study 1 · PA"  # the previous study stays, named by a label
    assert S.ingest_upload(state, "bad.png", b"bad", loader=refuse) == msg and calls == ["bad.png"]  # once


def test_unexpected_ingest_error_is_a_short_message():
    state: dict = {}
    S.init_session(state)

    def crash(data, filename=None):
        raise KeyError("internal")

    msg = S.ingest_upload(state, "odd.png", b"odd", loader=crash)
    assert msg.startswith("The uploaded file could not be read") and "Traceback" not in msg and "odd" not in msg


class _Store:
    def __init__(self, fail=False):
        self.fail, self.put_ids = fail, []

    def put(self, study):
        if self.fail:
            raise OSError("disk full")
        self.put_ids.append(study.id)
        return study.id


def test_new_study_goes_to_the_store_once_and_a_failed_store_is_a_typed_error():
    import pytest

    state: dict = {}
    S.init_session(state)
    S.ingest_upload(state, "x.dcm", b"raw-dicom", loader=lambda data, filename=None: _study())
    assert state[S.K_PENDING] == _study().id  # queued by id: the raw bytes are not kept
    store = _Store()
    inputs = S.take_study_inputs(state, store)
    assert inputs == {"study_id": _study().id} and store.put_ids == [_study().id]
    assert S.take_study_inputs(state, store) == {}  # sent once
    S.restore_pending(state, _study().id)
    with pytest.raises(S.StudyNotSaved, match=r"could not be saved \(OSError\), so it was not sent"):
        S.take_study_inputs(state, _Store(fail=True))  # never falls back to sending the bytes
    with pytest.raises(S.StudyNotSaved, match="not available"):
        S.take_study_inputs(state, None)
    assert S.take_study_inputs(state, store) == {"study_id": _study().id}  # still queued after the failures


def test_study_facts_are_deidentified_display_fields():
    facts = S.study_facts(_study())
    assert facts["View"] == "PA" and facts["Size"] == "64 x 48 px" and facts["Source format"] == "DICOM"
    assert facts["Modality"] == "CR" and facts["Body part"] == "CHEST" and facts["Age group"] == "60-69"
    assert facts["Pixel spacing (mm)"] == "0.168 x 0.168" and facts["Display"] == "inverted (MONOCHROME1)"


@pytest.mark.parametrize("study_id", ["a" * 64, None])
def test_collect_overlays_prefers_latest_turn(study_id):
    t1 = TurnResult(user_text="r", cxr={"study_id": "a" * 64, "boxes": [
        {"finding": "nodule", "source": "vlm", "x1": 0.1, "y1": 0.1, "x2": 0.2, "y2": 0.2}],
        "heatmaps": [{"finding": "edema", "uri": "/nope.npy"}]})
    t2 = TurnResult(user_text="where", cxr={"study_id": "a" * 64, "boxes": [
        {"finding": "nodule", "source": "vlm", "x1": 0.3, "y1": 0.3, "x2": 0.4, "y2": 0.4},
        {"finding": "nodule", "source": "vlm", "x1": 0.6, "y1": 0.3, "x2": 0.7, "y2": 0.4}]})
    other = TurnResult(user_text="x", cxr={"study_id": "b" * 64, "boxes": [
        {"finding": "mass", "source": "vlm", "x1": 0.3, "y1": 0.3, "x2": 0.4, "y2": 0.4}]})
    boxes, heats, latest = S.collect_overlays([t1, t2, other] if study_id else [t1, t2], study_id)
    # The later turn's two nodule boxes replace the first turn's; another study's boxes are excluded.
    assert [(b.key, b.x1) for b in boxes] == [("Nodule (vlm)", 0.3), ("Nodule (vlm) #2", 0.6)]
    assert [h.finding for h in heats] == ["edema"]
    assert latest == {"Nodule (vlm)", "Nodule (vlm) #2"}


def test_collect_overlays_names_a_heatmaps_source_from_the_turns_evidence():
    """The reply's heatmaps name no source; the tool whose Evidence carries the file does. Without
    that evidence the heatmap is shown as from an unknown source, not attributed to a tool."""
    from knowledge.evidence import Artifact, Evidence

    made = TurnResult(user_text="r", cxr={"heatmaps": [{"finding": "edema", "uri": "/a.npy"}]},
                      evidence=[Evidence(tool="densenet2", artifacts=[Artifact(kind="heatmap", finding="edema", uri="/a.npy")])])
    bare = TurnResult(user_text="r", cxr={"heatmaps": [{"finding": "nodule", "uri": "/b.npy"}]})
    _, heats, _ = S.collect_overlays([made, bare], None)
    assert [h.key for h in heats] == ["Edema (densenet2)", "Nodule (unknown source)"]


# --- model status -------------------------------------------------------------------------------


def test_model_status_lines_show_demo_present_and_missing_with_fix(monkeypatch, tmp_path):
    import tools.catalogue as cm
    from cxr_agent.settings import Settings
    from tools.base import WeightStatus
    from ui.model_status import index_present, model_status_lines

    monkeypatch.setattr(cm, "weight_statuses", lambda s: [
        WeightStatus("classifier: densenet121-res224-all", "classifier", False, "/w/x.pt",
                     fix="cxr-agent models download", detail="file missing"),
        WeightStatus("vlm: RadVLM", "vlm", True, "/hf/radvlm"),
    ])
    settings = Settings(model_profile="tiny", data_dir=tmp_path)
    lines = model_status_lines(settings)
    assert [(x.state, x.fix) for x in lines] == [("demo", None), ("missing", "cxr-agent models download"),
                                                 ("present", None)]
    assert "`cxr-agent models download`" in lines[1].markdown() and "file missing" in lines[1].markdown()
    assert model_status_lines(Settings(model_profile="real", data_dir=tmp_path))[0].state == "missing"

    def broken(s):
        raise RuntimeError("no")

    monkeypatch.setattr(cm, "weight_statuses", broken)
    assert model_status_lines(settings)[-1].state == "unknown"
    assert index_present(settings) is False
    (settings.resolved_index_dir / "sub").mkdir(parents=True)
    (settings.resolved_index_dir / "sub" / "index.faiss").write_bytes(b"x")
    assert index_present(settings) is True


def test_tool_load_states_reads_lazy_tools():
    from types import SimpleNamespace

    from tools.registry import LazyTool
    from ui.model_status import tool_load_states

    lazy = LazyTool("vlm", "tools.vlm:VLMTool", {"report"}, image_source=True, settings=None)
    custom = SimpleNamespace(name="rib_counter")
    assert tool_load_states({"vlm": lazy, "rib_counter": custom}) == {"vlm": False, "rib_counter": True}
    assert tool_load_states(object()) == {}
    assert vars(lazy)["_tool"] is None and vars(lazy)["_error"] is None  # asking did not load the model


def test_progress_events_go_to_on_work_not_to_the_step_list():
    items = [
        ("custom", {"event": "tool_start", "tool": "retrieval", "building_index": True}),
        ("custom", {"event": "progress", "tool": "retrieval", "stage": "embedding", "done": 256, "total": 3927}),
        ("custom", {"event": "progress", "tool": "retrieval", "stage": "embedding", "done": 512, "total": 3927}),
        ("custom", {"event": "tool_end", "tool": "retrieval", "ok": True, "latency_ms": 5.0, "error": None}),
        ("custom", {"event": "reply", "text": "done"}),
    ]
    g = ScriptedGraph(items, {"messages": []})
    work: list[tuple[str, str, int, int | None]] = []
    t = run_turn(g, "Show similar cases", thread_id="t1", on_work=lambda *a: work.append(a))
    assert work == [("retrieval", "embedding", 256, 3927), ("retrieval", "embedding", 512, 3927)]
    assert len(t.progress) == 3 and not any("512" in line for line in t.progress)  # start, end, reply


def test_a_run_that_starts_mid_ingest_reads_the_file_itself():
    """Streamlit's fast reruns: the chat message's run starts while the upload's run is decoding.
    It must not see the file as done (and answer as if no image were there)."""
    import threading

    state: dict = {}
    S.init_session(state)
    started, release = threading.Event(), threading.Event()

    def slow(data, filename=None):
        started.set()
        release.wait(10)
        return _study()

    upload_run = threading.Thread(target=S.ingest_upload, args=(state, "x.dcm", b"raw"), kwargs={"loader": slow})
    upload_run.start()
    assert started.wait(10)
    # The message's run, while the upload's run is still decoding:
    assert S.ingest_upload(state, "x.dcm", b"raw", loader=lambda data, filename=None: _study()) is None
    assert S.take_study_inputs(state, _Store()) == {"study_id": _study().id}
    release.set()
    upload_run.join(10)
    assert state[S.K_STUDY].id == _study().id


def test_the_page_names_studies_by_a_label_never_the_file_name():
    state: dict = {}
    S.init_session(state)
    S.ingest_upload(state, "DOE_JOHN_MRN123.dcm", b"a", loader=lambda data, filename=None: _study())
    assert state[S.K_STUDY_NAME] == "Study 1 · PA"
    lateral = Study.from_array(np.eye(64, dtype=np.float32), view="LATERAL")
    S.ingest_upload(state, "DOE_JOHN_MRN123_lat.dcm", b"b", loader=lambda data, filename=None: lateral)
    assert state[S.K_STUDY_NAME] == "Study 2 · lateral"
    unknown = Study.from_array(np.eye(64, dtype=np.float32) * 0.5)
    S.ingest_upload(state, "DOE.png", b"c", loader=lambda data, filename=None: unknown)
    assert state[S.K_STUDY_NAME] == "Study 3" and "DOE" not in repr(dict(state))


def test_facts_say_when_burned_in_text_was_redacted_or_the_extension_was_wrong():
    meta = {"redaction": {"method": "tesseract-ocr", "redacted": True, "regions": 3, "laterality_markers_kept": 1},
            "format_note": "The file's extension says JPEG but its content is PNG; it was read as PNG."}
    facts = S.study_facts(Study.from_array(np.eye(64, dtype=np.float32), metadata=meta))
    assert facts["Burned-in text"] == "redacted (3 region(s), OCR)" and "content is PNG" in facts["File"]
    plain = S.study_facts(Study.from_array(np.eye(64, dtype=np.float32)))
    assert "Burned-in text" not in plain and "File" not in plain


def test_evidence_columns_follow_declared_roles_not_names():
    """A custom report writer fills the VLM column and a custom scorer the classifier column once
    the graph's roles are given; without them they are just "other tools"."""
    from agents.replying.roles import ToolRoles
    from knowledge.evidence import Evidence, FindingCall, Status
    from tools.base import ToolCapabilities

    evidence = [
        Evidence(tool="scribe", calls=[FindingCall(finding="cardiomegaly", status=Status.present, source="scribe")]),
        Evidence(tool="densenet2", calls=[FindingCall(finding="cardiomegaly", status=Status.present, score=0.81,
                                                      score_kind="op_norm", source="densenet2")]),
    ]
    caps = {"scribe": ToolCapabilities(frozenset({"report"}), image_source=True, writes_report=True),
            "densenet2": ToolCapabilities(frozenset({"report"}), image_source=True)}
    roles = ToolRoles.from_capabilities(caps)
    (row,) = build_rows(evidence, [], roles=roles)
    assert (row[COL_VLM], row[COL_CLASSIFIER], row[COL_OTHER]) == ("present", "0.81 -> present", "")
    (plain,) = build_rows(evidence, [])
    assert (plain[COL_VLM], plain[COL_CLASSIFIER]) == ("", "")
    assert plain[COL_OTHER] == "scribe: present; densenet2: present 0.81"
    assert [t["image_source"] for t in tool_summary(evidence, roles)] == [True, True]
    assert [t["image_source"] for t in tool_summary(evidence)] == [False, False]


def test_turn_reads_typed_events_and_ignores_foreign_chunks():
    items = [
        ("custom", {"event": "tool_start", "tool": "vlm", "purpose": "verify", "findings": ["pneumothorax", "nodule"]}),
        ("custom", {"event": "not_ours", "message": "ignored"}),
        ("custom", "not a mapping"),
        ("custom", {"event": "reply", "text": "done"}),
        ("updates", {"respond": {"messages": [], "record": {"reply": "done"}}}),  # a record as a server sends it
    ]
    t = run_turn(ScriptedGraph(items, {"messages": []}), "hi", thread_id="t1")
    assert t.progress[0] == ":material/hourglass_top: vlm started (re-asking about Pneumothorax, Nodule)"
    assert len(t.progress) == 2 and t.error is None and t.reply == "done"


def test_flagged_rows_come_first_in_the_evidence_table():
    """A decision flagged for review without a conflict between sources (e.g. a re-ask that stayed
    uncertain) is shown at the top, with the conflicts, not among the absent findings."""
    from knowledge.evidence import Decision, Status
    from ui.evidence_table import build_rows

    decisions = [
        Decision(finding="cardiomegaly", status=Status.present, confidence=0.9, agreeing=["classifier"]),
        Decision(finding="pneumothorax", status=Status.absent, confidence=0.6, needs_review=True,
                 agreeing=["classifier"]),
    ]
    rows = build_rows(sample_evidence(), decisions)
    assert [r["_finding_id"] for r in rows[:2]] == ["pneumothorax", "cardiomegaly"]


def test_the_upload_limit_shown_is_within_what_ingestion_takes():
    from tools.ingestion.loader import MAX_FILE_BYTES
    from ui.study_panel import UPLOAD_LIMIT_MB

    assert 0 < UPLOAD_LIMIT_MB * 2**20 <= MAX_FILE_BYTES
