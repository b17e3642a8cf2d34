"""The custom stream events the UI codes against (stream_mode="custom")."""

from __future__ import annotations

from graph_scripted import ScriptedVLM, classifier, retrieval

from knowledge.evidence import Box, Evidence, FindingCall, Status


def test_custom_events_contract(make_graph, thread, cxr_image):
    vlm = ScriptedVLM(report="Cardiomegaly.", verify=lambda f: Evidence(
        tool="vlm", calls=[FindingCall(finding=f, status=Status.absent, source="vlm")]))
    g = make_graph(vlm, classifier({"cardiomegaly": 0.2}, {"cardiomegaly": Box(x1=0.3, y1=0.4, x2=0.7, y2=0.8)}),
                   retrieval([["cardiomegaly"]]))
    cfg = thread()
    events = [e for e in g.stream({"messages": [("user", "Write a report")], "image": str(cxr_image)}, cfg,
                                  stream_mode="custom")]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "route" and kinds[-1] == "reply"
    route = events[0]
    assert route["intent"] == "report" and route["tools"] == ["vlm", "classifier", "retrieval"] and route["reason"]
    assert "finding" in route
    starts = [e["tool"] for e in events if e["event"] == "tool_start"]
    ends = [e for e in events if e["event"] == "tool_end"]
    assert sorted(starts[:3]) == ["classifier", "retrieval", "vlm"]
    for e in ends:
        assert set(e) >= {"tool", "ok", "latency_ms", "error"} and isinstance(e["ok"], bool)
    tokens = [e for e in events if e["event"] == "token"]
    assert tokens and all(t["tool"] == "vlm" and isinstance(t["text"], str) for t in tokens)
    # retrieval starts only after the VLM branch finished its report
    assert kinds.index("tool_start", kinds.index("token")) > 0
    assert starts.index("retrieval") > starts.index("vlm")
    rec = next(e for e in events if e["event"] == "reconcile")
    assert rec["conflicts"] == ["cardiomegaly"] and rec["decisions"] >= 1
    ver = next(e for e in events if e["event"] == "verify")
    assert ver["finding"] == "cardiomegaly" and ver["outcome"] == "resolved"
    final = g.get_state(cfg).values["messages"][-1].content
    assert events[-1]["text"] == final


def test_long_tool_work_is_streamed_as_progress_events(make_graph, thread, cxr_image):
    """A tool reporting long work (the retrieval index's first build) reaches the UI as progress events."""
    from graph_scripted import ScriptedTool

    def slow_build(request):
        for done in (0, 128, 256):
            request.on_progress("embedding", done, 256)
        return Evidence(tool="atlas", answer="built")

    atlas = ScriptedTool("atlas", {"similar_cases"}, slow_build, image_source=False)
    g = make_graph(atlas)
    events = list(g.stream({"messages": [("user", "Show me similar prior cases")], "image": str(cxr_image)},
                           thread(), stream_mode="custom"))
    progress = [e for e in events if e["event"] == "progress"]
    assert [(e["tool"], e["stage"], e["done"], e["total"]) for e in progress] == [
        ("atlas", "embedding", 0, 256), ("atlas", "embedding", 128, 256), ("atlas", "embedding", 256, 256)]
    kinds = [e["event"] for e in events]
    assert kinds.index("tool_start") < kinds.index("progress") < kinds.index("tool_end")


def test_retrieval_start_is_marked_as_an_index_build_when_none_exists(make_graph, thread, cxr_image, tmp_path):
    """The UI announces the slow first-use build only because the graph says so on tool_start."""
    from graph_scripted import ScriptedTool

    def start_of_retrieval(tool):
        g = make_graph(tool, index_dir=tmp_path / "no-index-here")
        events = g.stream({"messages": [("user", "Show me similar prior cases")], "image": str(cxr_image)},
                          thread(), stream_mode="custom")
        return next(e for e in events if e["event"] == "tool_start" and e["tool"] == "retrieval")

    fresh = ScriptedTool("retrieval", {"similar_cases"}, Evidence(tool="retrieval"), image_source=False)
    fresh.ready = False  # like RetrievalTool before its index is open
    assert start_of_retrieval(fresh).get("building_index") is True
    opened = ScriptedTool("retrieval", {"similar_cases"}, Evidence(tool="retrieval"), image_source=False)
    opened.ready = True
    assert "building_index" not in start_of_retrieval(opened)
