"""cxr-agent chat app: upload a chest radiograph, ask, see every agent's evidence.

Run with `cxr-agent ui` (or `streamlit run ui/app.py`). This script only lays the page out; each
part is its own module: ui/resources.py (the shared graph and model status), ui/gate.py
(disclaimers and login), ui/study_panel.py (upload, PACS, the image and its overlays), ui/chat.py
(past and live turns), ui/evidence_panel.py and ui/sidebar.py (conversation, downloads, models).
The logic under them: ui/session.py (per-session state), ui/turn.py (streaming a turn),
ui/overlays.py (drawing), ui/evidence_table.py (the evidence data) and ui/exports.py (downloads);
ui/worker.py runs the turns off the page's thread, ui/history.py and ui/conversations.py keep
conversations across reloads.
"""

from __future__ import annotations

import logging

import streamlit as st

from cxr_agent.settings import get_settings
from ui import session as S
from ui.chat import collect, dispatch, live_pane, render_turn, worker
from ui.compare_panel import prior_control, side_by_side, two_film_section
from ui.evidence_panel import evidence_section
from ui.gate import header, require_login
from ui.history import owner_book, resume
from ui.page_style import style_page
from ui.remote import for_reader
from ui.resources import get_graph
from ui.scroll import open_latest_turn_at_top
from ui.sidebar import sidebar
from ui.study_panel import image_section, pacs_section, upload_section

log = logging.getLogger("cxr_agent.ui")

CHAT_HEIGHT = 760
CHAT_KEY = "cxr_chat_input"


def main() -> None:
    st.set_page_config(page_title="cxr-agent", page_icon="🩻", layout="wide")
    style_page()  # overlay chips shown whole (ui/page_style.py)
    settings = get_settings()
    state = st.session_state
    S.init_session(state)
    header(settings)
    if not require_login(settings):
        return
    graph, graph_error = get_graph(settings)
    graph = for_reader(graph, settings, state)  # remote + login: the server sees this reader, not the app
    book = owner_book(settings)
    owner = resume(state, settings, graph, book)  # a reload reopens this reader's conversation
    st.chat_input(  # enabled during a turn: a message sent then is queued, never a cut-off turn
        "Ask about the study, e.g. 'Write a report' or 'Where is the effusion?'", disabled=graph is None,
        key=CHAT_KEY,  # no max_chars: the browser would cut the text silently; dispatch says why
        on_submit=S.submit_prompt, args=(state, CHAT_KEY),
    )
    turns_worker = worker(state, graph) if graph is not None else None
    left, right = st.columns([5, 6], gap="large")
    with left:
        upload_section(state, graph)
        two_film_section(state, graph)
        pacs_section(state, settings, graph)
    if turns_worker is not None:  # after the upload: a message sent with a new file carries that study
        dispatch(state, settings, graph, turns_worker, claim=lambda tid: book.claim(tid, owner))
        collect(state, turns_worker)
    with right:
        st.subheader("Conversation")
        # A fixed-height pane that scrolls, so long reports do not push the image and the evidence
        # panel off screen.
        busy = bool(state[S.K_TURNS] or (turns_worker is not None and turns_worker.busy))
        with st.container(height=CHAT_HEIGHT if busy else "content", border=True, key="cxr_chat_pane"):
            for turn in state[S.K_TURNS]:
                render_turn(turn)
            if turns_worker is not None:
                live_pane(turns_worker)
            if not busy:
                st.caption("Upload a study, then ask for a report, a finding's location, or similar prior cases.")
        open_latest_turn_at_top("cxr_chat_pane", len(state[S.K_TURNS]))
    with left:
        image_section(state, graph)
        prior_control(state)
        side_by_side(state, graph)
    evidence_section(state, graph)
    from ui.review import review_section  # the sign-off panel under the evidence

    review_section(state, settings, graph)
    sidebar(state, settings, graph, graph_error, book)


try:
    main()
except Exception as exc:  # last line of defence: a short message, never a traceback; state is kept
    log.exception("ui error")
    st.error(f"Something went wrong ({type(exc).__name__}). Your conversation is kept; please try again.")
