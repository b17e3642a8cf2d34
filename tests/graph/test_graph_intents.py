"""Each intent end to end through the graph, with scripted tools (controlled outputs)."""

from __future__ import annotations

from graph_scripted import ScriptedVLM, classifier, retrieval
from langchain_core.messages import AIMessage

from agents.memory.ledger import study_decisions
from cxr_agent.settings import DEMO_WARNING, DISCLAIMER
from knowledge.evidence import Box, Evidence, FindingCall, Status

EFFUSION_BOX = Box(x1=0.6, y1=0.55, x2=0.9, y2=0.9)


def _tools():
    vlm = ScriptedVLM(report="Cardiomegaly. No pleural effusion. No pneumothorax.")
    clf = classifier({"cardiomegaly": 0.8, "pneumothorax": 0.1}, {"cardiomegaly": Box(x1=0.3, y1=0.4, x2=0.7, y2=0.8)})
    ret = retrieval([["cardiomegaly"], ["cardiomegaly", "pleural_effusion"], ["no_finding"], ["cardiomegaly"]])
    return vlm, clf, ret


def test_report_end_to_end(make_graph, thread, cxr_image):
    vlm, clf, ret = _tools()
    g = make_graph(vlm, clf, ret)
    out = g.invoke({"messages": [("user", "Write a report")], "image": str(cxr_image)}, thread())
    reply = out["messages"][-1]
    assert isinstance(reply, AIMessage)
    text = reply.content
    assert text.startswith(f"> **{DEMO_WARNING}**")
    assert DISCLAIMER in text
    assert "Cardiomegaly. No pleural effusion. No pneumothorax." in text  # the VLM report, verbatim
    assert "classifier 0.80" in text and "op-point scores (threshold 0.5)" in text
    assert "probability" not in text.lower()
    assert "Priors: 4 similar prior reports (1 normal), context, not a vote." in text
    # this turn's evidence and decisions
    assert sorted(e.tool for e in out["evidence"]) == ["classifier", "retrieval", "vlm"]
    vlm_ev = next(e for e in out["evidence"] if e.tool == "vlm")
    assert {(c.finding, c.status) for c in vlm_ev.calls} >= {("cardiomegaly", Status.present),
                                                           ("pleural_effusion", Status.absent)}
    assert all(c.source == "vlm" for c in vlm_ev.calls)
    cardio = next(d for d in out["decisions"] if d.finding == "cardiomegaly")
    assert cardio.status == Status.present and not cardio.conflict
    # retrieval ran after the VLM, on its draft report
    assert ret.requests[0].draft_report == vlm.report
    assert next(e for e in out["evidence"] if e.tool == "retrieval").meta["query"] == vlm.report
    cxr = reply.additional_kwargs["cxr"]
    assert cxr["intent"] == "report" and cxr["demo"] is True and cxr["study_id"] == out["study_id"]
    assert cxr["unavailable"] == []
    assert cxr["boxes"] == [{"finding": "cardiomegaly", "source": "classifier", "x1": 0.3, "y1": 0.4, "x2": 0.7,
                             "y2": 0.8, "label": "Cardiomegaly"}]
    assert cxr["heatmaps"][0]["finding"] == "cardiomegaly" and cxr["heatmaps"][0]["source"] == "classifier" and cxr["heatmaps"][0]["box"]["x1"] == 0.3
    # state holds a reference, not pixels
    assert isinstance(out["study_id"], str) and len(out["study_id"]) == 64


def test_report_omitted_high_confidence_finding_is_reasked_and_added(make_graph, thread, cxr_image):
    """The report's silence is weak evidence of absence: the VLM is re-asked; when it confirms, the
    finding is added to the report as a revision (the VLM's text itself is not altered)."""
    confirm = lambda f: Evidence(tool="vlm", answer="Yes.",  # noqa: E731
                                 calls=[FindingCall(finding=f, status=Status.present, source="vlm")])
    vlm = ScriptedVLM(report="Mild cardiomegaly.", verify=confirm)
    clf = classifier({"pleural_effusion": 0.9, "cardiomegaly": 0.8}, {"pleural_effusion": EFFUSION_BOX})
    g = make_graph(vlm, clf)
    out = g.invoke({"messages": [("user", "Write a report")], "image": str(cxr_image)}, thread())
    text = out["messages"][-1].content
    assert "\nMild cardiomegaly.\n" in text  # the VLM's text, not silently altered
    assert vlm.verify_calls == ["pleural_effusion"]
    assert "- Not in VLM report, added as present (classifier score): **Pleural effusion** 0.90." in text
    eff = next(d for d in out["decisions"] if d.finding == "pleural_effusion")
    assert eff.status == Status.present and not eff.needs_review


def test_report_omitted_high_confidence_finding_unverified_is_flagged(make_graph, thread, cxr_image):
    """No re-ask possible: a high-confidence classifier finding the report omits is never dropped."""
    vlm = ScriptedVLM(report="Mild cardiomegaly.")  # verification not scripted -> fails
    clf = classifier({"pleural_effusion": 0.9, "cardiomegaly": 0.8}, {"pleural_effusion": EFFUSION_BOX})
    g = make_graph(vlm, clf)
    out = g.invoke({"messages": [("user", "Write a report")], "image": str(cxr_image)}, thread())
    text = out["messages"][-1].content
    assert "### Needs your review (1)" in text
    assert "- **Pleural effusion** (unresolved): not in VLM report" in text
    eff = next(d for d in out["decisions"] if d.finding == "pleural_effusion")
    assert eff.status != Status.absent and eff.needs_review


def test_report_normal_vlm_vs_classifier_positive_is_disputed(make_graph, thread, cxr_image):
    vlm = ScriptedVLM(report="Heart size is normal. The lungs are clear.")  # labelled: no finding
    clf = classifier({"pleural_effusion": 0.9, "cardiomegaly": 0.2}, {"pleural_effusion": EFFUSION_BOX})
    g = make_graph(vlm, clf)
    out = g.invoke({"messages": [("user", "Write a report")], "image": str(cxr_image)}, thread())
    text = out["messages"][-1].content
    assert "Heart size is normal. The lungs are clear." in text
    assert "- **Pleural effusion** (unresolved): VLM report reads the study as normal" in text
    eff = next(d for d in out["decisions"] if d.finding == "pleural_effusion")
    assert eff.needs_review and eff.status != Status.absent  # a high-confidence positive is never dropped


def test_locate(make_graph, thread, cxr_image):
    vlm, _, _ = _tools()
    clf = classifier({"pleural_effusion": 0.75}, {"pleural_effusion": EFFUSION_BOX})
    g = make_graph(vlm, clf)
    out = g.invoke({"messages": [("user", "Where is the effusion?")], "image": str(cxr_image)}, thread())
    text = out["messages"][-1].content
    assert "## Where: Pleural effusion" in text
    assert "box x 0.10–0.40, y 0.50–0.90" in text  # VLM box
    assert "pixels (102, 512)–(410, 922)" in text  # on the 1024 x 1024 original
    assert "right lower zone (image left)" in text
    assert "classifier heatmap" in text
    cxr = out["messages"][-1].additional_kwargs["cxr"]
    assert {b["source"] for b in cxr["boxes"]} == {"vlm", "classifier"}
    assert DISCLAIMER not in text


def test_finding_question(make_graph, thread, cxr_image):
    vlm = ScriptedVLM()
    clf = classifier({"pleural_effusion": 0.85})
    g = make_graph(vlm, clf)
    out = g.invoke({"messages": [("user", "Is there a pleural effusion?")], "image": str(cxr_image)}, thread())
    text = out["messages"][-1].content
    assert "**Yes** — pleural effusion present" in text
    assert "classifier op-point score 0.85 (threshold 0.5)" in text
    assert vlm.requests[0].finding == "pleural_effusion"


def test_a_question_naming_two_findings_answers_both(make_graph, thread, cxr_image):
    vlm = ScriptedVLM()
    clf = classifier({"pneumothorax": 0.9, "pleural_effusion": 0.2}, {"pneumothorax": EFFUSION_BOX})
    g = make_graph(vlm, clf)
    cfg = thread()
    out = g.invoke({"messages": [("user", "Is there a pneumothorax or a pleural effusion?")], "image": str(cxr_image)},
                   cfg)
    assert vlm.requests[0].findings == ("pneumothorax", "pleural_effusion")  # every tool is told both
    text = out["messages"][-1].content
    assert "**Yes** — pneumothorax present" in text and "**No** — pleural effusion absent" in text
    assert text.index("pneumothorax present") < text.index("pleural effusion absent")  # in the order asked
    where = g.invoke({"messages": [("user", "Where are they?")]}, cfg)["messages"][-1].content
    assert "## Where: Pneumothorax" in where and "## Where: Pleural effusion" in where
    assert "classifier heatmap** for Pneumothorax" in where
    assert "No tool localised pleural effusion on this image." in where


def test_a_question_about_change_says_no_earlier_image_was_compared(make_graph, thread, cxr_image):
    from agents.replying.compose import NO_COMPARISON

    vlm, clf, ret = _tools()
    g = make_graph(vlm, clf, ret)
    cfg = thread()
    first = g.invoke({"messages": [("user", "Is there cardiomegaly?")], "image": str(cxr_image)}, cfg)
    assert NO_COMPARISON not in first["messages"][-1].content
    out = g.invoke({"messages": [("user", "Is the cardiomegaly worse than before?")]}, cfg)
    text = out["messages"][-1].content
    assert out["route"].asks_comparison is True
    assert text.index(NO_COMPARISON) < text.index("cardiomegaly present")  # said before any answer


def test_a_question_about_one_side_is_answered_with_where_the_boxes_lie(make_graph, thread, cxr_image):
    vlm = ScriptedVLM()
    clf = classifier({"pleural_effusion": 0.85}, {"pleural_effusion": EFFUSION_BOX})  # image right: patient's left
    g = make_graph(vlm, clf)
    out = g.invoke({"messages": [("user", "Is there a right pleural effusion?")], "image": str(cxr_image)}, thread())
    lines = out["messages"][-1].content.splitlines()
    yes = next(i for i, line in enumerate(lines) if line.startswith("**Yes** — pleural effusion present"))
    assert lines[yes + 1] == ""  # a paragraph of its own, right under the yes/no
    assert lines[yes + 2].startswith("**Side:** you asked about the right side, but the boxes lie on the patient's left")
    assert "nothing here shows a right-sided pleural effusion" in lines[yes + 2]


def test_a_question_naming_no_known_finding_is_answered_free_and_flagged(make_graph, thread, cxr_image):
    vlm = ScriptedVLM()
    g = make_graph(vlm, classifier({"pleural_effusion": 0.2}))
    out = g.invoke({"messages": [("user", "Is the trachea midline?")], "image": str(cxr_image)}, thread())
    text = out["messages"][-1].content
    assert out["route"].intent == "finding_question" and out["route"].finding is None
    assert "**Not cross-checked:** the question names no finding the tools know, so the VLM answered" in text
    assert "- VLM answer: Yes." in text and "Uncertain" not in text


def test_a_question_about_size_says_the_tools_do_not_grade_it(make_graph, thread, cxr_image):
    g = make_graph(ScriptedVLM(), classifier({"pleural_effusion": 0.85}))
    cfg = thread()
    lines = g.invoke({"messages": [("user", "How big is the pleural effusion?")], "image": str(cxr_image)},
                     cfg)["messages"][-1].content.splitlines()
    yes = next(i for i, line in enumerate(lines) if line.startswith("**Yes** — pleural effusion present"))
    assert lines[yes + 2].startswith("**Size not graded:** the answer says whether pleural effusion is there")
    plain = g.invoke({"messages": [("user", "Is there a pleural effusion?")]}, cfg)["messages"][-1].content
    assert "Size not graded" not in plain
    g2 = make_graph(ScriptedVLM(), classifier({"pneumonia": 0.1}))
    text = g2.invoke({"messages": [("user", "Can you rule out pneumonia?")], "image": str(cxr_image)},
                     thread())["messages"][-1].content
    assert "**Not ruled out:** the tools do not exclude pneumonia." in text  # the VLM says present: no bare "No"


def test_where_is_it_refers_to_the_finding_just_asked_about(make_graph, thread, cxr_image):
    vlm = ScriptedVLM()
    clf = classifier({"pleural_effusion": 0.85}, {"pleural_effusion": EFFUSION_BOX})
    g = make_graph(vlm, clf)
    cfg = thread()
    first = g.invoke({"messages": [("user", "Is there a pleural effusion?")], "image": str(cxr_image)}, cfg)
    assert first["messages"][-1].additional_kwargs["cxr"]["findings"] == ["pleural_effusion"]
    out = g.invoke({"messages": [("user", "Where is it?")]}, cfg)
    assert out["route"].intent == "locate" and out["route"].finding == "pleural_effusion"
    assert "'it' = pleural effusion, from the previous question" in out["route"].reason
    assert vlm.requests[-1].intent == "locate" and vlm.requests[-1].finding == "pleural_effusion"
    assert "## Where: Pleural effusion" in out["messages"][-1].content
    # A report names no single finding: "where is it?" then has nothing to refer to.
    g.invoke({"messages": [("user", "Write a report")]}, cfg)
    after_report = g.invoke({"messages": [("user", "Where is it?")]}, cfg)
    assert after_report["route"].intent == "locate" and after_report["route"].finding is None
    assert "## Where: any abnormality (none was named)" in after_report["messages"][-1].content


def test_similar_cases_table(make_graph, thread, cxr_image):
    _, _, ret = _tools()
    g = make_graph(ret)
    out = g.invoke({"messages": [("user", "Show me similar cases")], "image": str(cxr_image)}, thread())
    text = out["messages"][-1].content
    assert "## 4 similar prior reports" in text
    assert "| 1 | 0.90 | Cardiomegaly |" in text
    assert [e.tool for e in out["evidence"]] == ["retrieval"]


def test_chat_passes_history(make_graph, thread, cxr_image):
    vlm = ScriptedVLM(answer="Hello there")
    g = make_graph(vlm)
    cfg = thread()
    g.invoke({"messages": [("user", "hello")], "image": str(cxr_image)}, cfg)
    out = g.invoke({"messages": [("user", "thanks, what can you do?")]}, cfg)
    assert "Hello there" in out["messages"][-1].content
    hist = vlm.requests[-1].history
    assert [h["role"] for h in hist] == ["user", "assistant"]
    assert hist[0]["content"] == "hello"


def test_image_intent_without_image_asks_for_one(make_graph, thread):
    vlm, clf, ret = _tools()
    g = make_graph(vlm, clf, ret)
    out = g.invoke({"messages": [("user", "Write a report")]}, thread())
    text = out["messages"][-1].content
    assert "Please upload a chest radiograph" in text
    assert text.startswith(f"> **{DEMO_WARNING}**")
    assert vlm.calls == clf.calls == ret.calls == 0
    assert out["evidence"] == [] and out.get("decisions", []) == [] and out["record"].decisions == []


def test_explain_answers_from_stored_evidence_without_tools(make_graph, thread, cxr_image):
    vlm, clf, ret = _tools()
    g = make_graph(vlm, clf, ret)
    cfg = thread()
    first = g.invoke({"messages": [("user", "Write a report")], "image": str(cxr_image)}, cfg)
    counts = (vlm.calls, clf.calls, ret.calls, len(vlm.verify_calls))
    out = g.invoke({"messages": [("user", "Why did you call cardiomegaly?")]}, cfg)
    assert (vlm.calls, clf.calls, ret.calls, len(vlm.verify_calls)) == counts  # nothing re-ran
    text = out["messages"][-1].content
    assert "no tool was re-run" in text
    cardio = next(d for d in first["decisions"] if d.finding == "cardiomegaly")
    assert cardio.rationale in text
    assert out["evidence"] == [] and out["record"].evidence == [] and out["record"].changed == []  # none this turn
    assert out["decisions"] == first["decisions"]  # the study's decisions, as they stood
    assert out["study_id"] == first["study_id"]


def test_explain_with_nothing_to_explain(make_graph, thread):
    g = make_graph(ScriptedVLM())
    out = g.invoke({"messages": [("user", "why did you say that?")]}, thread())
    assert "nothing to explain yet" in out["messages"][-1].content


def test_per_turn_results_reset_and_thread_remembers_study(make_graph, thread, cxr_images):
    vlm, clf, ret = _tools()
    g = make_graph(vlm, clf, ret)
    cfg = thread()
    a = g.invoke({"messages": [("user", "Write a report")], "image": str(cxr_images[0])}, cfg)
    b = g.invoke({"messages": [("user", "Is there a pneumothorax?")]}, cfg)  # no image: same study
    assert b["study_id"] == a["study_id"]
    # this turn only: vlm + classifier, plus the VLM re-ask on the conflict they produced (pneumothorax)
    assert sorted(e.tool for e in b["evidence"] if not e.meta.get("verification")) == ["classifier", "vlm"]
    assert [e.meta["verification"] for e in b["evidence"] if e.meta.get("verification")] == ["pneumothorax"]
    assert clf.requests[-1].study.id == a["study_id"]
    c = g.invoke({"messages": [("user", "Write a report")], "image": str(cxr_images[1])}, cfg)  # new study
    assert c["study_id"] != a["study_id"]
    assert len(c["messages"]) == 6
    assert len(c["evidence"]) == 3


def test_study_id_input_and_store_image(make_graph, thread, cxr_image):
    from graph import store_image

    vlm, clf, _ = _tools()
    g = make_graph(vlm, clf)
    sid = store_image(cxr_image, graph=g)
    out = g.invoke({"messages": [("user", "Is there a pneumothorax?")], "study_id": sid}, thread())
    assert out["study_id"] == sid and clf.requests[0].study.id == sid
    bad = g.invoke({"messages": [("user", "Is there a pneumothorax?")], "study_id": "f" * 64}, thread())
    assert "no longer available" in bad["messages"][-1].content


def test_explain_one_finding_after_several_turns(make_graph, thread, cxr_image):
    vlm, clf, ret = _tools()
    g = make_graph(vlm, clf, ret)
    cfg = thread()
    g.invoke({"messages": [("user", "Write a report")], "image": str(cxr_image)}, cfg)
    g.invoke({"messages": [("user", "Find similar cases")]}, cfg)  # not a reconciled turn: memory kept
    g.invoke({"messages": [("user", "Is there a nodule?")]}, cfg)  # merged into memory by finding
    memory = study_decisions(g.get_state(cfg).values)
    assert {"cardiomegaly", "nodule"} <= {d.finding for d in memory}
    out = g.invoke({"messages": [("user", "Why did you call cardiomegaly?")]}, cfg)
    text = out["messages"][-1].content
    assert "**Cardiomegaly** →" in text and "**Nodule** →" not in text
    assert "Other conclusions on record:" in text and "nodule" in text.split("Other conclusions on record:")[1]
