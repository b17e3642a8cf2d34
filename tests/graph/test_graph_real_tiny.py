"""The graph over the REAL built-in tools under the tiny profile (random-weight VLM and classifier,
a real FAISS index over IU reports with a hashing test embedder), on a real radiograph.

Outputs of random-weight models are meaningless, so these tests check wiring and contracts:
every tool ran and returned Evidence, reports were labelled, calls carry their score kinds,
heatmaps and boxes reach the UI payload, every reply carries the demo warning.
"""

from __future__ import annotations

import hashlib
import re

import numpy as np
import pytest

from cxr_agent.settings import DEMO_WARNING, DISCLAIMER, Settings


class HashingModel:
    """A sentence-transformers stand-in: bag of hashed words, L2-normalised (tests only)."""

    dim = 64

    def get_sentence_embedding_dimension(self) -> int:
        return self.dim

    def encode(self, texts, **_kw) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            for w in re.findall(r"[a-z]+", t.lower()):
                out[i, int(hashlib.md5(w.encode()).hexdigest(), 16) % self.dim] += 1.0
        out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-6)
        return out


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
    before = g.get_state(cfg).values["last_result"]
    out = g.invoke({"messages": [("user", "Why did you call cardiomegaly?")]}, cfg)
    assert out["evidence"] == [] and "no tool was re-run" in out["messages"][-1].content
    assert before["decisions"], "explain reads the stored decisions"
