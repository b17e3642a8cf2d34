"""A conversation served by LangGraph Server with LANGGRAPH_STRICT_MSGPACK=true. The server's own
serializer hands our types back as plain data (its strict mode blocks classes it was not told about);
the graph reads them back, so a follow-up keeps the study's ledger and every decision not asked about,
and the classifier reads the study once."""

from __future__ import annotations

import httpx
from langgraph_server import langgraph_dev


def test_a_served_conversation_under_strict_deserialization(tmp_path, cxr_image):
    with langgraph_dev(tmp_path, {"LANGGRAPH_STRICT_MSGPACK": "true"}) as server, \
            httpx.Client(base_url=server.url, timeout=600) as client:
        r = client.post("/cxr/studies", content=cxr_image.read_bytes(), params={"filename": cxr_image.name})
        assert r.status_code in (200, 201), r.text
        sid = r.json()["study_id"]
        tid = client.post("/threads", json={}).json()["thread_id"]
        replies, states = [], []
        for i, text in enumerate(("Write a report", "Is there cardiomegaly?", "Why?")):
            body = {"assistant_id": "cxr_agent",
                    "input": {"messages": [{"role": "user", "content": text}], **({"study_id": sid} if i == 0 else {})}}
            r = client.post(f"/threads/{tid}/runs/wait", json=body)
            assert r.status_code == 200, r.text[-2000:]
            out = r.json()
            assert "__error__" not in out, out.get("__error__")
            replies.append(out["messages"][-1]["content"])
            states.append(client.get(f"/threads/{tid}/state").json()["values"])
    log = server.log.read_text()
    assert "Traceback" not in log and "AttributeError" not in log, log[-3000:]
    report, asked, why = ({d["finding"]: d for d in s["decisions"]} for s in states)
    assert report and all(d == report[f] for f, d in asked.items() if f not in ("cardiomegaly", "no_finding"))
    assert why == asked  # "why?" runs nothing and changes nothing
    ledger = states[-1]["ledger"]
    assert ledger["study_id"] == sid
    assert [(e["key"]["tool"], e["turn"]) for e in ledger["entries"] if e["key"]["tool"] == "classifier"] == \
        [("classifier", 1)]  # one classifier read for the whole conversation
    assert "Cardiomegaly" in replies[2] and "nothing to explain" not in replies[2]
