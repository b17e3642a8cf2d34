"""Routing a user turn: which intent, which finding(s), which tools.

``rules`` decide by cue words; ``semantic`` checks them with an embedding classifier where they are
unsure; ``llm`` lets a chat model pick, bounded by a timeout. ``make_router`` picks one from settings.
``mentions`` finds the findings and regions a turn names. ``route_turn`` routes a whole turn: the router,
follow-ups, side/aspect/comparison, and asking back when unsure (``turn``).
"""

from __future__ import annotations

import logging
from typing import Any

from agents.routing.llm import ROUTER_TIMEOUT_S, _bounded, route_with_llm
from agents.routing.rules import Route, as_route, route
from agents.routing.semantic import route_semantic
from agents.routing.turn import ask_back, route_turn

__all__ = ["Route", "as_route", "ask_back", "make_router", "route", "route_semantic", "route_turn"]

log = logging.getLogger(__name__)


def make_router(settings: Any = None, *, llm: Any = None):
    """A ``(text, *, has_image, has_history) -> Route`` callable: LLM-first when settings.router_llm is set
    (or an ``llm`` is given), bounded by ``settings.router_timeout_s``: past it the rules answer."""
    model_name = getattr(settings, "router_llm", None) if settings is not None else None
    if llm is None:
        if not model_name:
            if getattr(settings, "router_semantic", True):
                return route_semantic
            return route
        try:
            from langchain.chat_models import init_chat_model  # type: ignore[import-not-found]

            llm = init_chat_model(model_name)
        except Exception as exc:  # noqa: BLE001 - missing provider package or credentials: rules only
            log.warning("router_llm=%r unavailable (%s: %s); routing by rules. Install `langchain` and the "
                        "provider package (e.g. langchain-openai) to enable it.", model_name, type(exc).__name__, exc)
            return route
    timeout_s = float(getattr(settings, "router_timeout_s", None) or ROUTER_TIMEOUT_S)

    def _route(text: str, *, has_image: bool, has_history: bool = False) -> Route:
        return _bounded(lambda: route_with_llm(text, has_image=has_image, llm=llm, has_history=has_history),
                        timeout_s, lambda: route(text, has_image=has_image, has_history=has_history))

    return _route
