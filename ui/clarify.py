"""The clarifying question's choices as buttons: when the router was unsure, the reply asks which of two
readings was meant, and a click sends that reading's message as the next turn (the same text a user of
``graph.invoke`` would type; agents/replying/clarify.py words both)."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

import streamlit as st

from ui import session as S


def choose(state: MutableMapping[str, Any], message: str) -> None:
    """A button's ``on_click``: queue the chosen reading's message like a typed one."""
    state[S.K_INBOX].append(message)


def clarify_buttons(turn: Any) -> None:
    """Two buttons under a clarifying reply, one per reading; nothing for any other reply."""
    clarify = (getattr(turn, "cxr", None) or {}).get("clarify") or {}
    options = [c for c in clarify.get("choices") or [] if c.get("label") and c.get("message")]
    if not options:
        return
    for i, (col, option) in enumerate(zip(st.columns(len(options)), options, strict=True)):
        col.button(option["message"], key=f"cxr_clarify_{id(turn)}_{i}", help=option["label"],
                   on_click=choose, args=(st.session_state, option["message"]), use_container_width=True)
