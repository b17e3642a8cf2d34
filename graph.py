"""The cxr-agent LangGraph state machine.

    START -> ingest -+-> router -+-> tools (parallel Send branches) -> reconcile -+-> verify -> respond -> END
                     |           |                                               +-------------> respond
                     |           +-> reconcile (the study's ledger answers every ask: no tool runs)
                     |           +-> respond   (explain, no image yet, no tool for the intent)
                     +-> respond               (the image could not be read)

``build_graph()`` is cheap: built-in tools are constructed, and their weights loaded, on first
use; missing weights surface as Evidence(ok=False) in the reply, never as an import error.

    out = graph.invoke({"messages": [("user", "Write a report")], "image": "study.dcm"},
                       config={"configurable": {"thread_id": "t1"}})
    out["messages"][-1].content, out["record"]   # this turn's reply and TurnRecord
    out["decisions"]                               # the study's decisions, from its whole evidence ledger

Input (``agents.state.CxrInput``, the graph's input schema): ``messages``; optional ``image``
(path or bytes, with ``image_name`` for bytes) or ``study_id`` (from ``store_image``: keeps image
bytes out of checkpoints). Later turns may omit the image: the thread remembers its study; a new
image starts a new study in the same thread. A value of the wrong type raises GraphInputError.

``import graph`` opens no database: the checkpointer is created on the first checkpoint operation
(agents/memory/lazy_saver.py). ``runtime(g)`` gives a compiled graph's tools and studies;
``store_image`` / ``ingest_image`` are the one way to put an image into a graph's study store.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph

from agents.replying.roles import ToolRoles
from agents.state import CxrInput, CxrServerInput, CxrState
from agents.turn.nodes import Nodes
from cxr_agent.settings import Settings, get_settings
from tools.base import ToolCapabilities
from tools.ingestion.intake import Studies
from tools.registry import resolve_tools

NODES = ("ingest", "router", "tools", "reconcile", "verify", "respond")
try:  # the run-config key of a run's default durability (langgraph reads it when invoke() names none)
    from langgraph._internal._constants import CONFIG_KEY_DURABILITY as _DURABILITY_KEY
except ImportError:  # pragma: no cover - older/newer layouts
    _DURABILITY_KEY = "__pregel_durability"


@dataclass(frozen=True)
class GraphRuntime:
    """What a compiled graph runs with besides its state: settings, tools (with their declared
    capabilities), studies (the store plus the decoded-study cache) and the tool roles its nodes read
    from those capabilities (what any other reader of the graph's tools uses, never the flags)."""

    settings: Settings
    tools: dict[str, Any]
    capabilities: dict[str, ToolCapabilities]
    studies: Studies
    roles: ToolRoles


_RUNTIMES: weakref.WeakKeyDictionary[Any, GraphRuntime] = weakref.WeakKeyDictionary()


def build_graph(
    settings: Settings | None = None,
    *,
    tools: Iterable[Any] | None = None,
    checkpointer: BaseCheckpointSaver | bool | None = None,
    builtin_tools: bool = True,
    plugins: bool = True,
    store: Any = None,
    server_input: bool = False,
):
    """Compile the graph.

    tools: custom tools (CxrTool objects, classes, LangChain tools); one named like a built-in
    replaces it. builtin_tools / plugins: include the built-in tools / the ``cxr_agent.tools``
    entry points allow-listed in ``settings.plugins``. checkpointer: a saver, ``None`` for the one
    ``settings.resolved_checkpointer_url`` names (opened on first use), ``False`` for none (e.g. when
    a LangGraph server supplies persistence). store: a StudyStore (default:
    ``StudyStore.from_settings``, opened on first use). A saver passed in is made to drop the raw
    ``image``/``image_name`` input before it writes (agents.memory.checkpointers.scrubbing). server_input: offer only
    ``messages`` and ``study_id`` as input and read no image whatever writes the ``image`` channel (a
    LangGraph Server deployment never takes raw images).
    """
    settings = settings or get_settings()
    registry = resolve_tools(settings, tools, builtins=builtin_tools, plugins=plugins)
    studies = Studies(settings, store=store, accept_images=not server_input)  # served: a study_id only
    nodes = Nodes(settings, registry, studies=studies)

    g = StateGraph(CxrState, input_schema=CxrServerInput if server_input else CxrInput)
    # ingest, router and reconcile route by returning Command(goto=...): cheaper than conditional
    # edges, each of which copies the whole state per turn. `destinations` draws those edges.
    g.add_node("ingest", nodes.ingest, destinations=("router", "respond"))
    g.add_node("router", nodes.router, destinations=("tools", "reconcile", "respond"))
    g.add_node("tools", nodes.run_tools)
    g.add_node("reconcile", nodes.reconcile, destinations=("verify", "respond"))
    g.add_node("verify", nodes.verify)
    g.add_node("respond", nodes.respond)
    g.add_edge(START, "ingest")
    g.add_edge("tools", "reconcile")
    g.add_edge("verify", "respond")
    g.add_edge("respond", END)

    if checkpointer is None:
        from agents.memory.lazy_saver import LazySaver

        checkpointer = LazySaver(lambda: _make_checkpointer(settings))  # make_checkpointer scrubs
    elif isinstance(checkpointer, BaseCheckpointSaver):
        from agents.memory.checkpointers import scrubbing

        checkpointer = scrubbing(checkpointer)
    compiled = g.compile(checkpointer=checkpointer or None, name="cxr_agent")
    if checkpointer:  # a turn is saved once, when it ends, unless a run asks otherwise (a server's own runs do)
        compiled = compiled.with_config(configurable={_DURABILITY_KEY: settings.checkpoint_durability})
    _RUNTIMES[compiled] = GraphRuntime(settings=settings, tools=registry, capabilities=dict(nodes.caps),
                                       studies=studies, roles=nodes.roles)
    return compiled


def _make_checkpointer(settings: Settings) -> BaseCheckpointSaver:
    from agents.memory.checkpointers import make_checkpointer

    return make_checkpointer(settings)


def runtime(graph: Any = None) -> GraphRuntime:
    """The runtime of a graph ``build_graph`` compiled (default: the module-level ``graph``)."""
    target = graph if graph is not None else globals()["graph"]
    try:
        return _RUNTIMES[target]
    except (KeyError, TypeError):
        raise ValueError(f"{type(target).__name__} was not compiled by graph.build_graph") from None


def ingest_image(source: Any, *, filename: str | None = None, graph: Any = None,
                 thread_id: str | None = None) -> Any:
    """Decode, de-identify and store an image in the graph's study store; returns the Study (its
    ``id`` is the ``study_id`` to pass to invoke()). ``thread_id``: the conversation it is for (kept
    when another conversation on the same image is forgotten first). Raises
    tools.ingestion.study.StudyError for a bad file."""
    studies = runtime(graph).studies
    study_id, study = studies.ingest(source, filename=filename, thread_id=thread_id)
    return study if study.id == study_id else studies.get(study_id)


def store_image(source: Any, *, filename: str | None = None, graph: Any = None,
                thread_id: str | None = None) -> str:
    """Decode, de-identify and store an image; returns the ``study_id`` to pass to invoke().
    ``thread_id``: the conversation it is for, as in ``ingest_image``."""
    return runtime(graph).studies.ingest(source, filename=filename, thread_id=thread_id)[0]


def _served_by_langgraph_api() -> bool:
    """Loaded by `langgraph dev` / LangGraph Server, which supplies persistence itself and refuses a
    graph compiled with its own checkpointer."""
    import sys

    return "langgraph_api" in sys.modules


_SERVED = _served_by_langgraph_api()
graph = build_graph(checkpointer=False if _SERVED else None, server_input=_SERVED)
