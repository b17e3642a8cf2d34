"""cxr-agent chat app: upload a chest radiograph, ask, see every agent's evidence.

Run with `cxr-agent ui` (or `streamlit run ui/app.py`). This script only lays the page out; each
part is its own module: ui/resources.py (the shared graph and model status), ui/gate.py
(disclaimers and login), ui/study_panel.py (upload, PACS, the image and its overlays), ui/chat.py
(past and live turns), ui/evidence_panel.py and ui/sidebar.py (conversation, downloads, models).
The logic under them: ui/session.py (per-session state), ui/turn.py (streaming a turn),
ui/overlays.py (drawing), ui/evidence_table.py (the evidence data) and ui/exports.py (downloads).
"""

from __future__ import annotations

import logging
from contextlib import nullcontext

import streamlit as st

from cxr_agent.settings import get_settings
from ui import session as S
from ui.chat import live_turn, render_turn
from ui.evidence_panel import evidence_section
from ui.gate import header, require_login
from ui.resources import get_graph
from ui.sidebar import sidebar
from ui.study_panel import image_section, pacs_section, upload_section

log = logging.getLogger("cxr_agent.ui")

CHAT_HEIGHT = 760
CHAT_KEY = "cxr_chat_input"


def main() -> None:
    st.set_page_config(page_title="cxr-agent", page_icon="🩻", layout="wide")
    settings = get_settings()
    state = st.session_state
    S.init_session(state)
    header(settings)
    if not require_login(settings):
        return
    graph, graph_error = get_graph(settings)
    st.chat_input(  # its callback queues the message before the body runs: a stopped run cannot lose it
        "Ask about the study, e.g. 'Write a report' or 'Where is the effusion?'", disabled=graph is None,
        key=CHAT_KEY,  # no max_chars: the browser would cut the text silently; live_turn says why
        on_submit=S.submit_prompt, args=(state, CHAT_KEY),
    )
    prompt = state[S.K_QUEUED_PROMPT] if graph is not None else None
    left, right = st.columns([5, 6], gap="large")
    with left:
        upload_section(state, graph)
        pacs_section(state, settings, graph)
    with right:
        st.subheader("Conversation")
        # A fixed-height pane that scrolls (and follows new messages), so long reports do not push
        # the image and the evidence panel off screen.
        # A run stopped mid-turn (fast reruns) may still be unwinding this message's turn: wait for it.
        with S.turn_lock(state) if prompt else nullcontext(True) as free:
            if not free:
                log.warning("the turn lock was not released in time; answering anyway")
            prompt = state[S.K_QUEUED_PROMPT] if graph is not None else None  # it may have been recorded
            busy = bool(state[S.K_TURNS] or prompt)
            with st.container(height=CHAT_HEIGHT if busy else "content", border=True):
                for turn in state[S.K_TURNS]:
                    render_turn(turn)
                if prompt and graph is not None:
                    live_turn(state, settings, graph, prompt)  # stopped mid-turn: the message stays queued
                elif not state[S.K_TURNS]:
                    st.caption("Upload a study, then ask for a report, a finding's location, or similar prior cases.")
    with left:
        image_section(state, graph)
    evidence_section(state, graph)
    sidebar(state, settings, graph, graph_error)


try:
    main()
except Exception as exc:  # last line of defence: a short message, never a traceback; state is kept
    log.exception("ui error")
    st.error(f"Something went wrong ({type(exc).__name__}). Your conversation is kept; please try again.")
