"""The sidebar: new/delete conversation, the downloads, and the model panel.

Everything about the conversation as a whole (exports, forgetting it on disk) and about the
server (models, index, remote graph) lives here, apart from the study and the chat.
"""

from __future__ import annotations

import logging
from typing import Any

import streamlit as st

from cxr_agent.settings import DISCLAIMER, Settings
from ui import session as S
from ui.conversations import OwnerBook
from ui.exports import (
    conversation_markdown,
    dicom_sr_bytes,
    fhir_report_json,
    findings_json,
    studies_with_findings,
)
from ui.history import K_OWNER, conversations_section, forget
from ui.model_status import StatusLine, index_present, tool_load_states
from ui.remote import identity_warning, is_remote, open_server_warning
from ui.resources import status_lines, studies, study_store
from ui.turn import TurnResult

log = logging.getLogger("cxr_agent.ui")


def sidebar(state, settings: Settings, graph: Any, graph_error: str | None, book: OwnerBook | None = None) -> None:
    with st.sidebar:
        st.title("cxr-agent")
        st.caption("Chest X-ray decision support (research use)")
        st.button("New conversation", on_click=S.new_conversation, args=(state,), icon=":material/add_comment:", width="stretch")
        st.caption(f"Conversation `{state[S.K_THREAD][-8:]}`")
        with st.popover("Delete this conversation", icon=":material/delete:", width="stretch",
                        key=f"cxr_delete_{state[S.K_UPLOADER_NONCE]}"):  # a new conversation closes it
            st.caption("Deletes its messages and the studies and heatmaps only it used, from this server's disk.")
            st.button("Delete now", key="cxr_forget", type="primary", on_click=forget_conversation,
                      args=(state, settings, graph, book))
        turns: list[TurnResult] = state[S.K_TURNS]
        if turns:
            study = state[S.K_STUDY]
            facts = S.study_facts(study) if study is not None else None
            labels = state[S.K_STUDY_LABELS]
            kw = {"study_facts": facts, "demo": settings.is_demo, "thread_id": state[S.K_THREAD],
                  "studies_facts": _studies_facts(turns, study, labels, graph)}
            st.download_button(
                "Download report (Markdown)", conversation_markdown(turns, study_labels=labels, **kw),
                file_name="cxr-agent-report.md",
                mime="text/markdown", on_click="ignore", width="stretch",
            )
            st.download_button(
                "Download findings (JSON)", findings_json(turns, **kw), file_name="cxr-agent-findings.json",
                mime="application/json", on_click="ignore", width="stretch",
            )
            _structured_downloads(state, turns, study, settings, graph)
        if book is not None and graph is not None:
            conversations_section(state, settings, graph, book)
        st.subheader("Models")
        st.caption(f"Profile: **{settings.model_profile}**" + (" (demo: random weights)" if settings.is_demo else ""))
        if graph_error:
            st.error(graph_error)
        if is_remote(graph):  # the models, their weights and the index live on the graph server
            served = graph.server_info.get("model_profile")
            st.markdown(f":material/cloud: **Graph server** - `{graph.url}` (models and index live there; profile {served})")
            if warning := open_server_warning(settings, graph.url):
                st.warning(warning, icon=":material/lock_open:")
            elif warning := identity_warning(graph):
                st.warning(warning, icon=":material/group:")
            if served and served != settings.model_profile:
                st.warning(f"This UI runs with profile {settings.model_profile} but the server with {served}: "
                           "set CXR_AGENT_MODEL_PROFILE to match (it decides the demo warning).")
            st.caption(DISCLAIMER)
            return
        for line in status_lines(settings.model_profile, str(settings.data_dir)):
            st.markdown(StatusLine(**line).markdown(with_fix=False))
            if line["fix"]:
                st.code(line["fix"], language="bash", wrap_lines=True)  # never cut at the sidebar's edge
        loaded = tool_load_states(graph) if graph is not None else {}
        if loaded:
            st.caption(
                "Tools in this server: "
                + ", ".join(f"{name} ({'loaded' if ok else 'loads on first use'})" for name, ok in loaded.items())
            )
        if index_present(settings):
            st.markdown(":material/check_circle: **Prior-report index** - built")
        else:
            st.markdown(":material/hourglass_top: **Prior-report index** - not built yet: the first report builds it (about a minute).")
        st.caption(DISCLAIMER)


def _structured_downloads(state, turns: list[TurnResult], study: Any, settings: Settings, graph: Any) -> None:
    """DICOM SR and FHIR JSON of one study's current decisions (the reader picks the study when the
    conversation holds several), against the de-identified study."""
    found = studies_with_findings(turns)
    if not found:
        return
    labels = state[S.K_STUDY_LABELS]
    chosen = study.id if study is not None and study.id in found else found[-1]
    if len(found) > 1:
        chosen = st.selectbox("Study to export (SR, FHIR)", found, index=found.index(chosen),
                              format_func=lambda sid: labels.get(sid) or f"study {sid[:12]}",
                              key=f"cxr_export_study_{state[S.K_UPLOADER_NONCE]}")
    target = study if study is not None and study.id == chosen else _stored_study(graph, chosen)
    decisions = _current_decisions(graph, state[S.K_THREAD], chosen)
    try:
        stored = lambda sid: _stored_study(graph, sid)  # noqa: E731 - the prior a comparison was made against
        sr = dicom_sr_bytes(turns, target, demo=settings.is_demo, decisions=decisions, studies=stored)
        fhir = fhir_report_json(turns, target, demo=settings.is_demo, decisions=decisions, studies=stored)
    except Exception as exc:  # noqa: BLE001 - a failed export must not break the page
        log.warning("structured export failed (%s)", type(exc).__name__)
        st.caption(f"DICOM SR / FHIR export unavailable ({type(exc).__name__}).")
        return
    if sr is not None:
        st.download_button("Download DICOM SR", sr, file_name="cxr-agent-sr.dcm", mime="application/dicom",
                           on_click="ignore", width="stretch")
    if fhir is not None:
        st.download_button("Download FHIR JSON", fhir, file_name="cxr-agent-fhir.json", mime="application/fhir+json",
                           on_click="ignore", width="stretch")


def _studies_facts(turns: list[TurnResult], study: Any, labels: dict[str, str], graph: Any) -> dict[str, Any]:
    """Each study the conversation's turns concern, in order (label -> facts). A study this page cannot
    read back is named with no facts: one retention removed, or, with a graph server, any but the one on
    screen (the server holds the studies)."""
    out: dict[str, Any] = {}
    for sid in dict.fromkeys(t.study_id for t in turns if t.study_id):
        found = study if study is not None and study.id == sid else _stored_study(graph, sid)
        out[labels.get(sid) or f"study {sid[:12]}"] = S.study_facts(found) if found is not None else {}
    return out


def _stored_study(graph: Any, study_id: str) -> Any:
    """An earlier study of the conversation, from the store (None if retention removed it)."""
    try:
        return studies(graph).get(study_id)
    except Exception:  # noqa: BLE001 - gone or unreadable: no SR for it, the FHIR still goes out
        return None


def _current_decisions(graph: Any, thread_id: str, study_id: str) -> list[Any] | None:
    """The study's current decisions as the thread's state holds them (its evidence ledger); None when
    the state has none for it (an earlier study: its latest turn's decisions are used)."""
    if graph is None or is_remote(graph):
        return None
    try:
        from agents.memory.ledger import study_decisions

        values = graph.get_state({"configurable": {"thread_id": thread_id}}).values
        return study_decisions(values, study_id) or None
    except Exception:  # noqa: BLE001 - an older checkpoint or an unreadable state: the turns' decisions
        log.warning("study decisions unavailable", exc_info=True)
        return None


def forget_conversation(state, settings: Settings, graph: Any, book: OwnerBook | None = None) -> None:
    """The sidebar's delete action for the open conversation: forget it on disk, then start afresh."""
    thread = state[S.K_THREAD]
    if book is not None and book.owns(thread, state.get(K_OWNER) or ""):
        forget(state, settings, graph, book, thread)
        return
    try:  # never sent a message (nothing stored under its id), or no owner table
        if is_remote(graph):
            graph.forget(thread)
        elif graph is not None and state[S.K_TURNS]:
            from agents.memory.retention import forget_thread

            forget_thread(thread, saver=graph.checkpointer, store=study_store(graph, settings),
                          artifacts_dir=settings.artifacts_dir)
        st.toast("Conversation deleted.", icon=":material/delete:")
    except Exception as exc:  # noqa: BLE001 - say it failed; keep the conversation
        log.exception("forget failed")
        st.toast(f"The conversation could not be deleted ({type(exc).__name__}).", icon=":material/error:")
        return
    S.new_conversation(state)
