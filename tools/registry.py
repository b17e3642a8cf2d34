"""How tools plug into the graph: the built-ins (constructed lazily) plus custom tools.

A custom tool is either
- any object with ``name: str``, ``intents`` (iterable of intents it serves, see
  tools.base.INTENT_TABLE) and ``run(ToolRequest) -> Evidence`` (the CxrTool protocol), optionally
  declaring the capabilities of tools.base.ToolCapabilities as boolean attributes
  (``image_source``, ``writes_report``, ``needs_draft``, ``verifies`` + ``verify(...)``, ``cacheable``,
  ``compares_priors``), or
- a LangChain tool (``BaseTool`` / ``@tool``): its arguments are filled from the request by name
  (``text``, ``intent``, ``finding``, ``phrase``, ``study_id``, ``pixels``, ``thread_id``,
  ``draft_report``) and its output is mapped to Evidence: an Evidence is kept, a dict is validated
  as Evidence, anything else becomes ``Evidence.answer`` text. Intents and capabilities come from
  ``metadata``: ``cxr_intents`` (default: report), ``cxr_image_source``, ``cxr_writes_report``,
  ``cxr_needs_draft``, ``cxr_verifies`` (a verifying LangChain tool is invoked once per finding
  with intent ``finding_question``), ``cxr_cacheable``, ``cxr_compares_priors``, ``cxr_label`` (how replies name it).

Custom tools reach the graph through ``build_graph(tools=[...])`` or an entry point in the group
``cxr_agent.tools`` (the object may be a tool instance, a tool class or a zero-argument factory).
Entry points run third-party code, so only those named in ``settings.plugins``
(``CXR_AGENT_PLUGINS="name1,name2"``) are loaded; a broken one is logged and skipped, it never
stops the graph from building. A custom tool named like a built-in (``vlm``, ``classifier``,
``retrieval``) replaces it, and takes over the built-in's capabilities unless it declares its own (all but
``cacheable``, which a tool must declare itself).
"""

from __future__ import annotations

import importlib
import inspect
import logging
import threading
from collections.abc import Iterable
from dataclasses import replace
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

from knowledge.evidence import Evidence
from tools.base import INTENTS, ToolCapabilities, ToolRequest, builtin_intents, capabilities

if TYPE_CHECKING:
    from cxr_agent.settings import Settings

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "cxr_agent.tools"


class LazyTool:
    """A built-in tool whose class is imported and constructed on first use.

    Keeps ``import graph`` and ``build_graph()`` cheap (no torch/transformers import, no weights);
    a construction failure becomes Evidence(ok=False) at run time instead of an import error.
    Its capabilities are declared up front, so the graph plans a turn without loading it.
    """

    def __init__(self, name: str, target: str, intents: Iterable[str], *, image_source: bool = False,
                 writes_report: bool = False, needs_draft: bool = False, verifies: bool = False,
                 cacheable: bool = False, compares_priors: bool = False, label: str | None = None,
                 settings: Settings | None = None):
        self.name = name
        self.intents = frozenset(intents)
        self.image_source = image_source
        self.writes_report = writes_report
        self.needs_draft = needs_draft
        self.verifies = verifies
        self.cacheable = cacheable
        self.compares_priors = compares_priors
        self.label = label
        self.target = target
        self._settings = settings
        self._tool: Any = None
        self._error: str | None = None
        self._lock = threading.Lock()

    @property
    def capabilities(self) -> ToolCapabilities:
        return ToolCapabilities(intents=self.intents, image_source=self.image_source,
                                writes_report=self.writes_report, needs_draft=self.needs_draft,
                                verifies=self.verifies, cacheable=self.cacheable,
                                compares_priors=self.compares_priors, label=self.label)

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

    def verify(self, study: Any, findings: list[str], *, thread_id: str | None = None,
               cancel: threading.Event | None = None) -> list[Evidence]:
        from tools.base import verify_findings

        try:
            tool = self.load()
        except RuntimeError as exc:
            return [Evidence.failure(self.name, str(exc)) for _ in findings]
        return verify_findings(tool, study, findings, thread_id=thread_id, cancel=cancel)

    def __getattr__(self, item: str) -> Any:  # verify_finding, weight_status, ...
        if item.startswith("_") or item in {"target", "name", "intents", *ToolCapabilities.FLAGS}:
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


# name -> (import target, capabilities); intents come from the intent table (tools.base).
BUILTINS: dict[str, tuple[str, ToolCapabilities]] = {
    "vlm": ("tools.vlm:VLMTool|tools.vlm.tool:VLMTool",
            ToolCapabilities(builtin_intents("vlm"), image_source=True, writes_report=True, verifies=True,
                             cacheable=True, label="the VLM")),  # its fixed-prompt asks: meta["fixed_prompt"]
    "classifier": ("tools.classifier.tool:ClassifierTool",
                   ToolCapabilities(builtin_intents("classifier"), image_source=True, cacheable=True,
                                    label="the classifier")),
    "retrieval": ("tools.retrieval:RetrievalTool",
                  ToolCapabilities(builtin_intents("retrieval"), needs_draft=True, label="retrieval")),
}


def builtin_tools(settings: Settings | None = None) -> list[LazyTool]:
    """The built-ins, plus a second VLM family beside the first when ``settings.vlm_compare`` names
    one (tool ``vlm-<family>``, the VLM's capabilities: an independent image source and verifier)."""
    specs = dict(BUILTINS)
    primary = str(getattr(settings, "vlm_family", "radvlm") or "radvlm") if settings is not None else "radvlm"
    specs["vlm"] = (specs["vlm"][0], replace(specs["vlm"][1], compares_priors=_compares_priors(primary)))
    compare = str(getattr(settings, "vlm_compare", "") or "") if settings is not None else ""
    if compare:
        specs[f"vlm-{compare}"] = ("tools.vlm.families:CompareVLMTool",
                                   replace(BUILTINS["vlm"][1], label=f"the second VLM ({compare})",
                                           compares_priors=_compares_priors(compare)))
    return [
        LazyTool(n, t, c.intents, image_source=c.image_source, writes_report=c.writes_report,
                 needs_draft=c.needs_draft, verifies=c.verifies, cacheable=c.cacheable,
                 compares_priors=c.compares_priors, label=c.label, settings=settings)
        for n, (t, c) in specs.items()
    ]


def _compares_priors(family: str) -> bool:
    """Whether a VLM family's adapter declares a documented two-image prompt (an unknown family: no)."""
    try:
        from tools.vlm.adapters import get_adapter

        return bool(getattr(get_adapter(family), "compares_priors", False))
    except (ImportError, ValueError):
        return False


class LangChainToolAdapter:
    """Wraps a LangChain BaseTool as a CxrTool (see the module docstring for the mapping)."""

    ARGS = ("text", "intent", "finding", "phrase", "study_id", "pixels", "thread_id", "draft_report")

    def __init__(self, tool: Any, *, intents: Iterable[str] | None = None, image_source: bool | None = None):
        meta = getattr(tool, "metadata", None) or {}
        self.tool = tool
        self.name = str(tool.name)
        self.intents = frozenset(intents or meta.get("cxr_intents") or {"report"})
        self.image_source = bool(meta.get("cxr_image_source", False) if image_source is None else image_source)
        self.writes_report = bool(meta.get("cxr_writes_report", False))
        self.needs_draft = bool(meta.get("cxr_needs_draft", False))
        self.verifies = bool(meta.get("cxr_verifies", False))
        self.cacheable = bool(meta.get("cxr_cacheable", False))
        self.compares_priors = bool(meta.get("cxr_compares_priors", False))
        self.label = str(meta["cxr_label"]) if meta.get("cxr_label") else None

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
            "draft_report": request.draft_report,
        }
        schema = getattr(self.tool, "args", None) or {}
        args = {k: v for k, v in values.items() if k in schema}
        if not args and schema:  # a single free-text argument of another name
            args = {next(iter(schema)): request.text}
        return to_evidence(self.name, self.tool.invoke(args))

    def verify(self, study: Any, findings: list[str], *, thread_id: str | None = None,
               cancel: threading.Event | None = None) -> list[Evidence]:
        """One targeted finding question per finding (a LangChain tool has no batch form)."""
        out: list[Evidence] = []
        for f in findings:
            if cancel is not None and cancel.is_set():
                break
            request = ToolRequest(intent="finding_question", text=f"Is there {f.replace('_', ' ')}?",
                                  study=study, finding=f, thread_id=thread_id)
            out.append(self.run(request))
        return out


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
    caps = capabilities(obj)
    if caps.verifies and not (callable(getattr(obj, "verify", None)) or callable(getattr(obj, "verify_finding", None))):
        raise TypeError(f"custom tool {name!r} declares verifies=True but has no "
                        "verify(study, findings, *, thread_id, cancel) -> list[Evidence] method")
    return obj


def _inherit_builtin(tool: Any, builtin: LazyTool) -> Any:
    """A tool replacing a built-in by name keeps the built-in's capabilities it does not declare, except
    ``cacheable``: reusing a tool's output across conversations is safe only when the tool itself says so."""
    for flag in ToolCapabilities.FLAGS:
        if flag == "cacheable":
            continue
        if not hasattr(type(tool), flag) and flag not in getattr(tool, "__dict__", {}):
            try:
                setattr(tool, flag, getattr(builtin, flag))
            except AttributeError:
                pass
    return tool


def plugin_allowlist(settings: Settings | None) -> frozenset[str]:
    """Entry-point names ``settings.plugins`` allows (comma-separated)."""
    if settings is None:
        from cxr_agent.settings import get_settings

        settings = get_settings()
    raw = getattr(settings, "plugins", "") or ""
    return frozenset(p.strip() for p in str(raw).split(",") if p.strip())


def load_entry_point_tools(group: str = ENTRY_POINT_GROUP, *, settings: Settings | None = None,
                           allow: Iterable[str] | None = None) -> list[Any]:
    """Allow-listed tools declared as entry points; each broken one is logged and skipped.

    Loading an entry point imports and runs its package's code, so nothing loads unless it is named
    in ``allow`` (default: ``settings.plugins``, i.e. ``CXR_AGENT_PLUGINS``)."""
    allowed = frozenset(allow) if allow is not None else plugin_allowlist(settings)
    found: list[Any] = []
    for ep in entry_points(group=group):
        if ep.name not in allowed:
            log.info("not loading custom tool entry point %r (%s): not in CXR_AGENT_PLUGINS", ep.name, ep.value)
            continue
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
    """name -> tool: built-ins, then allow-listed entry-point plugins, then ``tools`` (later ones
    replace earlier ones by name)."""
    registry: dict[str, Any] = {}
    builtin_by_name = {t.name: t for t in builtin_tools(settings)}
    if builtins:
        registry.update(builtin_by_name)
    extra = list(load_entry_point_tools(settings=settings)) if plugins else []
    extra += [as_cxr_tool(obj, settings=settings) for obj in tools or ()]  # explicit: fail loudly
    for tool in extra:
        if tool.name in builtin_by_name:
            tool = _inherit_builtin(tool, builtin_by_name[tool.name])
        registry[tool.name] = tool
    return registry


def is_image_source(tool: Any) -> bool:
    return capabilities(tool).image_source


__all__ = [
    "BUILTINS", "ENTRY_POINT_GROUP", "LangChainToolAdapter", "LazyTool", "as_cxr_tool", "builtin_tools",
    "capabilities", "is_image_source", "load_entry_point_tools", "plugin_allowlist", "resolve_tools", "to_evidence",
]
