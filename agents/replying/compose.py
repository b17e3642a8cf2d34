"""The reply: a pure function of (route, evidence, decisions) -> Markdown a radiologist reads at a glance.

``compose_parts`` builds a typed ``ReplyParts`` and ``compose`` renders it. Rules: what needs review comes
first, then the report exactly as written, then the other findings in one table; each finding is named
once; the classifier's op-normalised score is never called a probability; an unavailable tool is named
once with where to fix it; the demo warning opens every reply under the tiny profile and the disclaimer
closes every report. Every call, score, box and rationale travels in the payload (``payload``) and is
told in full by a "Why?" answer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from agents.replying.other_intents import chat_reply, explain_reply, similar_reply
from agents.replying.parts import ReplyParts, unavailable_line
from agents.replying.payload import payload
from agents.replying.phrases import cite, region
from agents.replying.questions import LOCATE_NOTE, finding_body, locate_body
from agents.replying.report import report_fields
from agents.replying.roles import ToolRoles
from agents.routing.rules import Route, as_route
from knowledge.evidence import Decision, Evidence

__all__ = ["NO_COMPARISON", "ReplyParts", "ToolRoles", "cite", "compose", "compose_parts", "payload", "region"]

NO_COMPARISON = ("No earlier image was compared: the tools read one study at a time, so nothing below says "
                 "whether anything has changed. Compare with the prior study yourself.")


def compose(
    route: Route | Mapping[str, Any],
    evidence: Sequence[Evidence],
    decisions: Sequence[Decision],
    *,
    demo: bool = False,
    notes: Sequence[str] = (),
    study: dict[str, Any] | None = None,
    prior: dict[str, Any] | None = None,
    ingest_error: str | None = None,
    roles: ToolRoles | None = None,
) -> str:
    """The reply for this turn as Markdown (``compose_parts``, rendered)."""
    return compose_parts(route, evidence, decisions, demo=demo, notes=notes, study=study, prior=prior,
                         ingest_error=ingest_error, roles=roles).render()


def compose_parts(
    route: Route | Mapping[str, Any],
    evidence: Sequence[Evidence],
    decisions: Sequence[Decision],
    *,
    demo: bool = False,
    notes: Sequence[str] = (),
    study: dict[str, Any] | None = None,
    prior: dict[str, Any] | None = None,
    ingest_error: str | None = None,
    roles: ToolRoles | None = None,
) -> ReplyParts:
    """The reply for this turn as typed parts. ``study``: {"id", "width", "height", "view"} when one is
    loaded; ``prior``: the thread's last reconciled result (for explain); ``roles``: which tool plays which
    part, built once per graph (default: the built-ins')."""
    roles = roles or ToolRoles.builtin()
    route = as_route(route) or Route(intent="chat")
    intent = route.intent
    notes = tuple(n for n in notes if n)
    opening: tuple[str, ...] = ()
    if route.asks_comparison and not ingest_error:
        opening = (f"> **{NO_COMPARISON}**",)
    if ingest_error:
        return ReplyParts(intent=intent, demo=demo, opening=(*opening, ingest_error))
    if route.needs_image and study is None and intent != "explain":
        return ReplyParts(intent=intent, demo=demo, opening=(
            *opening, "Please upload a chest radiograph (PNG, JPEG or DICOM) first: "
            f"a {intent.replace('_', ' ')} needs an image to look at."), notes=notes)
    if intent == "report":
        return ReplyParts(intent=intent, demo=demo, opening=opening, notes=notes,
                          **report_fields(evidence, decisions, roles=roles))
    view = (study or {}).get("view")
    context: tuple[str, ...] = ()
    if intent == "locate":
        body = locate_body(route, evidence, decisions, roles=roles, study=study)
        context = (LOCATE_NOTE,)
    elif intent == "finding_question":
        body = finding_body(route, evidence, decisions, roles=roles, view=view)
    elif intent == "similar_cases":
        body = similar_reply(evidence, roles)
    elif intent == "explain":
        body = explain_reply(prior, roles=roles, finding=route.finding)
    else:
        body = chat_reply(evidence, roles)
    return ReplyParts(intent=intent, demo=demo, opening=opening, body=tuple(body), context=context,
                      unavailable=unavailable_line(evidence), notes=notes)
