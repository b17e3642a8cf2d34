"""cxr-agent chat app: upload a chest radiograph, ask, see every agent's evidence.

Run with `cxr-agent ui` (or `streamlit run ui/app.py`). Thin by design: the logic lives in
ui/session.py (per-session state), ui/turn.py (streaming a turn), ui/overlays.py (drawing),
ui/evidence_table.py (the evidence panel) and ui/exports.py (downloads).
"""

from __future__ import annotations

import hashlib
import logging
from contextlib import nullcontext
from typing import Any

import streamlit as st

from cxr_agent.settings import DEMO_WARNING, DISCLAIMER, Settings, get_settings
from knowledge.markdown import defang, escape
from knowledge.vocabulary import display_name
from ui import session as S
from ui.evidence_table import build_rows, prior_reports, style_conflicts, to_dataframe, tool_summary
from ui.exports import conversation_markdown, dicom_sr_bytes, fhir_report_json, findings_json
from ui.model_status import StatusLine, index_present, model_status_lines, tool_load_states
from ui.overlays import SOURCE_COLORS, compose, load_heatmap
from ui.pacs import can_push, open_from_pacs, push_to_pacs
from ui.remote import connect as connect_remote
from ui.remote import is_remote
from ui.turn import TurnResult, run_turn

log = logging.getLogger("cxr_agent.ui")

UPLOAD_TYPES_HELP = "PNG, JPEG or DICOM (.dcm; files without an extension are accepted too)."
DISPLAY_MAX_SIDE = 900
CHAT_HEIGHT = 760
CHAT_KEY = "cxr_chat_input"


# --- shared resources (one per server process, shared by every session) ------------------------
@st.cache_resource(show_spinner="Loading the agent graph and models (first start only)...")
def _graph_resource(profile: str, graph_url: str | None = None) -> Any:
    """The compiled graph; keyed by profile so a profile change never reuses the wrong models.

    The module's own ``graph.graph`` (built on import with the same settings) is the one graph of
    this process; a second one is built only if the settings changed since (tests switch profiles
    in-process). With ``graph_url`` (CXR_AGENT_GRAPH_URL): the served graph (ui/remote.py), no models here."""
    settings = get_settings()
    if graph_url:
        return connect_remote(settings)
    import graph as graph_module

    g = graph_module.graph
    if graph_module.runtime(g).settings != settings:
        g = graph_module.build_graph(settings)
    _start_retention(settings, g)
    return g


def _start_retention(settings: Settings, graph: Any) -> None:
    """Delete what is past ``retention_days`` now and hourly (agents/retention.py), once per server."""
    try:
        from agents.retention import start_periodic

        start_periodic(settings, saver=graph.checkpointer, store=_study_store(graph, settings))
    except Exception:  # noqa: BLE001 - retention failing must not stop the app; it is logged
        log.exception("retention could not start")


@st.cache_resource(show_spinner=False)
def _started() -> set[str]:
    """Profiles whose graph this server process has already built (process-wide, survives reruns)."""
    return set()


def get_graph(settings: Settings) -> tuple[Any | None, str | None]:
    """The shared graph; on a server's first page load, a visible progress box while it loads."""
    started = _started()
    box = None
    if settings.model_profile not in started:
        box = st.status("Starting the assistant (first page load only)...", expanded=True)
        box.markdown(":material/hourglass_top: Loading the agent graph and its tools...")
    try:
        graph = _graph_resource(settings.model_profile, settings.graph_url)
        if box is not None and is_remote(graph):
            box.markdown(f":material/check_circle: Graph server {graph.url} ready (models live there)")
        elif box is not None:
            box.markdown(":material/check_circle: Agent graph ready")
            box.markdown(":material/hourglass_top: Checking the model weights...")
            _status_lines(settings.model_profile, str(settings.data_dir))
        if box is not None:
            box.update(label="Assistant ready", state="complete", expanded=False)
        started.add(settings.model_profile)
        return graph, None
    except Exception as exc:  # keep the app usable (uploads, status) even without a graph
        log.exception("graph build failed")
        if box is not None:
            box.update(label="The assistant could not start", state="error", expanded=False)
        return None, f"The assistant could not start: {type(exc).__name__}: {str(exc)[:300]}"


def _studies(graph: Any) -> Any:
    """The graph's own studies (graph.runtime(g).studies: the store its nodes read, plus their
    cache), so an upload goes in exactly as the graph's ingest would put it; None if unusable."""
    if is_remote(graph):
        return graph.studies
    try:
        from graph import runtime

        return runtime(graph).studies
    except Exception:  # noqa: BLE001 - take_study_inputs then refuses the turn (StudyNotSaved)
        return None


def _study_store(graph: Any, settings: Settings) -> Any:
    """The graph's StudyStore (retention and forgetting delete from it), None if unusable."""
    try:
        studies = _studies(graph)
        return studies.store if studies is not None else None
    except Exception:  # noqa: BLE001 - opening the store failed (disk, permissions): logged by the caller
        return None


@st.cache_data(ttl=120, show_spinner=False)
def _status_lines(profile: str, data_dir: str) -> list[dict[str, Any]]:
    return [vars(line) for line in model_status_lines(get_settings())]


# --- page sections ----------------------------------------------------------------------------
def header(settings: Settings) -> None:
    if settings.is_demo:
        st.warning(DEMO_WARNING, icon=":material/warning:")
    st.info(DISCLAIMER, icon=":material/info:")
    address = str(st.get_option("server.address") or "")
    if not settings.ui_require_login and not is_loopback(address):
        st.error(
            f"This app listens on {address or 'every network interface'} without a login: anyone who can reach "
            "it can upload studies and read every answer. Set CXR_AGENT_UI_REQUIRE_LOGIN=true with an [auth] "
            "section in .streamlit/secrets.toml (Streamlit's OIDC login), or bind to 127.0.0.1 behind an "
            "authenticating proxy. See README, 'Deploying for a team'.",
            icon=":material/lock_open:",
        )


def is_loopback(address: str) -> bool:
    """True for addresses only this machine can reach (an empty address binds every interface)."""
    import ipaddress

    if address in {"localhost"}:
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def require_login(settings: Settings) -> bool:
    """With ``ui_require_login``, Streamlit's OIDC login (st.login) gates the page. True = may continue."""
    if not settings.ui_require_login:
        return True
    try:
        if st.user.is_logged_in:
            st.sidebar.button("Log out", on_click=st.logout)
            return True
    except Exception as exc:  # noqa: BLE001 - no [auth] section: say so instead of opening the app
        st.error(f"Login is required (CXR_AGENT_UI_REQUIRE_LOGIN) but not configured: {type(exc).__name__}. "
                 "Add an [auth] section to .streamlit/secrets.toml.")
        return False
    st.info("Please log in to use cxr-agent.", icon=":material/lock:")
    st.button("Log in", on_click=st.login, type="primary")
    return False


def upload_section(state, graph: Any = None) -> None:
    uploaded = st.file_uploader(
        "Upload a chest radiograph", type=None, key=S.uploader_key(state), help=UPLOAD_TYPES_HELP
    )
    if uploaded is not None:
        with st.spinner("Reading the study..."):  # a message sent meanwhile waits for it (S.ingest_upload)
            loader = graph.load_study if is_remote(graph) else None  # remote: the server stores it
            error = S.ingest_upload(state, uploaded.name, uploaded.getvalue(), loader=loader)
        if error:
            st.error(error, icon=":material/block:")


def pacs_section(state, settings: Settings) -> None:
    """Open a study from the PACS (DICOMweb) and, on request only, send the SR back (issue 16)."""
    if not settings.pacs_url:
        return
    with st.expander("Open from PACS", icon=":material/cloud_download:"):
        with st.form("cxr_pacs_open", border=False):
            uid = st.text_input("Study Instance UID", key="cxr_pacs_uid", placeholder="1.2.840...")
            if st.form_submit_button("Open") and uid.strip():
                with st.spinner("Pulling the study from the PACS..."):
                    error = open_from_pacs(state, settings, uid)
                if error:
                    st.error(error, icon=":material/block:")
        if can_push(state) and st.button("Send SR to PACS", key="cxr_pacs_push", icon=":material/cloud_upload:"):
            with st.spinner("Sending the DICOM SR..."):
                ok, message = push_to_pacs(state, settings)
            (st.success if ok else st.error)(message)


def image_section(state, graph: Any = None) -> None:
    study = state[S.K_STUDY]
    if study is None:
        st.caption("No study loaded yet. Upload a PNG, JPEG or DICOM chest radiograph to begin.")
        return
    boxes, heats, latest = S.collect_overlays(state[S.K_TURNS], study.id)
    nonce = state[S.K_UPLOADER_NONCE]
    shown_boxes, shown_heats, alpha = boxes, [], 0.45
    if boxes or heats:
        c1, c2 = st.columns(2)
        box_keys = [b.key for b in boxes]
        heat_keys = [h.key for h in heats]
        sig = hashlib.sha1("|".join(box_keys + heat_keys).encode()).hexdigest()[:8]
        with c1:
            picked = st.multiselect(
                "Boxes (VLM grounding)", box_keys, default=[k for k in box_keys if k in latest] or box_keys,
                key=f"cxr_boxes_{nonce}_{sig}",
            )
        with c2:
            picked_h = st.multiselect(
                "Heatmaps (classifier)", heat_keys, default=[k for k in heat_keys if k in latest][:1],
                key=f"cxr_heats_{nonce}_{sig}",
            )
        if picked_h:
            alpha = st.slider("Heatmap opacity", 0.1, 0.9, 0.45, 0.05, key=f"cxr_alpha_{nonce}")
        shown_boxes = [b for b in boxes if b.key in picked]
        shown_heats = [h for h in heats if h.key in picked_h]
    arrays, missing = [], []
    for h in shown_heats:
        arr = graph.load_heatmap(h.uri) if is_remote(graph) else load_heatmap(h.uri)
        if arr is None:
            missing.append(h.key)
        else:
            arrays.append(arr)
    img = compose(study.pixels, boxes=shown_boxes, heatmaps=arrays, max_side=DISPLAY_MAX_SIDE, alpha=alpha)
    caption = f"{state[S.K_STUDY_NAME] or 'study'} - overlays: {len(shown_boxes)} box(es), {len(arrays)} heatmap(s)"
    st.image(img, caption=caption, width="stretch")
    if missing:
        st.caption(f"Heatmap file unavailable for: {', '.join(missing)}")
    if shown_boxes:
        legend = " ".join(
            f"<span style='color:rgb{SOURCE_COLORS.get(s, (200, 200, 200))}'>■</span> {s}"
            for s in sorted({b.source for b in shown_boxes})
        )
        st.markdown(f"Box colours: {legend}", unsafe_allow_html=True)
    with st.container(border=True):
        st.markdown("**Study (de-identified)**")
        facts = S.study_facts(study)
        st.markdown("  \n".join(f"{k}: **{v}**" for k, v in facts.items()))


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
        inputs = S.take_study_inputs(state, _studies(graph))
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


def _capabilities(graph: Any) -> dict[str, Any] | None:
    """The graph's tools' declared capabilities (they decide the evidence table's columns)."""
    if is_remote(graph):
        return None  # the built-in tools' columns
    try:
        from graph import runtime

        return runtime(graph).capabilities
    except Exception:  # noqa: BLE001 - no graph: the built-in tools' columns
        return None


def evidence_section(state, graph: Any = None) -> None:
    found = S.latest_with_evidence(state[S.K_TURNS])
    if found is None:
        return
    idx, turn = found
    st.subheader("Evidence")
    st.caption(f"Turn {idx}: \u201c{turn.user_text[:120]}\u201d")
    study = state[S.K_STUDY]
    if study is not None and turn.study_id and turn.study_id != study.id:
        st.caption(":material/history: This evidence is about the previously loaded study; ask again for the new one.")
    caps = _capabilities(graph) if graph is not None else None
    rows = build_rows(turn.evidence, turn.decisions, verifications=turn.verifications, capabilities=caps)
    if rows:
        st.dataframe(style_conflicts(to_dataframe(rows)), hide_index=True, width="stretch")
        n_conf = sum(1 for r in rows if r["_conflict"])
        if n_conf:
            st.warning(f"{n_conf} finding(s) where the image sources disagree: flagged for human review.", icon=":material/warning:")
    else:
        st.caption("No finding-level evidence this turn.")
    st.caption(
        "Classifier: operating-point-normalised score (0.5 = the model's calibrated threshold), not a probability. "
        "Retrieval prevalence: how many of the most similar prior reports mention the finding (a prior, not a vote)."
    )
    tools = tool_summary(turn.evidence, caps)
    if tools:
        st.caption(
            "Tools: "
            + " · ".join(
                f"{t['tool']} {':material/check:' if t['ok'] else ':material/close:'}"
                + (f" {t['latency_ms']} ms" if t["latency_ms"] is not None else "")
                + (f" ({t['error'][:80]})" if t["error"] else "")
                for t in tools
            )
        )
    priors = prior_reports(turn.evidence)
    if priors:
        st.markdown("**Similar prior reports**")
        for i, r in enumerate(priors, 1):
            labels = ", ".join(display_name(x) for x in r.labels) if r.labels else "no labelled findings"
            with st.expander(f"#{i} - similarity {r.score:.2f} - {labels}"):
                st.markdown(escape(r.text))  # corpus text shown verbatim, never as links/images


def sidebar(state, settings: Settings, graph: Any, graph_error: str | None) -> None:
    with st.sidebar:
        st.title("cxr-agent")
        st.caption("Chest X-ray decision support (research use)")
        st.button("New conversation", on_click=S.new_conversation, args=(state,), icon=":material/add_comment:", width="stretch")
        st.caption(f"Conversation `{state[S.K_THREAD][-8:]}`")
        with st.popover("Delete this conversation", icon=":material/delete:", width="stretch"):
            st.caption("Deletes its messages and the studies and heatmaps only it used, from this server's disk.")
            st.button("Delete now", key="cxr_forget", type="primary", on_click=forget_conversation,
                      args=(state, settings, graph))
        turns: list[TurnResult] = state[S.K_TURNS]
        if turns:
            study = state[S.K_STUDY]
            facts = S.study_facts(study) if study is not None else None
            kw = {"study_facts": facts, "demo": settings.is_demo, "thread_id": state[S.K_THREAD]}
            st.download_button(
                "Download report (Markdown)", conversation_markdown(turns, **kw), file_name="cxr-agent-report.md",
                mime="text/markdown", on_click="ignore", width="stretch",
            )
            st.download_button(
                "Download findings (JSON)", findings_json(turns, **kw), file_name="cxr-agent-findings.json",
                mime="application/json", on_click="ignore", width="stretch",
            )
            _structured_downloads(turns, study, settings)
        st.subheader("Models")
        st.caption(f"Profile: **{settings.model_profile}**" + (" (demo: random weights)" if settings.is_demo else ""))
        if graph_error:
            st.error(graph_error)
        if is_remote(graph):  # the models, their weights and the index live on the graph server
            served = graph.server_info.get("model_profile")
            st.markdown(f":material/cloud: **Graph server** - `{graph.url}` (models and index live there; profile {served})")
            if served and served != settings.model_profile:
                st.warning(f"This UI runs with profile {settings.model_profile} but the server with {served}: "
                           "set CXR_AGENT_MODEL_PROFILE to match (it decides the demo warning).")
            st.caption(DISCLAIMER)
            return
        for line in _status_lines(settings.model_profile, str(settings.data_dir)):
            st.markdown(StatusLine(**line).markdown(with_fix=False))
            if line["fix"]:
                st.code(line["fix"], language="bash")
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


def _structured_downloads(turns: list[TurnResult], study: Any, settings: Settings) -> None:
    """DICOM SR and FHIR JSON of the latest findings, against the de-identified study (issue 16)."""
    try:
        sr, fhir = dicom_sr_bytes(turns, study, demo=settings.is_demo), fhir_report_json(turns, study, demo=settings.is_demo)
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


def forget_conversation(state, settings: Settings, graph: Any) -> None:
    """The sidebar's delete action: forget the thread on disk (agents/retention.py), then start afresh."""
    thread = state[S.K_THREAD]
    try:
        if is_remote(graph):
            graph.forget(thread)
        elif graph is not None and state[S.K_TURNS]:
            from agents.retention import forget_thread

            forget_thread(thread, saver=graph.checkpointer, store=_study_store(graph, settings),
                          artifacts_dir=settings.artifacts_dir)
        st.toast("Conversation deleted.", icon=":material/delete:")
    except Exception as exc:  # noqa: BLE001 - say it failed; keep the conversation
        log.exception("forget failed")
        st.toast(f"The conversation could not be deleted ({type(exc).__name__}).", icon=":material/error:")
        return
    S.new_conversation(state)


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
        pacs_section(state, settings)
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
