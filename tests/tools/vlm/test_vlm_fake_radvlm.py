"""The tool and the graph speak RadVLM's trained language: a fake backend that answers only in
RadVLM's shapes (tests/tools/vlm/fake_radvlm.py) yields calls for all 13 CheXpert labels and
detection boxes on a report turn, locations on locate turns, and batched re-asks."""

from __future__ import annotations

import pytest
from fake_radvlm import FakeRadVLM  # tests/tools/vlm/fake_radvlm.py (test-only backend)

from knowledge.evidence import FindingCall, Status
from knowledge.vocabulary import normalize
from tools.base import ToolRequest
from tools.ingestion.study import Study
from tools.vlm.adapters.radvlm import CHEXPERT_IDS, CLASSIFICATION, DETECTION, REPORT
from tools.vlm.tool import VLMTool


def make_study(seed: int = 0) -> Study:
    import numpy as np

    rng = np.random.default_rng(seed)
    return Study.from_array(rng.random((64, 96)).astype(np.float32), view="PA")


def _tasks(ev) -> list[str | None]:
    """Each call's skill: FindingCall.task (knowledge/evidence.py), else the tool's meta["call_tasks"]."""
    if "task" in FindingCall.model_fields:
        return [c.task for c in ev.calls]
    return list(ev.meta["call_tasks"]) + [None] * (len(ev.calls) - len(ev.meta["call_tasks"]))


def test_report_turn_sends_trained_instructions_and_returns_every_label(tiny_settings) -> None:
    fake = FakeRadVLM()
    ev = VLMTool(tiny_settings, backend=fake).run(ToolRequest(intent="report", study=make_study(), thread_id="r"))
    assert ev.ok and ev.report.startswith("Mild cardiomegaly")
    assert fake.tasks == ["report", "classification", "detection"] and fake.untrained == []
    assert fake.prompts[0] in REPORT and fake.prompts[1] in CLASSIFICATION and fake.prompts[2] in DETECTION
    assert fake.batches == [2]  # classification + detection in one batch on the cached image
    tasks = _tasks(ev)
    cls = {c.finding: c.status for c, t in zip(ev.calls, tasks, strict=True) if t == "classification"}
    assert set(cls) == {*CHEXPERT_IDS, "no_finding"} and len(CHEXPERT_IDS) == 13
    assert {f for f, s in cls.items() if s is Status.present} == {"cardiomegaly", "pleural_effusion", "support_devices"}
    det = [(c.finding, c.box) for c, t in zip(ev.calls, tasks, strict=True) if t == "detection"]
    aortic = normalize("aortic enlargement")  # a call once the lexicon has an id for it, else a location only
    assert [f for f, _ in det] == ["cardiomegaly", "pleural_effusion", "pleural_effusion", *([aortic] if aortic else [])]
    assert all(b for _, b in det)
    boxes = [a for a in ev.artifacts if a.meta["task"] == "detection"]
    assert len(boxes) == 4 and {a.meta["location_only"] for a in boxes} == {False}  # aortic enlargement: a box too
    assert ev.meta["prompts"]["classification"] == fake.prompts[1]


def test_prompts_are_deterministic_per_study(tiny_settings) -> None:
    a, b = FakeRadVLM(), FakeRadVLM()
    study = make_study()
    VLMTool(tiny_settings, backend=a).run(ToolRequest(intent="report", study=study))
    VLMTool(tiny_settings, backend=b).run(ToolRequest(intent="report", study=study))
    assert a.prompts == b.prompts
    seen = set()
    for seed in range(12):  # other studies get other variants
        c = FakeRadVLM()
        VLMTool(tiny_settings, backend=c).run(ToolRequest(intent="report", study=make_study(seed=seed)))
        seen.add(c.prompts[0])
    assert len(seen) > 3


def test_locate_turns_send_grounding_and_return_boxes(tiny_settings) -> None:
    fake = FakeRadVLM()
    tool = VLMTool(tiny_settings, backend=fake)
    ev = tool.run(ToolRequest(intent="locate", study=make_study(), finding="pleural_effusion"))
    assert fake.tasks == ["grounding"] and ev.calls == [] and len(ev.artifacts) == 1
    assert ev.artifacts[0].meta["location_only"] is True and ev.artifacts[0].box.x1 == pytest.approx(0.12)
    ev = tool.run(ToolRequest(intent="locate", study=make_study(), finding="edema"))  # not a VinDr label
    assert fake.tasks[-1] == "phrase_grounding" and ev.calls == [] and ev.artifacts[0].finding == "edema"
    ev = tool.run(ToolRequest(intent="locate", study=make_study(), phrase="cardiac silhouette"))
    assert fake.tasks[-1] == "grounding" and ev.meta["task"] == "region" and ev.artifacts[0].finding is None
    ev = tool.run(ToolRequest(intent="locate", study=make_study(), text="Where are the abnormalities?"))
    aortic = normalize("aortic enlargement")
    assert fake.tasks[-1] == "detection"
    assert {c.finding for c in ev.calls} == {"cardiomegaly", "pleural_effusion", *([aortic] if aortic else [])}
    assert fake.untrained == []


def test_verify_is_one_batch_and_boxes_maintained_findings(tiny_settings) -> None:
    fake = FakeRadVLM()
    tool = VLMTool(tiny_settings, backend=fake)
    out = tool.verify(make_study(), ["cardiomegaly", "pneumothorax", "bogus", "pleural_effusion"], thread_id="v")
    assert [e.ok for e in out] == [True, True, False, True] and "unknown finding id" in out[2].error
    assert fake.batches == [3, 2]  # the yes/no asks together, then grounding for the two maintained
    assert [e.calls[0].status for e in out if e.ok] == [Status.present, Status.absent, Status.present]
    assert fake.prompts[:3] == ["Is there any cardiomegaly?", "Is there any pneumothorax?", "Is there any pleural effusion?"]
    assert out[0].calls[0].box is not None and out[1].calls[0].box is None and out[3].calls[0].box is not None
    assert all(e.meta["verification"] is True for e in out if e.ok)


def test_graph_report_turn_has_vlm_calls_for_all_labels_and_boxes(make_graph, thread, cxr_image, settings) -> None:
    fake = FakeRadVLM()
    g = make_graph(VLMTool(settings, backend=fake))
    out = g.invoke({"messages": [("user", "Write a report")], "image": str(cxr_image)}, thread())
    vlm = next(e for e in out["evidence"] if e.tool == "vlm" and e.report)
    assert fake.tasks[:3] == ["report", "classification", "detection"] and fake.untrained == []
    labels = {c.finding for c, t in zip(vlm.calls, _tasks(vlm), strict=True) if t == "classification"}
    assert labels >= set(CHEXPERT_IDS)
    assert any(a.meta.get("task") == "detection" and a.box for a in vlm.artifacts)
    decided = {d.finding for d in out["decisions"]}
    assert {"cardiomegaly", "pleural_effusion"} <= decided


def test_graph_locate_turn_shows_the_grounding_box_as_a_location(make_graph, thread, cxr_image, settings) -> None:
    fake = FakeRadVLM()
    g = make_graph(VLMTool(settings, backend=fake))
    out = g.invoke({"messages": [("user", "Where is the pleural effusion?")], "image": str(cxr_image)}, thread())
    assert fake.tasks == ["grounding"] and fake.untrained == []
    vlm = next(e for e in out["evidence"] if e.tool == "vlm")
    assert vlm.calls == [] and vlm.artifacts[0].meta["location_only"] is True
    text = out["messages"][-1].content
    assert "**vlm** location of pleural effusion" in text and "box x 0.12–0.40, y 0.55–0.83" in text
    assert "a location only" in text and "No tool localised" not in text
    boxes = out["messages"][-1].additional_kwargs["cxr"]["boxes"]  # what the UI draws
    assert [(b["finding"], b["source"], b["location_only"], b["label"]) for b in boxes] == [
        ("pleural_effusion", "vlm", True, "pleural effusion (location)")]


def _ask_about(tiny_settings, intent: str, *findings: str):
    """One turn naming several findings, on the fake RadVLM: (the fake, the Evidence)."""
    fake = FakeRadVLM()
    ev = VLMTool(tiny_settings, backend=fake).run(
        ToolRequest(intent=intent, study=make_study(), finding=findings[0], findings=findings, thread_id=intent))
    assert ev.ok and fake.batches == [len(findings)] and fake.untrained == []  # one batch of trained asks
    return fake, ev


def test_a_question_naming_two_findings_asks_both_in_one_batch(tiny_settings) -> None:
    fake, ev = _ask_about(tiny_settings, "finding_question", "pneumothorax", "pleural_effusion")
    assert fake.tasks == ["question", "question"]
    assert {(c.finding, c.status) for c in ev.calls} == {("pneumothorax", Status.absent),
                                                         ("pleural_effusion", Status.present)}
    assert set(ev.meta["answers"]) == {"pneumothorax", "pleural_effusion"}
    assert ev.answer.splitlines() == ["Pneumothorax: No, there is no pneumothorax.",
                                      "Pleural effusion: Yes, there is pleural effusion."]


def test_where_are_they_grounds_each_named_finding(tiny_settings) -> None:
    fake, ev = _ask_about(tiny_settings, "locate", "pleural_effusion", "cardiomegaly")
    assert fake.tasks == ["grounding", "grounding"]
    assert [a.finding for a in ev.artifacts] == ["pleural_effusion", "cardiomegaly"]
    assert all(a.meta["location_only"] for a in ev.artifacts) and ev.calls == []
