"""The one tool contract: a custom tool that declares a capability gets exactly the built-ins'
treatment (report labelled + the report-silence rule, re-asked on conflict, gets the draft), from a
plain object, a LangChain tool or an allow-listed entry-point plugin."""

from __future__ import annotations

import logging
import sys
import threading
from dataclasses import replace

import pytest
from graph_scripted import ScriptedTool, classifier
from langchain_core.tools import tool

from knowledge.evidence import Evidence, FindingCall, Status
from tools.base import ToolCapabilities, ToolRequest, capabilities
from tools.registry import as_cxr_tool, load_entry_point_tools, resolve_tools

REPORT = "Mild cardiomegaly. Lungs otherwise clear."


class Scribe(ScriptedTool):
    """A custom report writer (not named like any built-in)."""

    writes_report = True

    def __init__(self, report: str = REPORT, **kw):
        super().__init__("scribe", {"report"}, Evidence(tool="scribe", report=report), **kw)


class Reader(Scribe):
    """A custom report writer that also answers re-asks (like the built-in VLM): always 'present'."""

    verifies = True

    def __init__(self, **kw):
        super().__init__(**kw)
        self.name = "reader"
        self.result = Evidence(tool="reader", report=REPORT)
        self.batches: list[list[str]] = []

    def verify(self, study, findings, *, thread_id=None, cancel=None):
        self.batches.append(list(findings))
        return [Evidence(tool="reader", answer="Yes.",
                         calls=[FindingCall(finding=f, status=Status.present, source="reader")]) for f in findings]


def _report(g, thread, image):
    return g.invoke({"messages": [("user", "Write a report")], "image": str(image)}, thread())


def test_custom_report_writer_is_labelled_and_its_silence_counts(make_graph, thread, cxr_image):
    clf = classifier({"pleural_effusion": 0.9, "cardiomegaly": 0.8})
    out = _report(make_graph(Scribe(), clf), thread, cxr_image)
    scribe = next(e for e in out["evidence"] if e.tool == "scribe")
    assert {c.finding for c in scribe.calls if c.status is Status.present} == {"cardiomegaly"}  # labelled
    effusion = next(d for d in out["decisions"] if d.finding == "pleural_effusion")
    silent = [c for c in effusion.calls if c.source == "scribe"]
    assert silent and silent[0].implied == "report_silence"  # its silence is weak evidence of absence
    assert effusion.conflict and "scribe" in effusion.disagreeing
    assert "Mild cardiomegaly." in out["messages"][-1].content  # shown as the turn's report

    # The same tool without the capability: its report is neither labelled nor a silent vote.
    plain = ScriptedTool("scribe", {"report"}, Evidence(tool="scribe", report=REPORT))
    out = _report(make_graph(plain, classifier({"pleural_effusion": 0.9})), thread, cxr_image)
    assert next(e for e in out["evidence"] if e.tool == "scribe").calls == []
    effusion = next(d for d in out["decisions"] if d.finding == "pleural_effusion")
    assert all(c.source != "scribe" for c in effusion.calls) and not effusion.conflict


def test_custom_verifier_is_reasked_once_for_all_conflicts(make_graph, thread, cxr_image):
    clf = classifier({"pleural_effusion": 0.9, "pneumothorax": 0.9, "cardiomegaly": 0.8})
    reader = Reader()
    out = _report(make_graph(reader, clf), thread, cxr_image)
    assert len(reader.batches) == 1 and sorted(reader.batches[0]) == ["pleural_effusion", "pneumothorax"]
    for f in ("pleural_effusion", "pneumothorax"):
        d = next(d for d in out["decisions"] if d.finding == f)
        assert d.status is Status.present and not d.conflict and d.verification
        assert set(d.agreeing) == {"classifier", "reader"}
    rechecks = [e for e in out["evidence"] if e.meta.get("verification")]
    assert sorted(e.meta["verification"] for e in rechecks) == ["pleural_effusion", "pneumothorax"]
    assert {e.tool for e in rechecks} == {"reader"}
    # Without the capability the same conflicts stay flagged: no tool can be re-asked.
    out = _report(make_graph(Scribe(), classifier({"pleural_effusion": 0.9})), thread, cxr_image)
    assert "no tool that answers verification questions is configured" in out["messages"][-1].content


def test_custom_tool_needing_a_draft_runs_after_the_writer_and_gets_it(make_graph, thread, cxr_image):
    searcher = ScriptedTool("searcher", {"report"}, Evidence(tool="searcher", answer="found"), image_source=False)
    searcher.needs_draft = True
    scribe = Scribe()
    out = _report(make_graph(scribe, searcher), thread, cxr_image)
    assert searcher.requests[0].draft_report == REPORT
    assert next(e for e in out["evidence"] if e.tool == "searcher").ok
    # No draft (the writer failed): not run, and says why.
    searcher2 = ScriptedTool("searcher", {"report"}, Evidence(tool="searcher"), image_source=False)
    searcher2.needs_draft = True
    out = _report(make_graph(Scribe(raises=RuntimeError("down")), searcher2), thread, cxr_image)
    assert searcher2.calls == 0
    assert next(e for e in out["evidence"] if e.tool == "searcher").error == \
        "not run: scribe produced no draft report to search with"


def test_langchain_tool_declares_capabilities_in_metadata(make_graph, thread, cxr_image):
    @tool
    def lc_scribe(text: str) -> dict:
        """Writes a report."""
        return {"report": REPORT}

    lc_scribe.metadata = {"cxr_intents": ["report"], "cxr_writes_report": True, "cxr_image_source": True,
                          "cxr_verifies": True}
    adapted = as_cxr_tool(lc_scribe)
    assert capabilities(adapted) == ToolCapabilities(frozenset({"report"}), image_source=True, writes_report=True,
                                                     verifies=True)
    out = _report(make_graph(adapted, classifier({"pleural_effusion": 0.9})), thread, cxr_image)
    ev = next(e for e in out["evidence"] if e.tool == "lc_scribe")
    assert "cardiomegaly" in {c.finding for c in ev.calls}  # labelled like the built-in VLM's report
    effusion = next(d for d in out["decisions"] if d.finding == "pleural_effusion")
    assert any(c.source == "lc_scribe" and c.implied == "report_silence" for c in effusion.calls)
    # a verifying LangChain tool is re-asked (one finding question per finding)
    assert {e.meta.get("verification") for e in out["evidence"] if e.tool == "lc_scribe"} >= {"pleural_effusion"}

    @tool
    def lc_search(draft_report: str) -> str:
        """Searches with the draft."""
        return f"searched: {draft_report}"

    lc_search.metadata = {"cxr_intents": ["report"], "cxr_needs_draft": True}
    assert capabilities(as_cxr_tool(lc_search)).needs_draft
    lc_search.metadata = {**lc_search.metadata, "cxr_label": "the archive search"}
    assert capabilities(as_cxr_tool(lc_search)).label == "the archive search"


def test_declaring_verifies_without_a_verify_method_is_refused():
    bad = ScriptedTool("liar", {"report"})
    bad.verifies = True
    with pytest.raises(TypeError, match="declares verifies=True but has no verify"):
        as_cxr_tool(bad)


def test_custom_tool_replacing_a_builtin_keeps_its_capabilities_unless_declared(settings):
    reg = resolve_tools(settings, [ScriptedTool("vlm", {"report", "chat"})], plugins=False)
    caps = capabilities(reg["vlm"])
    assert caps.writes_report and caps.verifies and caps.image_source
    quiet = ScriptedTool("vlm", {"chat"})
    quiet.writes_report = False
    assert not capabilities(resolve_tools(settings, [quiet], plugins=False)["vlm"]).writes_report


def test_builtins_declare_capabilities_without_loading(settings):
    reg = resolve_tools(settings, plugins=False)
    assert capabilities(reg["vlm"]).writes_report and capabilities(reg["vlm"]).verifies
    assert capabilities(reg["classifier"]).image_source and not capabilities(reg["classifier"]).writes_report
    assert capabilities(reg["retrieval"]).needs_draft and not capabilities(reg["retrieval"]).image_source
    assert not any(t.loaded for t in reg.values())


PLUGIN = '''
from knowledge.evidence import Evidence


class PluginScribe:
    name = "plugin_scribe"
    intents = frozenset({"report"})
    image_source = True
    writes_report = True

    def run(self, request):
        return Evidence(tool=self.name, report="Mild cardiomegaly.")
'''


@pytest.fixture
def plugin_site(tmp_path, monkeypatch):
    site = tmp_path / "site"
    dist = site / "cxr_scribe_plugin-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: cxr-scribe-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[cxr_agent.tools]\nplugin_scribe = cxr_scribe_plugin_mod:PluginScribe\n")
    (site / "cxr_scribe_plugin_mod.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(site))
    yield site
    sys.modules.pop("cxr_scribe_plugin_mod", None)


def test_entry_point_plugin_is_loaded_only_when_allow_listed(settings, plugin_site, caplog):
    with caplog.at_level(logging.INFO, logger="tools.registry"):
        assert load_entry_point_tools(settings=settings) == []
    assert "cxr_scribe_plugin_mod" not in sys.modules  # its code never ran
    assert "not in CXR_AGENT_PLUGINS" in caplog.text
    allowed = settings.model_copy(update={"plugins": "other, plugin_scribe"})
    (plugin,) = load_entry_point_tools(settings=allowed)
    assert capabilities(plugin) == ToolCapabilities(frozenset({"report"}), image_source=True, writes_report=True)


def test_allow_listed_plugin_gets_the_builtin_treatment(settings, thread, cxr_image, plugin_site):
    from graph import build_graph, runtime

    allowed = settings.model_copy(update={"plugins": "plugin_scribe"})
    g = build_graph(allowed, tools=[classifier({"pleural_effusion": 0.9})], builtin_tools=False, plugins=True)
    assert runtime(g).capabilities["plugin_scribe"].writes_report
    out = _report(g, thread, cxr_image)
    ev = next(e for e in out["evidence"] if e.tool == "plugin_scribe")
    assert "cardiomegaly" in {c.finding for c in ev.calls}
    effusion = next(d for d in out["decisions"] if d.finding == "pleural_effusion")
    assert any(c.source == "plugin_scribe" and c.implied == "report_silence" for c in effusion.calls)


def test_settings_env_allow_list(monkeypatch, tmp_path):
    from cxr_agent.settings import Settings
    from tools.registry import plugin_allowlist

    monkeypatch.setenv("CXR_AGENT_PLUGINS", "a, b ,,c")
    assert plugin_allowlist(Settings(data_dir=tmp_path)) == {"a", "b", "c"}


def test_verify_findings_falls_back_to_one_finding_verify_finding():
    from tools.base import verify_findings

    class Old:
        name = "old"

        def verify_finding(self, study, finding, *, thread_id=None):
            return Evidence(tool="old", answer=finding)

    cancel = threading.Event()
    assert [e.answer for e in verify_findings(Old(), None, ["a", "b"], cancel=cancel)] == ["a", "b"]
    cancel.set()
    out = verify_findings(Old(), None, ["a", "b"], cancel=cancel)
    assert [e.ok for e in out] == [False, False] and "no verification answer for a" in out[0].error
    assert capabilities(Old()).verifies


def test_request_cancel_defaults_to_a_fresh_event():
    a, b = ToolRequest(intent="report"), ToolRequest(intent="report")
    assert isinstance(a.cancel, threading.Event) and a.cancel is not b.cancel and not a.cancel.is_set()


def test_a_second_vlm_family_is_a_lazy_builtin_with_the_vlms_capabilities(settings):
    reg = resolve_tools(settings.model_copy(update={"vlm_compare": "medgemma"}), plugins=False)
    assert list(reg) == ["vlm", "classifier", "retrieval", "vlm-medgemma"]
    second, first = capabilities(reg["vlm-medgemma"]), capabilities(reg["vlm"])
    assert replace(second, label=None) == replace(first, label=None) and not reg["vlm-medgemma"].loaded
    assert (first.label, second.label) == ("the VLM", "the second VLM (medgemma)")  # replies tell them apart
    assert "vlm-medgemma" not in resolve_tools(settings, plugins=False)


def test_each_conflict_is_reasked_of_the_verifier_on_its_disagreeing_side(make_graph, thread, cxr_image):
    """Two report writers that both verify: a finding only one of them is silent about goes to that one."""
    first, second = Reader(report="Mild cardiomegaly."), Reader(report="Mild cardiomegaly. Small left effusion.")
    second.name = "reader2"
    second.result = Evidence(tool="reader2", report="Mild cardiomegaly. Small left effusion.")

    def verify2(study, findings, *, thread_id=None, cancel=None):
        second.batches.append(list(findings))
        return [Evidence(tool="reader2", answer="Yes.",
                         calls=[FindingCall(finding=f, status=Status.present, source="reader2")]) for f in findings]

    second.verify = verify2
    out = _report(make_graph(second, first, classifier({"pleural_effusion": 0.9, "cardiomegaly": 0.8})),
                  thread, cxr_image)
    effusion = next(d for d in out["decisions"] if d.finding == "pleural_effusion")
    assert first.batches == [["pleural_effusion"]] and second.batches == []  # the silent one is re-asked
    assert effusion.status is Status.present and not effusion.conflict and "reader" in effusion.agreeing


def test_report_labels_sit_beside_a_tools_own_classification_calls(make_graph, thread, cxr_image):
    """A writer that also lists findings (task="classification") keeps those calls; the labels of its
    report text are added as task="report" calls for the same findings, not dropped."""
    listed = FindingCall(finding="cardiomegaly", status=Status.present, source="scribe", task="classification")
    scribe = Scribe()
    scribe.result = Evidence(tool="scribe", report=REPORT, calls=[listed])
    out = _report(make_graph(scribe), thread, cxr_image)
    ev = next(e for e in out["evidence"] if e.tool == "scribe")
    cardio = [c for c in ev.calls if c.finding == "cardiomegaly"]
    assert [c.task for c in cardio] == ["classification", "report"]
    assert all(c.source == "scribe" for c in ev.calls)


def test_custom_writer_is_a_statement_source_and_its_box_is_shown_first(make_graph, thread, cxr_image):
    """The reconciler's statement and box rules read capabilities: a writer not named 'vlm' gets them."""
    from knowledge.evidence import Box

    writer_box, heat_box = Box(x1=0.55, y1=0.5, x2=0.9, y2=0.9), Box(x1=0.1, y1=0.1, x2=0.3, y2=0.3)
    scribe = Scribe()
    # an unscored, unquoted present call with a box: only a statement source's call is high-confidence
    scribe.result = Evidence(tool="scribe", report=REPORT, calls=[
        FindingCall(finding="pleural_effusion", status=Status.present, source="scribe", box=writer_box)])
    clf = classifier({"pleural_effusion": 0.8}, boxes={"pleural_effusion": heat_box})
    out = _report(make_graph(scribe, clf), thread, cxr_image)
    effusion = next(d for d in out["decisions"] if d.finding == "pleural_effusion")
    assert effusion.status is Status.present and not effusion.conflict
    assert effusion.box == writer_box  # the writer's box before the classifier's heatmap box
    assert effusion.confidence >= 0.9  # two high-confidence sources agree (the scribe's call is a statement)


class Labelled(Reader):
    """A verifying writer that declares how replies name it, and whose re-ask misses the point."""

    label = "the second reader"

    def verify(self, study, findings, *, thread_id=None, cancel=None):
        self.batches.append(list(findings))
        return [Evidence(tool="reader", answer="Unclear.") for _ in findings]  # no call on the finding


def test_replies_name_a_custom_tool_by_its_declared_label(make_graph, thread, cxr_image):
    out = _report(make_graph(Labelled(), classifier({"pleural_effusion": 0.9})), thread, cxr_image)
    text = out["messages"][-1].content
    assert "_Drafted by the second reader;" in text and "the VLM" not in text
    effusion = next(d for d in out["decisions"] if d.finding == "pleural_effusion")
    assert effusion.conflict and "the second reader's answer did not address this finding" in effusion.verification
    assert "not in second reader report;" in text  # the review line, in its label
    # undeclared: the tool is named by its name, never as "the VLM"
    out = _report(make_graph(Scribe(), classifier({"pleural_effusion": 0.9})), thread, cxr_image)
    text = out["messages"][-1].content
    assert "_Drafted by tool 'scribe';" in text and "VLM" not in text
