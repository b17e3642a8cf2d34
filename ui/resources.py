"""What one Streamlit server process shares between its sessions: the graph, its studies, model status.

Kept apart from the page code so every section reads the graph the same way: the compiled graph
(or the remote one) is built once per process and profile (``st.cache_resource``), and its
studies and study store are read through ``graph.runtime(g)`` here only.
"""

from __future__ import annotations

import logging
from typing import Any

import streamlit as st

from cxr_agent.settings import Settings, get_settings
from ui.model_status import model_status_lines
from ui.remote import connect as connect_remote
from ui.remote import is_remote

log = logging.getLogger("cxr_agent.ui")


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
    """Delete what is past ``retention_days`` now and hourly (agents/memory/retention.py), once per server."""
    try:
        from agents.memory.retention import start_periodic

        start_periodic(settings, saver=graph.checkpointer, store=study_store(graph, settings))
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
            status_lines(settings.model_profile, str(settings.data_dir))
        if box is not None:
            box.update(label="Assistant ready", state="complete", expanded=False)
        started.add(settings.model_profile)
        return graph, None
    except Exception as exc:  # keep the app usable (uploads, status) even without a graph
        log.exception("graph build failed")
        if box is not None:
            box.update(label="The assistant could not start", state="error", expanded=False)
        return None, f"The assistant could not start: {type(exc).__name__}: {str(exc)[:300]}"


def studies(graph: Any) -> Any:
    """The graph's own studies (graph.runtime(g).studies: the store its nodes read, plus their
    cache), so an upload goes in exactly as the graph's ingest would put it; None if unusable."""
    if is_remote(graph):
        return graph.studies
    try:
        from graph import runtime

        return runtime(graph).studies
    except Exception:  # noqa: BLE001 - take_study_inputs then refuses the turn (StudyNotSaved)
        return None


def study_store(graph: Any, settings: Settings) -> Any:
    """The graph's StudyStore (retention and forgetting delete from it), None if unusable."""
    try:
        found = studies(graph)
        return found.store if found is not None else None
    except Exception:  # noqa: BLE001 - opening the store failed (disk, permissions): logged by the caller
        return None


@st.cache_data(ttl=120, show_spinner=False)
def status_lines(profile: str, data_dir: str) -> list[dict[str, Any]]:
    """The model panel's lines, re-checked at most every two minutes (keyed by profile and data dir)."""
    return [vars(line) for line in model_status_lines(get_settings())]
