"""The reply: read at a glance (review first, the report as written, one table), each finding named once,
nothing lost (every decision, call, score and box in the payload), on scripted evidence and on a real
report turn of the tiny profile."""

from __future__ import annotations

import re

import pytest
from hashing_embedder import HashingModel

from agents.replying.compose import cite, compose, compose_parts, payload, region
from agents.replying.parts import FIX_HINT
from agents.replying.roles import ToolRoles
from cxr_agent.settings import DEMO_WARNING, DISCLAIMER, Settings
from knowledge.evidence import Box, Decision, Evidence, FindingCall, Reason, Status
from knowledge.vocabulary import FINDINGS, display_name

REPORT = "Heart size is normal. No pneumothorax. Small left pleural effusion."
ROUTE = {"intent": "report", "needs_image": True}


def _clf(score: float, status: Status, finding: str = "pneumothorax", box: Box | None = None) -> FindingCall:
    return FindingCall(finding=finding, status=status, score=score, score_kind="op_norm", source="classifier",
                       text=f"densenet: {finding} op_norm {score}", box=box)


def _said(finding: str, status: Status, phrase: str) -> FindingCall:
    a = REPORT.index(phrase)
    return FindingCall(finding=finding, status=status, source="vlm", text=phrase, span=(a, a + len(phrase)),
                       task="report")


def _disputed() -> tuple[list[Evidence], list[Decision]]:
    """The report says no pneumothorax; the classifier says 0.81; the re-ask kept 'no': unresolved."""
    said = _said("pneumothorax", Status.absent, "pneumothorax")
    clf = _clf(0.81, Status.present, box=Box(x1=0.1, y1=0.1, x2=0.3, y2=0.3))
    answer = FindingCall(finding="pneumothorax", status=Status.absent, source="vlm", text="No.", task="verification")
    pneumo = Decision(finding="pneumothorax", status=Status.uncertain, confidence=0.5, conflict=True,
                      needs_review=True, verification="Targeted re-ask: the VLM reports it absent; unresolved.",
                      rationale="Pneumothorax: a long rationale that stays in the Why answer.",
                      calls=[said, clf, answer],
                      reasons=[Reason(rule="conflict", status=Status.uncertain, present=[clf], absent=[said]),
                               Reason(rule="reask_unresolved", answer=answer, asked="vlm", others=["classifier"],
                                      cause="maintained")])
    eff_said = _said("pleural_effusion", Status.present, "pleural effusion")
    eff = Decision(finding="pleural_effusion", status=Status.present, confidence=0.8, agreeing=["vlm", "classifier"],
                   rationale="Pleural effusion: both agree.",
                   calls=[eff_said, _clf(0.7, Status.present, "pleural_effusion")])
    edema = Decision(finding="edema", status=Status.absent, confidence=0.9, rationale="Edema: both absent.",
                     calls=[FindingCall(finding="edema", status=Status.absent, source="vlm", implied="report_silence"),
                            _clf(0.1, Status.absent, "edema")])
    ev = [Evidence(tool="vlm", report=REPORT, calls=[said, eff_said]),
          Evidence(tool="classifier", calls=[clf, _clf(0.7, Status.present, "pleural_effusion"),
                                             _clf(0.1, Status.absent, "edema")]),
          Evidence(tool="vlm", calls=[answer], meta={"verification": True})]
    return ev, [pneumo, eff, edema]


def outside(text: str, report: str) -> str:
    return text.replace(report, "", 1)


def named(text: str, finding: str) -> int:
    plain = re.sub(r"\u201c[^\u201d]*\u201d", "", text).lower()  # a quote is the tool's words
    return len(re.findall(rf"(?<![a-z]){re.escape(display_name(finding).lower())}(?![a-z])", plain))


def test_op_norm_is_cited_as_op_point_score_never_probability():
    c = _clf(0.71, Status.present)
    assert cite(c) == "classifier op-point score 0.71 (threshold 0.5) says present"
    p = FindingCall(finding="pneumothorax", status=Status.present, score=0.7, score_kind="probability", source="x")
    assert cite(p).startswith("x probability 0.70")
    v = FindingCall(finding="pneumothorax", status=Status.absent, source="vlm", text="No pneumothorax.",
                    box=Box(x1=0.1, y1=0.2, x2=0.3, y2=0.4))
    assert cite(v) == "vlm says absent, “No pneumothorax”, box x 0.10–0.30, y 0.20–0.40"


def test_a_quoted_mention_keeps_its_negation_even_without_the_report():
    said = _said("pneumothorax", Status.absent, "pneumothorax")
    assert "“No pneumothorax”" in cite(said, report=REPORT)
    # without the text its span points into, the bare mention is not quoted at all (it would read as a positive)
    assert "“pneumothorax”" not in cite(said) and cite(said) == "vlm says absent"


def test_region_names_patient_side():
    assert region(Box(x1=0.05, y1=0.1, x2=0.35, y2=0.3)) == "right upper zone (image left)"
    assert region(Box(x1=0.6, y1=0.7, x2=0.9, y2=0.95)) == "left lower zone (image right)"
    assert region(Box(x1=0.4, y1=0.4, x2=0.6, y2=0.6)) == "mid central chest"


def test_demo_warning_only_in_demo_and_disclaimer_on_reports():
    ev = [Evidence(tool="vlm", report="No acute findings.")]
    demo = compose(ROUTE, ev, [], demo=True, study={"id": "x"})
    real = compose(ROUTE, ev, [], demo=False, study={"id": "x"})
    assert demo.startswith(f"> **{DEMO_WARNING}**") and DEMO_WARNING not in real
    assert DISCLAIMER in demo and DISCLAIMER in real
    chat = compose({"intent": "chat"}, [Evidence(tool="vlm", answer="Hi.")], [], demo=False)
    assert chat.strip() == "Hi." and DISCLAIMER not in chat


def test_review_comes_first_then_the_report_then_one_table_each_finding_named_once():
    ev, ds = _disputed()
    text = compose(ROUTE, ev, ds, demo=True, study={"id": "s"})
    review, report, table = (text.index(h) for h in ("### Needs your review (1)", "### Report", "### Other findings"))
    assert review < report < table
    assert f"\n{REPORT}\n" in text  # the report exactly as written
    line = next(x for x in text.splitlines() if x.startswith("- **Pneumothorax**"))
    # who says what (a score, a quote that keeps its negation) and what the re-ask did
    assert "VLM report “No pneumothorax” (absent)" in line and "classifier 0.81;" in line
    assert "re-asked VLM: absent, kept its answer" in line and "→ uncertain (0.50)" in line
    rest = outside(text, REPORT)
    for d in ds:
        assert named(rest, d.finding) == 1, (d.finding, rest)
    assert "a long rationale" not in text and "Targeted re-ask" not in text  # rationales stay in "Why?"
    assert "| Pleural effusion | present | 0.80 | VLM, classifier 0.70 |" in text
    assert "| Edema | absent | 0.90 |" in text


def test_a_report_that_differs_from_the_decision_is_listed_for_review_even_when_not_flagged():
    said = _said("pleural_effusion", Status.present, "pleural effusion")
    d = Decision(finding="pleural_effusion", status=Status.absent, confidence=0.55,
                 calls=[said, _clf(0.1, Status.absent, "pleural_effusion")])
    added = Decision(finding="consolidation", status=Status.present, confidence=0.7,
                     calls=[_clf(0.9, Status.present, "consolidation")])
    parts = compose_parts(ROUTE, [Evidence(tool="vlm", report=REPORT, calls=[said])], [d, added], study={"id": "s"})
    assert [line.split("**")[1] for line in parts.review] == ["Pleural effusion", "Consolidation"]
    assert "(Contradicted)" in parts.review[0] and parts.review[1] == "- Not in VLM report, added as present (classifier score): **Consolidation** 0.90."
    assert parts.review_count == 2
    assert parts.table == ()


def test_a_truncated_report_says_it_was_cut_off():
    ev = [Evidence(tool="vlm", report="Heart size is normal. The lungs", truncated=True)]
    text = compose(ROUTE, ev, [], study={"id": "s"})
    assert "cut off at the token limit: its silence is not read as absence" in text
    whole = compose(ROUTE, [Evidence(tool="vlm", report="Heart size is normal.")], [], study={"id": "s"})
    assert "cut off" not in whole


def test_an_unavailable_tool_is_named_once_in_one_short_line():
    fix = ("RadVLM's weights are not in the Hugging Face cache. Run `cxr-agent models download vlm` on a machine "
           "with network access, or copy the snapshot into HF_HOME; see the README section on weights for details.")
    ev = [Evidence.failure("vlm", fix), Evidence(tool="classifier", calls=[_clf(0.8, Status.present)])]
    d = Decision(finding="pneumothorax", status=Status.present, confidence=0.8, calls=[_clf(0.8, Status.present)])
    text = compose(ROUTE, ev, [d], study={"id": "s"})
    assert text.count("**vlm**") == 1 and text.count(FIX_HINT) == 1
    assert "copy the snapshot" not in text and "models download" not in text  # the fix text is not repeated
    lines = [x for x in text.splitlines() if "vlm" in x.lower()]
    assert len(lines) == 1 and len(lines[0]) < 220, lines
    assert "No report was written" in lines[0]
    assert payload(ROUTE, ev, [d], study_id="s", demo=False)["unavailable"] == ["vlm"]


def test_roles_come_from_capabilities_and_are_passed_not_looked_up():
    from tools.base import ToolCapabilities

    caps = {"scribe": ToolCapabilities(intents=frozenset({"report"}), image_source=True, writes_report=True,
                                       label="the scribe"),
            "classifier": ToolCapabilities(intents=frozenset({"report"}), image_source=True)}
    roles = ToolRoles.from_capabilities(caps)
    assert roles.writers == ("scribe",) and roles.scorers == ("classifier",)
    assert roles.box_preference == ("scribe", "classifier") and roles.statement_sources == {"scribe"}
    text = compose(ROUTE, [Evidence(tool="scribe", report="Clear lungs.")], [], roles=roles, study={"id": "s"})
    assert "_Drafted by the scribe; shown as written._" in text
    default = compose(ROUTE, [Evidence(tool="scribe", report="Clear lungs.")], [], study={"id": "s"})
    assert "Drafted by the scribe" not in default  # nothing carried over from the call before


def test_payload_keeps_every_call_score_and_box():
    ev, ds = _disputed()
    p = payload(ROUTE, ev, ds, study_id="s", demo=False)
    assert p["review"] == ["pneumothorax"]
    assert {d["finding"] for d in p["decisions"]} == {d.finding for d in ds}
    got = {(c["finding"], c["source"], c.get("task"), c["status"], c.get("score")) for c in p["calls"]}
    want = {(c.finding, c.source, c.task, c.status.value, c.score) for d in ds for c in d.calls}
    assert want <= got
    assert {"x1": 0.1, "y1": 0.1, "x2": 0.3, "y2": 0.3}.items() <= p["boxes"][0].items()


# ------------------------------------------------------------------ a real report turn, tiny profile
@pytest.fixture(scope="module")
def tiny_report_turn(tmp_path_factory, cxr_image):
    from graph import build_graph
    from tools.retrieval import RetrievalTool
    from tools.retrieval.corpus import iu_xray_reports
    from tools.retrieval.embedder import Embedder
    from tools.retrieval.index import ReportIndex

    root = tmp_path_factory.mktemp("reply-tiny")
    s = Settings(model_profile="tiny", offline=True, data_dir=root, checkpointer_url="memory", vlm_device="cpu",
                 classifier_device="cpu", index_dir=root / "index", retrieval_k=5, tool_timeout_s=600,
                 turn_timeout_s=1200)
    index = ReportIndex.build(list(iu_xray_reports(limit=30)), s, index_dir=root / "index",
                              embedder=Embedder("hashing-test", HashingModel(dim=32), "cpu"))
    g = build_graph(s, tools=[RetrievalTool(s, index=index)], plugins=False)
    return g.invoke({"messages": [("user", "Write a report")], "image": str(cxr_image)},
                    {"configurable": {"thread_id": "reply-tiny"}})


def test_a_real_report_turn_fits_its_budget_and_names_each_finding_once(tiny_report_turn):
    out = tiny_report_turn
    text = out["messages"][-1].content
    writer = next(e for e in out["evidence"] if e.tool == "vlm" and e.ok and e.report)
    rest = outside(text, writer.report.strip())
    assert rest != text, "the report is shown as written"
    flagged = sum(d.needs_review for d in out["decisions"])
    assert len(rest) <= 1200 + 200 * flagged, (len(rest), flagged, rest)
    counts = {f: named(rest, f) for f in FINDINGS if f != "no_finding"}
    assert max(counts.values()) <= 1, {f: n for f, n in counts.items() if n > 1}
    assert {d.finding for d in out["decisions"] if d.finding != "no_finding"} <= {f for f, n in counts.items() if n}
    heads = [h for h in ("### Needs your review", "### Report", "### Other findings") if h in text]
    assert heads[-2:] == ["### Report", "### Other findings"] and sorted(heads, key=text.index) == heads


def test_a_real_report_turn_keeps_every_decision_call_score_and_box_in_the_payload(tiny_report_turn):
    out = tiny_report_turn
    cxr = out["messages"][-1].additional_kwargs["cxr"]
    decisions = out["decisions"]
    assert [d["finding"] for d in cxr["decisions"]] == [d.finding for d in decisions]
    assert [(d["status"], d["confidence"], d["needs_review"]) for d in cxr["decisions"]] == \
        [(d.status.value, d.confidence, d.needs_review) for d in decisions]
    got = {(c["finding"], c["source"], c.get("task"), c["status"], c.get("score"), str(c.get("box")))
           for c in cxr["calls"]}
    calls = [c for e in out["evidence"] if e.ok for c in e.calls] + [c for d in decisions for c in d.calls]
    want = {(c.finding, c.source, c.task, c.status.value, c.score,
             str(c.box.model_dump(mode="json", exclude_none=True) if c.box else None)) for c in calls}
    assert want <= got, want - got
    assert all(c.score is not None for c in calls if c.source == "classifier")
    boxes = {(b["finding"], b["source"]) for b in cxr["boxes"]}
    assert {(c.finding, c.source) for c in calls if c.box is not None and c.status != Status.absent} <= boxes
    assert cxr["heatmaps"] and cxr["review"] == [d.finding for d in decisions if d.needs_review]


RAMBLE = ("The cardiac silhouette appears enlarged with a cardiothoracic ratio above what would be expected on "
          "this projection and the mediastinal contours are prominent although positioning and inspiration "
          "limit the assessment there is no focal consolidation and the costophrenic angles are sharp so "
          "cardiomegaly is present")


def test_a_long_answer_already_cited_is_quoted_short_once_not_repeated_whole():
    """The VLM's yes/no answer is a call the Sources line quotes: the reply quotes it short, keeps its
    negation, and does not repeat it whole as a "VLM answer" bullet (it stays whole in "why?")."""
    said = FindingCall(finding="cardiomegaly", status=Status.present, source="vlm", text=RAMBLE,
                       task="question")
    clf = _clf(0.8, Status.present, "cardiomegaly")
    d = Decision(finding="cardiomegaly", status=Status.present, confidence=0.8, agreeing=["vlm", "classifier"],
                 rationale="Cardiomegaly: both agree.", calls=[said, clf])
    ev = [Evidence(tool="vlm", answer=RAMBLE, calls=[said]), Evidence(tool="classifier", calls=[clf])]
    route = {"intent": "finding_question", "finding": "cardiomegaly", "findings": ["cardiomegaly"]}
    text = compose(route, ev, [d], study={"id": "s"})
    assert "VLM answer" not in text and RAMBLE not in text
    quote = re.search(r"vlm says present, (\u201c[^\u201d]*\u201d)", text).group(1)
    assert len(quote) < 260 and " no " in quote  # bounded, and its negation kept
    # a free answer the Sources do not quote is still given whole
    free = compose({"intent": "finding_question", "phrase": "trachea midline"},
                   [Evidence(tool="vlm", answer=RAMBLE)], [], study={"id": "s"})
    assert f"VLM answer: {RAMBLE}" in free


def test_a_long_locate_answer_is_quoted_short_beside_the_boxes():
    route = {"intent": "locate", "finding": "cardiomegaly", "findings": ["cardiomegaly"]}
    text = compose(route, [Evidence(tool="vlm", answer=RAMBLE)], [], study={"id": "s"})
    line = next(x for x in text.splitlines() if x.startswith("- VLM:"))
    assert RAMBLE not in text and len(line) < 280 and " no " in line
