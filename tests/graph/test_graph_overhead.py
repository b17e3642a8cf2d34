"""The per-turn overhead work keeps behaviour: checkpoint bytes, tool handoffs, per-turn resets."""

from __future__ import annotations

import threading
import time

from graph_scripted import ScriptedVLM, classifier
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

from agents.memory.checkpointers import CHECKPOINT_TYPES, serializer
from agents.memory.ledger import Ask, StudyLedger, key_for
from agents.turn.tool_runner import call_with_timeout, shared_pool
from knowledge.evidence import Artifact, Box, Decision, Evidence, FindingCall, RetrievedReport, Status


def _state_values() -> dict:
    call = FindingCall(finding="cardiomegaly", status=Status.present, score=0.8, score_kind="op_norm",
                       source="classifier", box=Box(x1=0.1, y1=0.2, x2=0.5, y2=0.6), text="big heart", span=(0, 9))
    ev = Evidence(tool="classifier", calls=[call], latency_ms=3.5, meta={"op": [0.5, "x"], "status": Status.absent},
                  artifacts=[Artifact(kind="heatmap", finding="cardiomegaly", box=call.box)],
                  neighbors=[RetrievedReport(id="r1", score=0.9, text="Cardiomegaly.", labels=["cardiomegaly"])])
    dec = Decision(finding="cardiomegaly", status=Status.uncertain, confidence=0.5, agreeing=["classifier"],
                   disagreeing=["vlm"], conflict=True, calls=[call], box=call.box)
    return {
        "evidence": [ev, Evidence.failure("vlm", "down")],
        "decisions": [dec],
        "last_result": {"study_id": "s", "intent": "report", "decisions": [dec], "evidence": [ev]},
        "ledger": StudyLedger(study_id="s").record([(key_for("s", "classifier", Ask(kind="image"), ev), ev, None)]),
        "messages": [HumanMessage("hi", id="1"), AIMessage("reply", id="2", additional_kwargs={"cxr": {"a": [1]}})],
        "route": {"intent": "report", "tools": ["vlm"]},
        "status": Status.present,
    }


def test_serializer_fast_path_is_byte_identical_to_jsonplus_and_round_trips():
    stock = JsonPlusSerializer(allowed_msgpack_modules=[(t.__module__, t.__name__) for t in CHECKPOINT_TYPES])
    ours = serializer()
    for key, value in _state_values().items():
        data = ours.dumps_typed(value)
        assert data == stock.dumps_typed(value), key
        back = ours.loads_typed(data)
        assert back == value, key
    restored = ours.loads_typed(ours.dumps_typed(_state_values()["evidence"]))[0]
    assert type(restored) is Evidence and restored.calls[0].status is Status.present
    assert restored.meta["status"] is Status.absent and isinstance(restored.calls[0].box, Box)


def test_serializer_keeps_jsonplus_fallbacks():
    ours = serializer()
    assert ours.dumps_typed(None) == ("null", b"")
    assert ours.dumps_typed(b"\x00\x01") == ("bytes", b"\x00\x01")
    assert ours.loads_typed(ours.dumps_typed({1, 2})) == {1, 2}


def test_call_with_timeout_result_timeout_and_worker_reuse():
    ev = call_with_timeout("x", lambda: Evidence(tool="x", answer="a"), 5.0)
    assert ev.ok and ev.answer == "a" and ev.latency_ms is not None and ev.latency_ms >= 0
    before = threading.active_count()
    for _ in range(30):  # sequential calls reuse one idle worker instead of starting threads
        assert call_with_timeout("x", lambda: {"answer": "b"}, 5.0).answer == "b"
    assert threading.active_count() <= before + 1
    release = threading.Event()
    t0 = time.perf_counter()
    slow = call_with_timeout("slow", lambda: release.wait(10) and Evidence(tool="slow"), 0.2)
    assert not slow.ok and slow.error == "slow timed out after 0.2 s" and time.perf_counter() - t0 < 5
    release.set()  # the hung worker finishes later; its result is discarded and the pool still works
    assert call_with_timeout("y", lambda: None, 5.0).error == "y returned nothing"
    assert shared_pool().workers >= 1


def test_error_turn_after_a_report_does_not_reuse_the_stale_route_or_results(make_graph, thread, cxr_image):
    vlm, clf = ScriptedVLM(report="Cardiomegaly."), classifier({"cardiomegaly": 0.8})
    g = make_graph(vlm, clf)
    cfg = thread()
    ok = g.invoke({"messages": [("user", "Write a report")], "image": str(cxr_image)}, cfg)
    assert ok["route"].intent == "report" and ok["evidence"] and ok["decisions"]
    bad = g.invoke({"messages": [("user", "Write a report")], "image": b"junk", "image_name": "x.png"}, cfg)
    assert bad["route"] is None and bad["evidence"] == [] and bad["record"].decisions == []
    assert bad["decisions"] == ok["decisions"]  # the study's decisions stand: nothing bore on them
    assert bad["ingest_error"] and "I could not use that image" in bad["messages"][-1].content
    follow = g.invoke({"messages": [("user", "Is there cardiomegaly?")]}, cfg)
    assert follow["ingest_error"] is None and follow["route"].intent == "finding_question"
    assert "I could not use that image" not in follow["messages"][-1].content and vlm.calls == 2
