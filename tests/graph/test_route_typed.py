"""The turn's route is kept typed in the state: a ``Route`` goes into the checkpoint and a ``Route`` comes back,
under strict deserialization too; a checkpoint that holds the older plain-dict route still loads and goes on."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from graph_scripted import ScriptedVLM, classifier, retrieval

from agents.routing import Route, as_route
from cxr_agent.settings import Settings

REPO = Path(__file__).resolve().parents[2]

STRICT_SQLITE_CONVERSATION = textwrap.dedent("""
    import json, logging, sys
    logging.basicConfig(level=logging.WARNING)
    sys.path.insert(0, "tests")
    from graph_scripted import ScriptedVLM, classifier
    from agents.memory.checkpointers import make_checkpointer, serializer
    from agents.routing.rules import Clarify, Reading, Route
    from cxr_agent.settings import Settings
    from graph import build_graph

    s = Settings(model_profile="tiny", offline=True, data_dir=sys.argv[1], tool_timeout_s=30)
    url = f"sqlite:///{sys.argv[1]}/threads.sqlite"

    def graph():
        return build_graph(s, tools=[ScriptedVLM(report="Cardiomegaly."), classifier({"cardiomegaly": 0.85,
                           "nodule": 0.7})], builtin_tools=False, plugins=False, checkpointer=make_checkpointer(url=url))

    cfg = {"configurable": {"thread_id": "typed"}}
    g = graph()
    g.invoke({"messages": [("user", "Write a report")], "image": sys.argv[2]}, cfg)
    g.invoke({"messages": [("user", "Is there a nodule?")]}, cfg)
    where = g.invoke({"messages": [("user", "Where is it?")]}, cfg)
    route = graph().get_state(cfg).values["route"]  # read back from the file by a graph that never held it
    unsure = Route(intent="finding_question", clarify=Clarify(about="finding", readings=[
        Reading(intent="finding_question", finding="edema", score=0.8),
        Reading(intent="finding_question", phrase="edemaa", score=0.2)]))
    serde = serializer()
    back = serde.loads_typed(serde.dumps_typed(unsure))
    print(json.dumps({"type": type(route).__name__, "route": route.model_dump() if hasattr(route, "model_dump")
                      else route, "reply": where["messages"][-1].content,
                      "clarify": [type(back).__name__, type(back.clarify).__name__, back == unsure]}))
""")


def test_the_route_read_back_from_sqlite_under_strict_deserialization_is_a_route(tmp_path, cxr_image):
    env = {**os.environ, "PYTHONPATH": str(REPO), "LANGGRAPH_STRICT_MSGPACK": "true", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", STRICT_SQLITE_CONVERSATION, str(tmp_path), str(cxr_image)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["type"] == "Route", result
    # "where is it?" took the finding of the previous question: the conversation ran on the typed route
    assert result["route"]["intent"] == "locate" and result["route"]["finding"] == "nodule", result["route"]
    assert "Nodule" in result["reply"]
    assert result["clarify"] == ["Route", "Clarify", True]  # a nested ask-back round-trips typed
    assert "Blocked deserialization" not in proc.stderr and "unregistered type" not in proc.stderr


FIXTURE = REPO / "tests" / "fixtures" / "migration_v0_1"


def test_a_checkpoint_holding_the_old_dict_route_loads_and_goes_on(tmp_path):
    root = tmp_path / "v0_1"
    shutil.copytree(FIXTURE, root, ignore=shutil.ignore_patterns("*.py", "expected.json"))
    expected = json.loads((FIXTURE / "expected.json").read_text())
    from graph import build_graph

    settings = Settings(model_profile="tiny", offline=True, data_dir=root / "data", tool_timeout_s=10,
                        checkpointer_url=f"sqlite:///{root / 'checkpoints.sqlite'}")
    g = build_graph(settings, tools=[ScriptedVLM(), classifier({"pleural_effusion": 0.8}),
                                     retrieval([["pleural_effusion"]])], builtin_tools=False, plugins=False)
    cfg = {"configurable": {"thread_id": expected["thread_id"]}}
    old = g.get_state(cfg).values["route"]
    assert isinstance(old, dict) and "tools" in old  # the form checkpoints were written in before
    typed = as_route(old)
    assert isinstance(typed, Route) and (typed.intent, typed.finding) == (old["intent"], old.get("finding"))
    out = g.invoke({"messages": [("user", "Is there a pleural effusion?")]}, cfg)
    assert isinstance(out["route"], Route) and out["route"].finding == "pleural_effusion"
    assert isinstance(g.get_state(cfg).values["route"], Route)
    assert "**Yes** — pleural effusion" in out["messages"][-1].content


def test_as_route_names_what_it_cannot_read():
    assert as_route(None) is None
    r = Route(intent="report")
    assert as_route(r) is r
    assert as_route({"intent": "locate", "finding": "nodule", "tools": ["vlm"]}) == Route(intent="locate",
                                                                                        finding="nodule")
    with pytest.raises(TypeError, match="not int"):
        as_route(42)  # type: ignore[arg-type]
