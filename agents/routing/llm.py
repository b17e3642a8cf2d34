"""Optional LLM routing (settings.router_llm): a LangChain chat model picks the intent, bounded by a
timeout; the rules (agents/routing/rules.py) answer on any error or when the model is too slow.
"""

from __future__ import annotations

import logging
from typing import Any

from pydantic import BaseModel, Field

from agents.routing.mentions import _clean, extract_findings
from agents.routing.rules import Intent, Route, _make_route, route
from knowledge.vocabulary import normalize

log = logging.getLogger(__name__)

class RouteDecision(BaseModel):
    """Structured output asked of the LLM router."""

    intent: Intent = Field(description="report | locate | finding_question | similar_cases | explain | chat")
    finding: str | None = Field(None, description="Finding the user names, in plain words (e.g. 'effusion'), or null.")
    phrase: str | None = Field(None, description="For locate: the region or phrase to find, or null.")
    reason: str = Field("", description="One short line: why this intent.")


_LLM_SYSTEM = (
    "You route turns of a chest X-ray assistant. Intents: report (full read/findings+impression), "
    "locate (where is X / show X on the image), finding_question (is X present?), similar_cases "
    "(find similar prior cases/reports), explain (why did you conclude X / what evidence), chat (anything else). "
    "Return the intent, the finding named (if any), the phrase to locate (if any) and a one-line reason."
)


def route_with_llm(text: str, *, has_image: bool, llm: Any, has_history: bool = False) -> Route:
    """Ask a LangChain chat model (``with_structured_output``) to route; any error -> ``route()``."""
    fallback = route(text, has_image=has_image, has_history=has_history)
    try:
        structured = llm.with_structured_output(RouteDecision)
        out = structured.invoke([("system", _LLM_SYSTEM), ("user", text)])
        if isinstance(out, dict):
            out = RouteDecision.model_validate(out)
        if not isinstance(out, RouteDecision):
            raise TypeError(f"unexpected structured output {type(out).__name__}")
        findings: list[str] = []
        if out.finding:
            fid = normalize(out.finding) or next(iter(extract_findings(out.finding, allow_no_finding=True)), None)
            if fid:
                findings = [fid]
        if not findings:
            findings = fallback.findings
        reason = (out.reason or f"LLM router chose {out.intent}").strip().splitlines()[0][:200]
        return _make_route(out.intent, findings, _clean(text), reason, has_image=has_image, method="llm",
                           phrase=out.phrase if out.intent == "locate" else None)
    except Exception as exc:  # noqa: BLE001 - any LLM failure falls back to the rules
        return fallback.model_copy(update={"reason": f"{fallback.reason} (LLM router failed: {type(exc).__name__})"})


ROUTER_TIMEOUT_S = 10.0


def _bounded(call: Any, timeout_s: float, fallback: Any) -> Route:
    """``call()`` on a daemon thread; after ``timeout_s`` the rules' route (a hung LLM request keeps
    its thread until the client's own timeout, but the turn no longer waits for it)."""
    import threading

    box: list[Route] = []
    worker = threading.Thread(target=lambda: box.append(call()), name="cxr-router-llm", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if box:
        return box[0]
    r = fallback()
    return r.model_copy(update={"reason": f"{r.reason} (LLM router timed out after {timeout_s:g} s)"})
