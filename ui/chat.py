"""The conversation pane: past turns drawn from the session, and the live turn while it streams.

Apart from ui/turn.py (which runs a turn and knows nothing of Streamlit) so the streaming
callbacks, the queued-message handling and the refusals live next to the widgets they fill.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from cxr_agent.settings import Settings
from knowledge.markdown import defang, escape
from ui import session as S
from ui.model_status import index_present
from ui.remote import is_remote
from ui.resources import studies
from ui.turn import TurnResult, run_turn


def render_turn(turn: TurnResult) -> None:
    with st.chat_message("user"):
        st.markdown(defang(turn.user_text))
    with st.chat_message("assistant"):
        if turn.progress:
            with st.status(f"Agent steps ({len(turn.progress)})", state="error" if turn.error else "complete", expanded=False):
                for line in turn.progress:
                    st.markdown(line)
        if turn.error:
            st.error(f"This turn failed ({turn.error}). The conversation is kept; you can try again.")
        else:
            st.markdown(defang(turn.reply))  # model and corpus text: no links or images
            if turn.failed_tools:
                st.caption(f"Unavailable this turn: {', '.join(turn.failed_tools)}")


def live_turn(state, settings: Settings, graph: Any, prompt: str) -> None:
    """Run a turn while showing each agent's progress and the text as it is written.

    The message stays queued until its turn is in the conversation (S.finish_prompt): a run stopped
    part-way (an upload's rerun) leaves it for the next run, which answers it about the new study.
    In a stopped run every session-state access raises the stop again, so the message is dequeued
    first and the turn appended to the list fetched here (no Streamlit call): never one without the other."""
    turns: list[TurnResult] = state[S.K_TURNS]
    if len(prompt) > settings.max_message_chars:
        refuse_turn(state, prompt[:300] + "...", f"your message is {len(prompt):,} characters; the limit is "
                    f"{settings.max_message_chars:,}. Please shorten it")
        return
    try:
        pending = state[S.K_PENDING]
        inputs = S.take_study_inputs(state, studies(graph))
    except S.StudyNotSaved as exc:
        refuse_turn(state, prompt, str(exc))
        return
    with st.chat_message("user"):
        st.markdown(defang(prompt))
    with st.chat_message("assistant"):
        first_index = not is_remote(graph) and not index_present(settings)
        label = "Working..."
        if first_index:
            label = "Working... (first use: the prior-report index may be built, about a minute)"
        status = st.status(label, expanded=True)
        reply_box = st.empty()
        tokens: list[str] = []

        def on_progress(line: str) -> None:
            status.markdown(line)
            status.update(label=line.replace("**", ""))

        work_bar = st.empty()

        def on_work(tool: str, stage: str, done: int, total: int | None) -> None:
            """The first-use index build: a real progress bar, not just a spinner."""
            if total:
                frac = min(1.0, max(0.0, done / total))
                work_bar.progress(frac, text=f"{tool}: {stage} {done:,}/{total:,} prior reports")
            else:
                work_bar.caption(f"{tool}: {stage} {done:,}")

        def on_token(text: str) -> None:
            tokens.append(text)
            reply_box.markdown("_VLM drafting..._\n\n" + escape("".join(tokens)) + " ▌")

        def on_reply(text: str) -> None:
            reply_box.markdown(defang(text))

        turn = run_turn(
            graph, prompt, thread_id=state[S.K_THREAD], extra_inputs=inputs,
            on_progress=on_progress, on_token=on_token, on_reply=on_reply,
            on_work=on_work,
        )
        work_bar.empty()
        if turn.error:
            S.restore_pending(state, pending)  # the study may not have reached the graph: resend it
            status.update(label=f"Failed after {turn.elapsed_s:.1f} s", state="error", expanded=False)
            reply_box.error(f"This turn failed ({turn.error}). The conversation is kept; you can try again.")
        else:
            status.update(label=f"Done in {turn.elapsed_s:.1f} s ({len(turn.progress)} steps)", state="complete", expanded=False)
            reply_box.markdown(defang(turn.reply))
            if turn.failed_tools:
                st.caption(f"Unavailable this turn: {', '.join(turn.failed_tools)}")
    S.finish_prompt(state)
    turns.append(turn)


def refuse_turn(state, shown_text: str, why: str) -> None:
    """A turn that is not run, kept in the conversation as an error turn (the conversation survives)."""
    turn = TurnResult(user_text=shown_text, error=why)
    render_turn(turn)
    turns: list[TurnResult] = state[S.K_TURNS]
    S.finish_prompt(state)
    turns.append(turn)
