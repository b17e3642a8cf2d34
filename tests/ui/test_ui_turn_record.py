"""The UI draws a turn from its one TurnRecord, and the tool roles in it are the graph's one reading.

A graph over custom tools only (a report writer, an image scorer, a similar-case prior, each named
so no built-in default could stand in) answers "Write a report" through ``ui.turn.run_turn``, the
app's own path. The graph's ``get_state`` fails if called: the turn's reply, evidence, decisions and
roles must all come from the record in the respond node's update. The same roles then decide the
reply's words, the evidence table's columns and the box colours.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage

from knowledge.evidence import Box, Evidence, FindingCall, Status
from ui.evidence_table import COL_CLASSIFIER, COL_OTHER, COL_RETRIEVAL, COL_VLM, build_rows
from ui.overlays import ROLE_PALETTES, SourcePalette
from ui.turn import run_turn

ROOT = Path(__file__).resolve().parents[2]


class _Tool:
    """A custom tool declaring its capabilities as attributes, answering with fixed calls."""

    def __init__(self, name: str, calls: list[FindingCall], *, intents: frozenset[str] = frozenset({"report"}),
                 report: str | None = None, **caps: Any) -> None:
        self.name, self.intents, self._calls, self._report = name, intents, calls, report
        for k, v in caps.items():
            setattr(self, k, v)

    def run(self, request) -> Evidence:
        return Evidence(tool=self.name, calls=self._calls, report=self._report)


def _tools() -> list[_Tool]:
    box = Box(x1=0.3, y1=0.4, x2=0.7, y2=0.8)
    return [
        _Tool("scribe", [FindingCall(finding="cardiomegaly", status=Status.present, source="scribe", box=box,
                                     text="Enlarged heart")],
              report="Enlarged heart. No effusion.", writes_report=True, image_source=True, label="the scribe"),
        _Tool("densenet2", [FindingCall(finding="cardiomegaly", status=Status.present, score=0.81,
                                        score_kind="op_norm", source="densenet2")], image_source=True),
        _Tool("atlas", [FindingCall(finding="cardiomegaly", status=Status.present, score=0.4,
                                    score_kind="neighbor_fraction", source="atlas")],
              intents=frozenset({"report", "similar_cases"})),
    ]


class _NoStateReads:
    """A compiled graph whose thread state the UI must not read for the turn it just ran."""

    def __init__(self, graph: Any) -> None:
        self.graph = graph

    def stream(self, *args: Any, **kwargs: Any):
        return self.graph.stream(*args, **kwargs)

    def get_state(self, config: Any) -> Any:
        raise AssertionError("the UI read the thread's state for the turn's content")


@pytest.fixture(scope="module")
def report_turn(tmp_path_factory, cxr_image: Path):
    """One "Write a report" turn through the app's path, over the custom tools only: (graph, TurnResult)."""
    from cxr_agent.settings import Settings
    from graph import build_graph, store_image

    settings = Settings(model_profile="tiny", offline=True, data_dir=tmp_path_factory.mktemp("record"),
                        checkpointer_url="memory", tool_timeout_s=10, router_semantic=False)
    graph = build_graph(settings, tools=_tools(), builtin_tools=False, plugins=False)
    study_id = store_image(cxr_image, graph=graph)
    turn = run_turn(_NoStateReads(graph), "Write a report", thread_id="t-record",
                    extra_inputs={"study_id": study_id})
    return graph, turn


def test_the_turn_is_drawn_from_its_record_never_from_the_state(report_turn):
    graph, turn = report_turn
    assert turn.error is None, turn.error  # get_state was never called
    record = turn.record
    assert record is not None and turn.reply == record.reply and "Enlarged heart" in turn.reply
    assert [e.tool for e in turn.evidence] == [e.tool for e in record.evidence] and \
        {e.tool for e in turn.evidence} == {"scribe", "densenet2", "atlas"}
    # what the record holds is what the thread now holds: nothing is missing by not reading the state
    values = graph.get_state({"configurable": {"thread_id": "t-record"}}).values
    assert [d.model_dump() for d in turn.decisions] == [d.model_dump() for d in values["decisions"]]
    assert turn.study_id == values["study_id"] and turn.cxr["study_id"] == values["study_id"]
    assert turn.cxr["boxes"] and turn.cxr["boxes"][0]["source"] == "scribe"


def test_a_custom_tools_declared_role_is_honoured_in_reply_table_and_overlays(report_turn):
    """One reading of roles (the graph's, carried by the record): the custom writer is named by its
    label in the reply, fills the VLM column and takes the VLM's box colour; the custom scorer and
    prior likewise take the classifier's and retrieval's places."""
    _, turn = report_turn
    roles = turn.roles
    assert roles is not None
    assert (roles.writers, roles.scorers, roles.neighbours) == (("scribe",), ("densenet2",), ("atlas",))
    assert "Drafted by the scribe" in turn.reply  # the reply
    (row,) = [r for r in build_rows(turn.evidence, turn.decisions, roles=roles) if r["_finding_id"] == "cardiomegaly"]
    assert row[COL_VLM].startswith("present") and row[COL_CLASSIFIER] == "0.81 -> present"  # the table
    assert row[COL_RETRIEVAL] and row[COL_OTHER] == ""
    palette = SourcePalette.from_roles(roles)  # the overlays
    assert palette.color("scribe") == ROLE_PALETTES["writer"][0]
    assert palette.color("densenet2") == ROLE_PALETTES["image"][0]
    assert palette.color("atlas") == ROLE_PALETTES["prior"][0]
    # without the turn's roles the same tools would be strangers: the roles came from the record
    (plain,) = [r for r in build_rows(turn.evidence, turn.decisions) if r["_finding_id"] == "cardiomegaly"]
    assert plain[COL_VLM] == "" and "scribe" in plain[COL_OTHER]


def test_a_record_from_a_server_reads_like_one_in_process(report_turn):
    """Behind LangGraph Server the record and the reply message arrive as JSON; the turn is the same."""
    from ui_helpers import ScriptedGraph

    _, local = report_turn
    wire = {"respond": {"messages": [{"type": "ai", "content": local.reply,
                                      "additional_kwargs": {"cxr": local.cxr}}],
                        "record": local.record.model_dump(mode="json")}}
    served = ScriptedGraph([("custom", {"event": "reply", "text": "preview"}), ("updates", wire)], values={})
    served.get_state = _NoStateReads(None).get_state
    remote = run_turn(served, "Write a report", thread_id="t-wire")
    assert remote.error is None and remote.reply == local.reply and remote.cxr == local.cxr
    assert remote.roles == local.roles and remote.decisions == local.decisions
    assert [e.model_dump() for e in remote.evidence] == [e.model_dump() for e in local.evidence]


def test_without_a_record_the_turn_has_no_answer():
    """Stream events are progress only: a reply event alone is not an answer."""
    from ui_helpers import ScriptedGraph

    graph = ScriptedGraph([("custom", {"event": "reply", "text": "half"})], values={
        "messages": [AIMessage("from the state")]})
    turn = run_turn(graph, "hi", thread_id="t-none")
    assert turn.error == "The assistant returned no reply." and turn.reply == ""


def test_roles_are_read_from_capabilities_in_one_place():
    """Only ToolRoles.from_capabilities turns capability flags into roles: the UI reads none, the graph's
    nodes build the one value, and nothing else under agents/ (the runner's chains, the re-ask, the
    comparison, the multiple-choice answerer) reads a role flag itself: each takes the graph's roles."""
    role_flags = r"(writes_report|image_source|needs_draft|verifies|compares_priors)"
    reads_flag = re.compile(rf"\.{role_flags}\b|[\"']{role_flags}[\"']")
    flags = re.compile(r"\.(writes_report|image_source)\b|from_capabilities|runtime\([^)]*\)\.capabilities")
    ui_reads = [f"{p.relative_to(ROOT)}:{i}" for p in sorted((ROOT / "ui").glob("*.py"))
                for i, line in enumerate(p.read_text().splitlines(), 1) if flags.search(line)]
    assert ui_reads == []
    roles_module = ROOT / "agents" / "replying" / "roles.py"
    agents = [p for p in sorted((ROOT / "agents").rglob("*.py")) if p != roles_module]
    flag_reads = [f"{p.relative_to(ROOT)}:{i}: {line.strip()}" for p in agents
                  for i, line in enumerate(p.read_text().splitlines(), 1) if reads_flag.search(line)]
    assert flag_reads == []
    derived = {str(p.relative_to(ROOT)): p.read_text().count("from_capabilities") for p in agents}
    # the nodes' one value per graph; an answerer built without a graph reads its tools the same way
    assert {k: n for k, n in derived.items() if n} == {"agents/turn/nodes.py": 1, "agents/turn/multiple_choice.py": 1}
    graph_module = (ROOT / "graph.py").read_text()
    assert "roles=nodes.roles" in graph_module and not reads_flag.search(graph_module)
