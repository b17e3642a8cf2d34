"""The audit log: one PHI-free JSON line per reply, owner-only, per UTC day."""

from __future__ import annotations

import json
import shutil

from graph_scripted import ScriptedVLM, classifier


def test_one_line_per_reply_without_phi(make_graph, settings, thread, cxr_image, tmp_path):
    g = make_graph(ScriptedVLM(report="Cardiomegaly."), classifier({"cardiomegaly": 0.85}))
    named = tmp_path / "DOE_JOHN_MRN123.png"
    shutil.copy(cxr_image, named)
    cfg = thread()
    first = g.invoke({"messages": [("user", "Write a report for Mr SMITHSON please")], "image": str(named)}, cfg)
    g.invoke({"messages": [("user", "why cardiomegaly?")]}, cfg)
    files = list((settings.data_dir / "audit").glob("*.jsonl"))
    assert len(files) == 1 and files[0].stat().st_mode & 0o777 == 0o600
    assert (settings.data_dir / "audit").stat().st_mode & 0o777 == 0o700
    text = files[0].read_text()
    lines = [json.loads(x) for x in text.splitlines()]
    assert len(lines) == 2
    a, b = lines
    assert a["thread"] == cfg["configurable"]["thread_id"] and a["study"] == first["study_id"]
    assert a["intent"] == "report" and b["intent"] == "explain"
    assert a["tools"] == {"vlm": True, "classifier": True}
    assert a["models"] == {"profile": "tiny"} and len(a["policy"]) == 12 and a["policy"] == b["policy"]
    # the prompts actually sent: each VLM adapter's trained instructions and the LLM router's system prompt
    assert {"vlm_radvlm", "vlm_medgemma", "vlm_conversation", "router_llm"} <= set(a["prompts"])
    assert all(len(v) == 12 for v in a["prompts"].values()) and a["time"].endswith("+00:00")
    for secret in ("SMITHSON", "DOE_JOHN", "MRN123", "Cardiomegaly.", str(tmp_path)):
        assert secret not in text


def test_audit_off_writes_nothing(make_graph, settings, thread, cxr_image):
    g = make_graph(ScriptedVLM(report="Clear."), classifier({}), audit_log=False)
    g.invoke({"messages": [("user", "Write a report")], "image": str(cxr_image)}, thread())
    assert not (settings.data_dir / "audit").exists()


def test_real_model_ids_and_reported_weight_hashes(settings):
    from agents.memory.audit_log import reply_record
    from knowledge.evidence import Evidence

    real = settings.model_copy(update={"model_profile": "real", "router_llm": "openai:gpt-4o-mini"})
    ev = Evidence(tool="classifier", meta={"weights_sha256": "ab" * 32})
    rec = reply_record(real, thread_id="t", study_id="s", intent="report", evidence=[ev, Evidence(tool="vlm", ok=False)])
    assert rec["models"] == {"vlm": real.vlm_model_id, "classifier": real.classifier_model,
                             "embedder": real.embedder, "router_llm": "openai:gpt-4o-mini"}
    assert rec["weights_sha256"] == {"classifier": "ab" * 32} and rec["tools"] == {"classifier": True, "vlm": False}
    assert rec["policy"] is None
