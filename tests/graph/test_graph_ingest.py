"""Bad images become polite replies; the thread continues and nothing is lost."""

from __future__ import annotations

from graph_scripted import ScriptedVLM, classifier

from cxr_agent.settings import DEMO_WARNING


def test_bad_image_polite_reply_then_continue(make_graph, thread, cxr_image):
    vlm, clf = ScriptedVLM(report="Cardiomegaly."), classifier({"cardiomegaly": 0.8})
    g = make_graph(vlm, clf)
    cfg = thread()
    out = g.invoke({"messages": [("user", "Write a report")], "image": b"this is not an image", "image_name": "x.png"}, cfg)
    text = out["messages"][-1].content
    assert text.startswith(f"> **{DEMO_WARNING}**")
    assert "I could not use that image:" in text and "PNG, JPEG or DICOM" in text
    assert vlm.calls == clf.calls == 0 and out.get("study_id") is None
    ok = g.invoke({"messages": [("user", "Write a report")], "image": str(cxr_image)}, cfg)
    assert ok["study_id"] and vlm.calls == 1
    # a bad file after a good one keeps the loaded study
    again = g.invoke({"messages": [("user", "Write a report")], "image": b"\x00" * 10, "image_name": "y.dcm"}, cfg)
    assert "previously loaded study is still here" in again["messages"][-1].content
    assert again["study_id"] == ok["study_id"]
    assert len(again["messages"]) == 6
    follow = g.invoke({"messages": [("user", "Is there cardiomegaly?")]}, cfg)
    assert follow["study_id"] == ok["study_id"] and "**Yes**" in follow["messages"][-1].content


def test_missing_file_path(make_graph, thread, tmp_path):
    g = make_graph(ScriptedVLM())
    out = g.invoke({"messages": [("user", "Write a report")], "image": str(tmp_path / "nope.png")}, thread())
    assert "I could not use that image" in out["messages"][-1].content


def test_overlong_message_is_refused_politely_and_the_thread_goes_on(make_graph, thread, cxr_image):
    vlm, clf = ScriptedVLM(report="Cardiomegaly."), classifier({"cardiomegaly": 0.8})
    g = make_graph(vlm, clf, max_message_chars=50)
    cfg = thread()
    ok = g.invoke({"messages": [("user", "Write a report")], "image": str(cxr_image)}, cfg)
    long = "Please write a report. " + "x" * 100
    out = g.invoke({"messages": [("user", long)], "image": str(cxr_image)}, cfg)
    text = out["messages"][-1].content
    assert f"Your message is {len(long):,} characters; the limit is 50" in text
    assert "The image sent with it was not loaded." in text
    assert vlm.calls == 1 and out["evidence"] == [] and out["study_id"] == ok["study_id"]  # nothing ran
    follow = g.invoke({"messages": [("user", "Is there cardiomegaly?")]}, cfg)
    assert "**Yes**" in follow["messages"][-1].content and len(follow["messages"]) == 5  # the refused message is not kept
