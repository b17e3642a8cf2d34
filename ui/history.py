"""The page side of stored conversations: who the reader is, reopening after a reload, the sidebar list.

Who "this user" is: with a login (``ui_require_login``) the logged-in account; without one, the browser,
recognised by a random key the page keeps in its URL (``?browser=...``; Streamlit cannot set cookies).
Anyone who has that URL, e.g. anyone using that browser, sees its conversations. The current
conversation's id is in the URL too (``?c=...``) so a reload reopens it, but only after the owner
table (ui/conversations.py, stored with the checkpoints) says this reader owns it.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import secrets
from pathlib import Path
from typing import Any

import streamlit as st

from cxr_agent.settings import Settings
from knowledge.markdown import escape
from ui import session as S
from ui.conversations import OwnerBook, owner_id, restore, summarize
from ui.remote import is_remote
from ui.resources import studies, study_store

log = logging.getLogger("cxr_agent.ui")

BROWSER_PARAM = "browser"
THREAD_PARAM = "c"
MAX_LISTED = 20
K_RESUMED = "cxr_resumed"
K_OWNER = "cxr_owner"
_KEY = re.compile(r"[A-Za-z0-9_-]{24,64}")
_THREAD = re.compile(r"[A-Za-z0-9_-]{1,80}")


@st.cache_resource(show_spinner=False)
def _book(path: str) -> OwnerBook:
    return OwnerBook(Path(path))


def owner_book(settings: Settings) -> OwnerBook:
    """The owner table of this data dir (one per server process)."""
    return _book(str(settings.data_dir / "ui_conversations.sqlite"))


def current_owner(settings: Settings) -> str:
    """This reader as an owner: the login's account when required, else this browser's URL key."""
    if settings.ui_require_login:
        ident = str(st.user.get("email") or st.user.get("sub") or "")
        return owner_id("login", ident)
    key = st.query_params.get(BROWSER_PARAM)
    if not key or not _KEY.fullmatch(key):
        key = secrets.token_urlsafe(24)
        st.query_params[BROWSER_PARAM] = key
    return owner_id("browser", key)


def resume(state, settings: Settings, graph: Any, book: OwnerBook) -> str:
    """Once per session, reopen the conversation the URL names if this reader owns it; then keep the URL
    naming the current conversation. Returns the owner."""
    owner = state.get(K_OWNER) or current_owner(settings)
    state[K_OWNER] = owner
    if not state.get(K_RESUMED):
        state[K_RESUMED] = True
        wanted = st.query_params.get(THREAD_PARAM)
        if wanted and _THREAD.fullmatch(wanted) and graph is not None and book.owns(wanted, owner):
            reopen(state, graph, wanted)
    if st.query_params.get(THREAD_PARAM) != state[S.K_THREAD]:
        st.query_params[THREAD_PARAM] = state[S.K_THREAD]
    return owner


def reopen(state, graph: Any, thread_id: str) -> None:
    """Load a stored conversation into the page: its turns, and the study it was last about."""
    found = restore(graph, thread_id)
    study = None
    if found.study_id:
        try:
            study = studies(graph).get(found.study_id)
        except Exception as exc:  # noqa: BLE001 - deleted by retention or unreadable: the chat still opens
            log.warning("study of a reopened conversation unavailable (%s)", type(exc).__name__)
    S.open_conversation(state, thread_id, found.turns, study, found.study_count, found.labels)


def open_listed(state, graph: Any, book: OwnerBook, thread_id: str) -> None:
    if book.owns(thread_id, state[K_OWNER]):
        reopen(state, graph, thread_id)


def forget(state, settings: Settings, graph: Any, book: OwnerBook, thread_id: str) -> None:
    """Delete one of this reader's conversations from disk (agents/memory/retention.py) and from the list."""
    if not book.owns(thread_id, state[K_OWNER]):
        st.toast("That conversation is not yours to delete.", icon=":material/block:")
        return
    try:
        if is_remote(graph):
            graph.forget(thread_id)
        elif graph is not None:
            from agents.memory.retention import forget_thread

            forget_thread(thread_id, saver=graph.checkpointer, store=study_store(graph, settings),
                          artifacts_dir=settings.artifacts_dir)
        book.drop(thread_id)
        st.toast("Conversation deleted.", icon=":material/delete:")
    except Exception as exc:  # noqa: BLE001 - say it failed; keep the conversation
        log.exception("forget failed")
        st.toast(f"The conversation could not be deleted ({type(exc).__name__}).", icon=":material/error:")
        return
    if thread_id == state[S.K_THREAD]:
        S.new_conversation(state)


def listed(graph: Any, book: OwnerBook, owner: str) -> list[str]:
    """This reader's conversations: on a graph server that knows who is asking, the threads it lists for
    this reader, taken into the owner table so Open and Delete work; else (in process, or a server that
    shows this app everyone's threads) the owner table's."""
    caller = graph.caller() if is_remote(graph) else None
    if caller is not None and caller.get("sees_all") is False:
        return [t for t in graph.conversations(MAX_LISTED) if book.claim(t, owner)]
    return book.threads(owner)[:MAX_LISTED]


def _when(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts).strftime("%d %b %H:%M") if ts else "unknown time"


def conversations_section(state, settings: Settings, graph: Any, book: OwnerBook) -> None:
    """The sidebar list: each stored conversation with its title, time, studies and retention date."""
    st.subheader("Your conversations")
    try:
        items = summarize(graph, listed(graph, book, state[K_OWNER]), float(settings.retention_days or 0))
    except Exception as exc:  # noqa: BLE001 - the checkpointer is unreadable: the chat itself still works
        log.warning("conversation list unavailable (%s)", type(exc).__name__)
        st.caption(f"The list of conversations is unavailable ({type(exc).__name__}).")
        return
    if not items:
        st.caption("Conversations you start are listed here and reopen after a reload.")
        return
    nonce = state[S.K_UPLOADER_NONCE]
    for i, c in enumerate(items):
        current = c.thread_id == state[S.K_THREAD]
        with st.container(border=True, key=f"cxr_conv_{i}"):
            st.markdown(f"**{escape(c.title)}**" + (" · *open*" if current else ""))
            studies_n = f"{c.studies} stud{'y' if c.studies == 1 else 'ies'}"
            retention = f" · deleted on {_when(c.deletes_at)[:6]}" if c.deletes_at else ""
            st.caption(f"{_when(c.updated)} · {studies_n}{retention}")
            left, right = st.columns(2)
            left.button("Open", key=f"cxr_open_{i}", disabled=current, width="stretch",
                        on_click=open_listed, args=(state, graph, book, c.thread_id))
            with right.popover("Delete", key=f"cxr_delpop_{nonce}_{i}", width="stretch"):
                st.caption("Deletes its messages and the studies and heatmaps only it used.")
                st.button("Delete now", key=f"cxr_del_{i}", type="primary",
                          on_click=forget, args=(state, settings, graph, book, c.thread_id))
