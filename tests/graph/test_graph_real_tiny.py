"""The graph over the REAL built-in tools under the tiny profile (random-weight VLM and classifier,
a real FAISS index over IU reports with a hashing test embedder), on a real radiograph.

Outputs of random-weight models are meaningless, so these tests check wiring and contracts:
every tool ran and returned Evidence, reports were labelled, calls carry their score kinds,
heatmaps and boxes reach the UI payload, every reply carries the demo warning.
"""

from __future__ import annotations

import pytest
from hashing_embedder import HashingModel

from agents.memory.ledger import study_decisions
from cxr_agent.settings import DEMO_WARNING, DISCLAIMER, Settings


@pytest.fixture(scope="module")
def real_graph(tmp_path_factory):
    from graph import build_graph
    from tools.retrieval import RetrievalTool
    from tools.retrieval.corpus import iu_xray_reports
    from tools.retrieval.embedder import Embedder
    from tools.retrieval.index import ReportIndex

    root = tmp_path_factory.mktemp("real-tiny")
    s = Settings(model_profile="tiny", offline=True, data_dir=root, checkpointer_url="memory", vlm_device="cpu",
                 classifier_device="cpu", vlm_max_new_tokens=16, index_dir=root / "index", retrieval_k=5,
                 tool_timeout_s=600)  # first model builds are slow on a loaded CPU
    index = ReportIndex.build(list(iu_xray_reports(limit=40)), s, index_dir=root / "index",
                              embedder=Embedder("hashing-test", HashingModel(), "cpu"))
    return build_graph(s, tools=[RetrievalTool(s, index=index)], plugins=False)


def test_all_intents_with_real_tiny_tools(real_graph, cxr_image):
    g = real_graph
    cfg = {"configurable": {"thread_id": "real-tiny"}}
    events = list(g.stream({"messages": [("user", "Write a report")], "image": str(cxr_image)}, cfg,
                           stream_mode="custom"))
    out = g.get_state(cfg).values
    by = {e.tool: e for e in out["evidence"] if not e.meta.get("verification")}
    assert set(by) == {"vlm", "classifier", "retrieval"}
    assert all(e.ok for e in by.values()), {t: e.error for t, e in by.items() if not e.ok}
    assert by["vlm"].report and all(c.source == "vlm" for c in by["vlm"].calls)
    assert by["classifier"].calls and all(c.score_kind == "op_norm" for c in by["classifier"].calls)
    assert len(by["retrieval"].neighbors) == 5
    assert by["retrieval"].meta.get("query_source") in {"draft_report", None}
    assert any(e["event"] == "token" for e in events)
    reply = out["messages"][-1]
    assert reply.content.startswith(f"> **{DEMO_WARNING}**") and DISCLAIMER in reply.content
    assert "(threshold 0.5)" in reply.content and "5 similar prior reports" in reply.content
    assert reply.additional_kwargs["cxr"]["heatmaps"], "classifier heatmaps reach the UI payload"
    assert out["decisions"]

    for question, intent in [("Where is the cardiomegaly?", "locate"), ("Is there a pleural effusion?", "finding_question"),
                             ("Find similar cases", "similar_cases"), ("hello, what can you do?", "chat")]:
        out = g.invoke({"messages": [("user", question)]}, cfg)
        reply = out["messages"][-1]
        assert reply.additional_kwargs["cxr"]["intent"] == intent
        assert reply.content.startswith(f"> **{DEMO_WARNING}**")
        assert out["evidence"] and all(e.ok for e in out["evidence"]), [e.error for e in out["evidence"]]
    before = study_decisions(g.get_state(cfg).values)
    out = g.invoke({"messages": [("user", "Why did you call cardiomegaly?")]}, cfg)
    assert out["evidence"] == [] and "no tool was re-run" in out["messages"][-1].content
    assert before and out["decisions"] == before, "explain reads the stored decisions"


def test_a_conversation_on_the_tiny_models_reads_the_study_once(real_graph, cxr_images):
    """report -> a finding question -> "where is it?" -> "why?" -> another finding, on the tiny models:
    the classifier runs once for the study (counted), and each turn changes only the decisions its
    own evidence bears on, each change naming that evidence."""
    from graph import runtime

    g = real_graph
    clf = runtime(g).tools["classifier"]
    runs: list[str] = []
    real_run = clf.run

    def counted(request):
        runs.append(request.intent)
        return real_run(request)

    clf.run = counted
    try:
        cfg = {"configurable": {"thread_id": "real-tiny-conversation"}}
        turns = [("Write a report", set()), ("Is there cardiomegaly?", {"cardiomegaly"}),
                 ("Where is it?", {"cardiomegaly"}), ("Why?", set()), ("Is there a pleural effusion?", {"pleural_effusion"})]
        before = None
        for i, (text, asked) in enumerate(turns):
            inputs = {"messages": [("user", text)], **({"image": str(cxr_images[3])} if i == 0 else {})}
            out = g.invoke(inputs, cfg)
            rec = out["record"]
            if before is not None:
                old = {d.finding: d for d in before}
                for c in rec.changed:
                    assert c.finding in asked | {"no_finding"} or c.before is None, (text, c)
                    assert c.because or c.finding == "no_finding", (text, c)
                kept = [f for f, d in old.items() if d.needs_review and f not in asked | {"no_finding"}]
                now = {d.finding: d for d in out["decisions"]}
                assert all(now[f].needs_review for f in kept), (text, kept)
            before = out["decisions"]
        assert runs == ["report"], runs  # one classifier pass for the whole conversation
    finally:
        clf.run = real_run
