"""The cxr-agent LangGraph state machine.

    START -> ingest -+-> router -+-> tools (parallel Send branches) -> reconcile -+-> verify -> respond -> END
                     |           |                                               +-------------> respond
                     |           +-> respond   (explain, no image yet, no tool for the intent)
                     +-> respond               (the image could not be read)

``build_graph()`` is cheap: built-in tools are constructed, and their weights loaded, on first
use; missing weights surface as Evidence(ok=False) in the reply, never as an import error.

    out = graph.invoke({"messages": [("user", "Write a report")], "image": "study.dcm"},
                       config={"configurable": {"thread_id": "t1"}})
    out["messages"][-1].content, out["evidence"], out["decisions"]   # this turn's

Input keys: ``messages``; optional ``image`` (path or bytes, with ``image_name`` for bytes) or
``study_id`` (from ``store_image``: keeps image bytes out of checkpoints). Later turns may omit
the image: the thread remembers its study; a new image starts a new study in the same thread.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph

from agents.nodes import Nodes
from agents.state import CxrState
from cxr_agent.settings import Settings, get_settings
from tools.registry import resolve_tools

NODES = ("ingest", "router", "tools", "reconcile", "verify", "respond")


def build_graph(
    settings: Settings | None = None,
    *,
    tools: Iterable[Any] | None = None,
    checkpointer: BaseCheckpointSaver | bool | None = None,
    builtin_tools: bool = True,
    plugins: bool = True,
    store: Any = None,
):
    """Compile the graph.

    tools: custom tools (CxrTool objects, classes, LangChain tools); one named like a built-in
    replaces it. builtin_tools / plugins: include the built-in tools / ``cxr_agent.tools`` entry
    points. checkpointer: a saver, ``None`` for the one ``settings.resolved_checkpointer_url``
    names, ``False`` for none (e.g. when a LangGraph server supplies persistence).
    store: a StudyStore (default: ``StudyStore.from_settings``, created on first use).
    """
    settings = settings or get_settings()
    registry = resolve_tools(settings, tools, builtins=builtin_tools, plugins=plugins)
    nodes = Nodes(settings, registry, store=store)

    g = StateGraph(CxrState)
    # ingest, router and reconcile route by returning Command(goto=...): cheaper than conditional
    # edges, each of which copies the whole state per turn. `destinations` draws those edges.
    g.add_node("ingest", nodes.ingest, destinations=("router", "respond"))
    g.add_node("router", nodes.router, destinations=("tools", "respond"))
    g.add_node("tools", nodes.run_tools)
    g.add_node("reconcile", nodes.reconcile, destinations=("verify", "respond"))
    g.add_node("verify", nodes.verify)
    g.add_node("respond", nodes.respond)
    g.add_edge(START, "ingest")
    g.add_edge("tools", "reconcile")
    g.add_edge("verify", "respond")
    g.add_edge("respond", END)

    if checkpointer is None:
        from agents.memory import make_checkpointer

        checkpointer = make_checkpointer(settings)
    compiled = g.compile(checkpointer=checkpointer or None, name="cxr_agent")
    compiled.cxr_nodes = nodes  # type: ignore[attr-defined]  # tools, store, store_image for callers
    return compiled


def store_image(source: Any, *, filename: str | None = None, graph: Any = None) -> str:
    """Decode, de-identify and store an image; returns the ``study_id`` to pass to invoke()."""
    target = graph if graph is not None else globals()["graph"]
    return target.cxr_nodes.store_image(source, filename=filename)


def _served_by_langgraph_api() -> bool:
    """Loaded by `langgraph dev` / LangGraph Server, which supplies persistence itself and refuses a
    graph compiled with its own checkpointer."""
    import sys

    return "langgraph_api" in sys.modules


graph = build_graph(checkpointer=False if _served_by_langgraph_api() else None)
