"""How tools plug into the graph: the built-ins (constructed lazily) plus custom tools.

A custom tool is either
- any object with ``name: str``, ``intents`` (iterable of intents it serves, see tools.base.INTENTS)
  and ``run(ToolRequest) -> Evidence`` (the CxrTool protocol), optionally ``image_source: bool``
  (True when its FindingCalls read the image and should count as votes in reconciliation), or
- a LangChain tool (``BaseTool`` / ``@tool``): its arguments are filled from the request by name
  (``text``, ``intent``, ``finding``, ``phrase``, ``study_id``, ``pixels``, ``thread_id``) and its
  output is mapped to Evidence: an Evidence is kept, a dict is validated as Evidence, anything
  else becomes ``Evidence.answer`` text. Intents come from ``metadata["cxr_intents"]``
  (default: report).

Custom tools reach the graph through ``build_graph(tools=[...])`` or an entry point in the group
``cxr_agent.tools`` (the object may be a tool instance, a tool class or a zero-argument factory).
A broken plugin is logged and skipped; it never stops the graph from building. A custom tool
named like a built-in (``vlm``, ``classifier``, ``retrieval``) replaces it.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import threading
from collections.abc import Iterable
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

from knowledge.evidence import IMAGE_SOURCES, Evidence
from tools.base import INTENTS, ToolRequest

if TYPE_CHECKING:
    from cxr_agent.settings import Settings

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "cxr_agent.tools"


class LazyTool:
    """A built-in tool whose class is imported and constructed on first use.

    Keeps ``import graph`` and ``build_graph()`` cheap (no torch/transformers import, no weights);
    a construction failure becomes Evidence(ok=False) at run time instead of an import error.
    """

    def __init__(self, name: str, target: str, intents: Iterable[str], *, image_source: bool, settings: Settings | None):
        self.name = name
        self.intents = frozenset(intents)
        self.image_source = image_source
        self.target = target
        self._settings = settings
        self._tool: Any = None
        self._error: str | None = None
        self._lock = threading.Lock()

    def load(self) -> Any:
        """The real tool (constructed once); raises RuntimeError naming the problem if it cannot be."""
        with self._lock:
            if self._tool is None and self._error is None:
                try:
                    self._tool = _import_first(self.target)(settings=self._settings)
                except Exception as exc:  # missing module, missing dependency, bad settings
                    self._error = f"{self.name} tool could not be loaded ({type(exc).__name__}: {exc})"
                    log.warning("%s", self._error)
            if self._tool is None:
                raise RuntimeError(self._error)
            return self._tool

    @property
    def loaded(self) -> bool:
        """Whether the real tool has been constructed yet (never triggers loading)."""
        return self._tool is not None

    def run(self, request: ToolRequest) -> Evidence:
        try:
            tool = self.load()
        except RuntimeError as exc:
            return Evidence.failure(self.name, str(exc))
        return tool.run(request)

    def __getattr__(self, item: str) -> Any:  # verify_finding, weight_status, ...
        if item.startswith("_") or item in {"target", "name", "intents", "image_source"}:
            raise AttributeError(item)
        return getattr(self.load(), item)

    def __repr__(self) -> str:
        return f"LazyTool({self.name!r} -> {self.target})"


def _import_first(targets: str) -> Any:
    """Import ``module:attr`` (alternatives separated by ``|``; the first that imports wins)."""
    error: Exception | None = None
    for target in targets.split("|"):
        module_name, _, attr = target.partition(":")
        try:
            return getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            error = error or exc
    assert error is not None
    raise error


# name -> (import target, intents, image source)
BUILTINS: dict[str, tuple[str, frozenset[str], bool]] = {
    "vlm": ("tools.vlm:VLMTool|tools.vlm.tool:VLMTool", frozenset({"report", "locate", "finding_question", "chat"}), True),
    "classifier": ("tools.classifier:ClassifierTool", frozenset({"report", "locate", "finding_question"}), True),
    "retrieval": ("tools.retrieval:RetrievalTool", frozenset({"report", "similar_cases"}), False),
}


def builtin_tools(settings: Settings | None = None) -> list[LazyTool]:
    return [LazyTool(n, t, i, image_source=s, settings=settings) for n, (t, i, s) in BUILTINS.items()]


class LangChainToolAdapter:
    """Wraps a LangChain BaseTool as a CxrTool (see the module docstring for the mapping)."""

    ARGS = ("text", "intent", "finding", "phrase", "study_id", "pixels", "thread_id")

    def __init__(self, tool: Any, *, intents: Iterable[str] | None = None, image_source: bool | None = None):
        meta = getattr(tool, "metadata", None) or {}
        self.tool = tool
        self.name = str(tool.name)
        self.intents = frozenset(intents or meta.get("cxr_intents") or {"report"})
        self.image_source = bool(meta.get("cxr_image_source", False) if image_source is None else image_source)

    def run(self, request: ToolRequest) -> Evidence:
        study = request.study
        values = {
            "text": request.text,
            "intent": request.intent,
            "finding": request.finding,
            "phrase": request.phrase,
            "study_id": study.id if study is not None else None,
            "pixels": study.pixels if study is not None else None,
            "thread_id": request.thread_id,
        }
        schema = getattr(self.tool, "args", None) or {}
        args = {k: v for k, v in values.items() if k in schema}
        if not args and schema:  # a single free-text argument of another name
            args = {next(iter(schema)): request.text}
        return to_evidence(self.name, self.tool.invoke(args))


def to_evidence(name: str, out: Any) -> Evidence:
    """Map a custom tool's return value onto Evidence (tool name enforced)."""
    if isinstance(out, Evidence):
        return out if out.tool == name else out.model_copy(update={"tool": name})
    if isinstance(out, dict):
        return Evidence.model_validate({**out, "tool": name})
    if out is None:
        return Evidence.failure(name, f"{name} returned nothing")
    return Evidence(tool=name, answer=str(out))


def _is_langchain_tool(obj: Any) -> bool:
    try:
        from langchain_core.tools import BaseTool
    except ImportError:  # pragma: no cover - langchain-core is a dependency
        return False
    return isinstance(obj, BaseTool)


def as_cxr_tool(obj: Any, *, settings: Settings | None = None) -> Any:
    """Validate/adapt one custom tool object; raises TypeError/ValueError naming what is missing."""
    if _is_langchain_tool(obj):
        obj = LangChainToolAdapter(obj)
    elif inspect.isclass(obj):
        try:
            obj = obj(settings=settings)
        except TypeError:
            obj = obj()
    elif callable(obj) and not hasattr(obj, "run"):
        obj = obj()
        if _is_langchain_tool(obj):
            obj = LangChainToolAdapter(obj)
    name = getattr(obj, "name", None)
    if not isinstance(name, str) or not name:
        raise TypeError(f"custom tool {obj!r} has no `name` string")
    if not callable(getattr(obj, "run", None)):
        raise TypeError(f"custom tool {name!r} has no run(ToolRequest) -> Evidence method")
    intents = getattr(obj, "intents", None)
    if intents is None or isinstance(intents, str):
        raise TypeError(f"custom tool {name!r} must declare `intents` (a set of {', '.join(INTENTS)})")
    intents = frozenset(intents)
    unknown = intents - set(INTENTS)
    if unknown:
        log.warning("custom tool %r declares unknown intents %s (ignored)", name, sorted(unknown))
    try:
        obj.intents = intents & set(INTENTS)
    except AttributeError:  # read-only attribute: leave as declared
        pass
    if not hasattr(obj, "image_source"):
        try:
            obj.image_source = name in IMAGE_SOURCES
        except AttributeError:
            pass
    return obj


def load_entry_point_tools(group: str = ENTRY_POINT_GROUP, *, settings: Settings | None = None) -> list[Any]:
    """Tools declared as entry points; each broken one is logged and skipped."""
    found: list[Any] = []
    for ep in entry_points(group=group):
        try:
            found.append(as_cxr_tool(ep.load(), settings=settings))
        except Exception as exc:
            log.warning("skipping custom tool entry point %r (%s): %s: %s", ep.name, ep.value, type(exc).__name__, exc)
    return found


def resolve_tools(
    settings: Settings | None = None,
    tools: Iterable[Any] | None = None,
    *,
    builtins: bool = True,
    plugins: bool = True,
) -> dict[str, Any]:
    """name -> tool: built-ins, then entry-point plugins, then ``tools`` (later ones replace by name)."""
    registry: dict[str, Any] = {}
    if builtins:
        registry.update({t.name: t for t in builtin_tools(settings)})
    if plugins:
        registry.update({t.name: t for t in load_entry_point_tools(settings=settings)})
    for obj in tools or ():
        tool = as_cxr_tool(obj, settings=settings)  # explicit tools: fail loudly, the caller passed them
        registry[tool.name] = tool
    return registry


def is_image_source(tool: Any) -> bool:
    return bool(getattr(tool, "image_source", tool.name in IMAGE_SOURCES))
