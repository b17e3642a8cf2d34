"""The conversation pane: past turns drawn from the session, the running turn and the queued messages.

The turns themselves run on the session's worker thread (ui/worker.py), never on the page script's
thread, so a message sent while a turn runs is queued, not a cut-off turn. This module hands messages
to the worker (``dispatch``), draws what it has done so far (``live_pane``, a fragment that refreshes
itself while the worker is busy) and moves finished turns into the conversation (``collect``).
"""

from __future__ import annotations

import time
from collections.abc import MutableMapping
from typing import Any

import streamlit as st

from cxr_agent.settings import Settings
from knowledge.markdown import defang, escape
from ui import session as S
from ui.compare_panel import comparison_inputs
from ui.model_status import index_present
from ui.remote import is_remote
from ui.resources import studies
from ui.turn import TurnResult
from ui.worker import Job, TurnWorker

LIVE_REFRESH_S = 0.5
STOPPED_NOTE = "Stopped: no answer was kept for this message."
QUEUED_NOTE = ":material/schedule: Queued: answered when the running turn finishes."


def render_turn(turn: TurnResult) -> None:
    with st.chat_message("user"):
        st.markdown(defang(turn.user_text))
    with st.chat_message("assistant"):
        if turn.progress:
            label = f"Done in {turn.elapsed_s:.1f} s ({len(turn.progress)} steps)" if turn.answered else \
                f"Agent steps ({len(turn.progress)})"
            with st.status(label, state="error" if turn.error else "complete", expanded=False):
                for line in turn.progress:
                    st.markdown(line)
        if turn.stopped:
            st.warning(STOPPED_NOTE, icon=":material/stop_circle:")
        elif turn.error:
            st.error(f"This turn failed ({turn.error}). The conversation is kept; you can try again.")
        else:
            st.markdown(defang(turn.reply))  # model and corpus text: no links or images
            from ui.clarify import clarify_buttons  # a clarifying question's two readings as buttons

            clarify_buttons(turn)
            if turn.failed_tools:
                st.caption(f"Unavailable this turn: {', '.join(turn.failed_tools)}")


def worker(state: MutableMapping[str, Any], graph: Any) -> TurnWorker:
    """This session's worker (one per browser session and graph)."""
    current = state.get(S.K_WORKER)
    if current is None or current.graph is not graph:
        current = state[S.K_WORKER] = TurnWorker(graph)
    return current


UPLOAD_GRACE_S = 2.0  # how long a first message with no study waits for a file chosen with it


def awaiting_upload(state: MutableMapping[str, Any]) -> bool:
    """True while the conversation has no study at all and the latest message is younger than the grace."""
    sent = state.get(S.K_SENT_AT)
    return (state.get(S.K_STUDY) is None and state.get(S.K_PENDING) is None and sent is not None
            and time.monotonic() - sent < UPLOAD_GRACE_S)


def dispatch(state: MutableMapping[str, Any], settings: Settings, graph: Any, turns_worker: TurnWorker,
             claim: Any = None) -> None:
    """Hand the messages sent since the last run to the worker, in order, each with the study that was
    new when it was sent. A message over the length limit, or one whose study cannot be saved, becomes
    an error turn at once (nothing runs). ``claim(thread_id)`` records the conversation's owner first."""
    inbox: list[str] = state[S.K_INBOX]
    turns: list[TurnResult] = state[S.K_TURNS]
    if inbox and awaiting_upload(state):
        # A message sent the moment a file was chosen can reach the page before the file does: with no
        # study yet, wait a moment. The upload's own rerun stops this one and hands both on together.
        time.sleep(UPLOAD_GRACE_S - (time.monotonic() - state[S.K_SENT_AT]))
        st.rerun()
    while inbox:
        prompt = inbox[0]
        if len(prompt) > settings.max_message_chars:
            turns.append(TurnResult(user_text=prompt[:300] + "...", error=(
                f"your message is {len(prompt):,} characters; the limit is {settings.max_message_chars:,}. "
                "Please shorten it")))
            inbox.pop(0)
            continue
        pending = state[S.K_PENDING]
        try:
            inputs = S.take_study_inputs(state, studies(graph))
        except S.StudyNotSaved as exc:
            turns.append(TurnResult(user_text=prompt, error=str(exc)))
            inbox.pop(0)
            continue
        inputs.update(comparison_inputs(state, inputs))  # a named prior, a pair loaded together
        thread_id = state[S.K_THREAD]
        if claim is not None:
            claim(thread_id)
        label = "Working..."
        if not is_remote(graph) and not index_present(settings):
            label = "Working... (first use: the prior-report index may be built, about a minute)"
        turns_worker.submit(Job(prompt, thread_id, inputs, pending, label))
        inbox.pop(0)


def collect(state: MutableMapping[str, Any], turns_worker: TurnWorker) -> None:
    """Move the worker's finished turns into this conversation (a turn of a conversation the reader has
    since left stays in the checkpointer and comes back when it is reopened)."""
    for job, result in turns_worker.take_finished():
        if job.thread_id != state[S.K_THREAD]:
            continue
        if result.error:
            S.restore_pending(state, job.pending)  # the study may not have reached the graph: resend it
        state[S.K_TURNS].append(result)


def live_pane(turns_worker: TurnWorker) -> None:
    """The running turn and the queued messages; refreshes itself while the worker is busy and reruns
    the whole page when a turn finishes (the image, the evidence and the sidebar follow it)."""
    run_every = LIVE_REFRESH_S if turns_worker.busy else None

    @st.fragment(run_every=run_every)
    def pane() -> None:
        if turns_worker.has_finished():
            st.rerun(scope="app")
        live, queued = turns_worker.snapshot()
        if live is not None:
            with st.chat_message("user"):
                st.markdown(defang(live.job.prompt))
            with st.chat_message("assistant"):
                label = live.progress[-1].replace("**", "") if live.progress else live.job.label
                with st.status(label, state="running", expanded=True):
                    for line in live.progress:
                        st.markdown(line)
                if live.work:
                    if live.work_frac is not None:
                        st.progress(live.work_frac, text=live.work)
                    else:
                        st.caption(live.work)
                if live.text:
                    st.markdown("_VLM drafting..._\n\n" + escape(live.text) + " ▌")
                st.button("Stop", key="cxr_stop", icon=":material/stop_circle:", on_click=turns_worker.stop,
                          help="End this turn now; nothing of it is kept as an answer.")
        elif turns_worker.busy and not queued:
            st.caption(":material/hourglass_top: Stopping the previous turn...")
        for text in queued:
            with st.chat_message("user"):
                st.markdown(defang(text))
                st.caption(QUEUED_NOTE)

    pane()
