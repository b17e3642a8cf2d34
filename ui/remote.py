"""The UI as a client of LangGraph Server: the served graph behind the surface the app uses in-process.

With ``CXR_AGENT_GRAPH_URL`` set, the Streamlit app runs every turn on that server
(``langgraph dev`` / ``langgraph up`` serving ``langgraph.json``) instead of building a graph, so a
UI replica holds no models and never imports torch or transformers. ``RemoteAgent`` offers what
the app needs from its in-process graph, nothing more:

- ``stream(inputs, config, stream_mode)``: what ``ui.turn.run_turn`` calls, through LangGraph's own
  ``RemoteGraph`` (progress events as they happen, and the node updates that carry the turn record);
  ``get_state(config)``: a stored conversation, reopened;
- ``load_study(data, filename=)``: an upload goes to the server's ``POST /cxr/studies`` (server/app.py),
  which de-identifies and stores it and returns its ``study_id``; the page shows the same
  de-identified pixels, decoded here (``tools.ingestion.loader``: decoders only, no models);
- ``load_pair(files, thread_id)``: two films of one patient go to ``POST /cxr/studies/pair``, which stores
  both and keeps their order, interval and patient keys in the conversation's state on the server;
- ``studies.put(study)``: the id the next turn sends (after checking the server holds it), so only
  ``{"study_id": ...}`` ever enters a run or a checkpoint;
- ``load_heatmap(uri)``: a turn's heatmap from ``GET /cxr/artifacts`` (the reply names server paths);
- ``forget(thread_id)``: deletes the conversation's thread on the server, with the studies only it used;
- runs join the thread's queue on the server (``multitask_strategy="enqueue"``), and the reader's Stop
  (``tools.stop.STOP_KEY`` in the config) cancels the server's run (``runs.cancel``).

UI thread ids (``ui-<hex>``) become the UUIDs LangGraph Server requires (same id -> same UUID).
"""

from __future__ import annotations

import io
import logging
import threading
import uuid
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

import httpx
import numpy as np

from cxr_agent.settings import Settings
from tools.ingestion.study import Study, StudyError
from tools.stop import STOP_KEY

log = logging.getLogger(__name__)

STOP_POLL_S = 0.2
"""How often a remote turn looks at the reader's Stop while waiting for the server's next event."""
HEATMAP_CACHE = 64
"""Heatmaps kept per UI process (<= 512 px uint8 each): Streamlit redraws the page on every click."""
THREAD_HEADER = "X-Cxr-Thread"
"""Names the conversation an upload is for (a header: no id travels in the URL)."""


class GraphServerUnavailable(StudyError):
    """The graph server did not take the upload (down, unreachable, or an unexpected answer)."""


def is_remote(graph: Any) -> bool:
    """True for the app's handle on a served graph (the app then skips in-process-only parts)."""
    return isinstance(graph, RemoteAgent)


def ui_thread_id(server_id: str) -> str:
    """The UI thread id of a server thread (the inverse of ``server_thread_id`` for UI-made threads)."""
    return f"ui-{uuid.UUID(server_id).hex}"


USER_HEADER, USER_NAME_HEADER, USER_ORG_HEADER = "X-Cxr-User", "X-Cxr-User-Name", "X-Cxr-User-Org"


@dataclass(frozen=True)
class SignedInUser:
    """The person using the app, as the graph server should know them (from the app's OIDC login): the
    server signs reviews with this name and organisation, so they come from the login's claims."""

    id: str
    name: str = ""
    org: str = ""

    @classmethod
    def from_claims(cls, user: Any) -> SignedInUser | None:
        """The signed-in user (``st.user``): e-mail (else ``sub``) as the id; name and organisation read
        from the claims as a local sign-off reads them (``Reviewer.from_oidc``). None without an id."""
        from agents.review.model import Reviewer, ReviewError

        claims = user.to_dict() if hasattr(user, "to_dict") else dict(user)
        ident = str(claims.get("email") or claims.get("sub") or "")
        if not ident:
            return None
        try:
            reviewer = Reviewer.from_oidc(claims)
        except ReviewError:
            return cls(ident, str(claims.get("name") or ""))
        return cls(ident, reviewer.name, reviewer.org)

    def headers(self) -> dict[str, str]:
        """What a gateway token's requests carry to name the user (server/auth.py reads them); the name and
        organisation percent-encoded, so that any UTF-8 survives an HTTP header."""
        from urllib.parse import quote

        out = {USER_HEADER: self.id}
        for header, value in ((USER_NAME_HEADER, self.name), (USER_ORG_HEADER, self.org)):
            text = "".join(c for c in value if c.isprintable()).strip()[:200]
            if text:
                out[header] = quote(text, safe=" @.,'()-_&/")
        return out


def identity_warning(agent: RemoteAgent) -> str | None:
    """What to tell the user when the server answered without an identity of their own: then it does
    not know who is asking, and everyone using this app sees (and may delete) every conversation."""
    caller = agent.caller()
    if caller is None:
        return ("The graph server did not say who it takes you to be (it may predate per-user access): "
                "treat every conversation on it as visible to everyone using this app.")
    if caller.get("sees_all"):
        return (f"The graph server answered without an identity of yours (it sees this app as "
                f"'{caller.get('id')}', which may read every conversation): everyone using this app sees every "
                "conversation on it. Give this app a user token, or sign in with a gateway token "
                "(CXR_AGENT_SERVER_USERS on the server).")
    return None


K_READER_AGENT = "cxr_reader_agent"


def for_reader(graph: Any, settings: Settings, state: Any) -> Any:
    """The graph this browser session uses: with the app's login on, a remote graph acting for the
    signed-in user (``as_user``), kept in the session; otherwise ``graph`` itself."""
    if not is_remote(graph) or not settings.ui_require_login:
        return graph
    import streamlit as st

    user = SignedInUser.from_claims(st.user)
    if user is None:
        return graph
    agent = state.get(K_READER_AGENT)
    if agent is None or agent.user != user:
        agent = state[K_READER_AGENT] = graph.as_user(user)
    return agent


def server_thread_id(thread_id: str) -> str:
    """The UUID LangGraph Server needs for a UI thread id (stable: one conversation, one thread)."""
    try:
        return str(uuid.UUID(thread_id.removeprefix("ui-")))
    except ValueError:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"cxr-agent:{thread_id}"))


class InsecureGraphURL(ValueError):
    """CXR_AGENT_GRAPH_URL is plain http:// to another machine and insecure transport was not allowed."""


def check_graph_url(url: str, allow_insecure_remote: bool = False) -> None:
    """Refuse a graph server URL that would carry images and conversations unencrypted off this machine
    (http:// is fine on loopback; elsewhere only with CXR_AGENT_GRAPH_ALLOW_INSECURE_REMOTE=true)."""
    from urllib.parse import urlsplit

    from tools.vlm.backends.transport import is_loopback

    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
    except ValueError:
        raise InsecureGraphURL("CXR_AGENT_GRAPH_URL is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not host:
        raise InsecureGraphURL("CXR_AGENT_GRAPH_URL must be an http:// or https:// URL with a host")
    if parts.scheme == "http" and not is_loopback(host) and not allow_insecure_remote:
        raise InsecureGraphURL(
            "CXR_AGENT_GRAPH_URL is plain http:// to another machine, so images and conversations would cross "
            "the network unencrypted: use https://, or set CXR_AGENT_GRAPH_ALLOW_INSECURE_REMOTE=true if the "
            "network itself is trusted and encrypted")


def _file_type(filename: str | None) -> dict[str, str]:
    """The upload's extension as a header (only it matters to the server; a name may identify a patient)."""
    ext = filename.rpartition(".")[2].lower() if filename and "." in filename else ""
    return {"X-Cxr-File-Type": ext} if ext.isascii() and ext.isalnum() and len(ext) <= 8 else {}


def _wire_message(message: Any) -> Any:
    """``("user", text)`` (the in-process input form) as the JSON message the server parses."""
    if isinstance(message, tuple) and len(message) == 2:
        return {"role": message[0], "content": message[1]}
    return message


class RemoteStudies:
    """The study "store" of a remote graph: the server already stored each upload at ingest."""

    def __init__(self, agent: RemoteAgent) -> None:
        self.agent = agent

    def put(self, study: Study) -> str:
        """The study's id, once the server confirms it holds that study (else a typed error)."""
        r = self.agent.http.get(f"/cxr/studies/{study.id}")
        if r.status_code != 200:
            raise GraphServerUnavailable(f"the graph server does not hold this study (HTTP {r.status_code}); "
                                         "upload the file again")
        return study.id


class RemoteAgent:
    """A LangGraph Server serving the cxr-agent graph, used by the app in place of a compiled graph."""

    def __init__(self, settings: Settings, *, http: httpx.Client | None = None,
                 user: SignedInUser | None = None) -> None:
        from langgraph.pregel.remote import RemoteGraph
        from langgraph_sdk import get_sync_client

        if not settings.graph_url:
            raise ValueError("CXR_AGENT_GRAPH_URL is not set")
        check_graph_url(settings.graph_url, settings.graph_allow_insecure_remote)
        self.settings = settings
        self.url = settings.graph_url.rstrip("/")
        timeout = httpx.Timeout(settings.graph_timeout_s, connect=10.0)
        headers = {**settings.server_auth_headers(), **(user.headers() if user else {})}  # server/auth.py checks it
        self.user = user
        self.http = http or httpx.Client(base_url=self.url, timeout=timeout, headers=headers)
        self.client = get_sync_client(url=self.url, timeout=timeout, api_key=None, headers=headers)
        self.graph = RemoteGraph(settings.graph_assistant_id, sync_client=self.client)
        self.studies = RemoteStudies(self)
        self._heatmaps: OrderedDict[str, np.ndarray] = OrderedDict()
        self.server_info: dict[str, Any] = {}  # /cxr/health at connect: model_profile, ...

    # --- what ui.turn.run_turn calls --------------------------------------------------------
    def stream(self, inputs: Mapping[str, Any], config: Mapping[str, Any], stream_mode: Any = None
               ) -> Iterator[tuple[str, Any]]:
        """The run's custom events as ``("custom", event)`` and node updates as ``("updates", chunk)``
        (the respond node's holds the turn record, as JSON)."""
        payload = dict(inputs)
        payload["messages"] = [_wire_message(m) for m in payload.get("messages") or []]
        stop = (config.get("configurable") or {}).get(STOP_KEY)
        wire = self._config(config)
        run: dict[str, str] = {}
        finished = threading.Event()
        if isinstance(stop, threading.Event):
            threading.Thread(target=self._cancel_on_stop, args=(stop, finished, wire, run), daemon=True,
                             name="cxr-remote-stop").start()
        try:  # queued behind the thread's running run on the server, never refused (HTTP 409)
            for part in self.graph.stream(payload, wire, stream_mode=["custom", "updates"], multitask_strategy="enqueue",
                                           on_run_created=lambda meta: run.update(run_id=str(meta["run_id"]))):
                yield part[0], part[1]  # the SDK's StreamPart: (event, data, id)
        finally:
            finished.set()

    def _cancel_on_stop(self, stop: threading.Event, finished: threading.Event, wire: Mapping[str, Any],
                        run: Mapping[str, str]) -> None:
        """Cancel the server's run once the reader's Stop is set, even while no event arrives (a tool
        blocked on the server); a run still waiting in the thread's queue is cancelled too."""
        while not finished.is_set():
            if stop.wait(STOP_POLL_S) and run.get("run_id"):
                self.cancel(str(wire["configurable"]["thread_id"]), run["run_id"])
                return

    def cancel(self, server_thread: str, run_id: str) -> None:
        """Cancel one run on the server (``runs.cancel``); a run that already ended stays as it is."""
        try:
            self.client.runs.cancel(server_thread, run_id)
        except httpx.HTTPError as exc:
            log.warning("the graph server did not cancel a stopped run (%s)", type(exc).__name__)

    def get_state(self, config: Mapping[str, Any]) -> Any:
        """The thread's state; an empty one for a thread the server holds with no checkpoint yet (its
        first run is under way or queued: a turn is checkpointed when it ends)."""
        wire = self._config(config)
        try:
            return self.graph.get_state(wire)
        except TypeError:  # RemoteGraph cannot read a state without a checkpoint
            raw = self.client.threads.get_state(wire["configurable"]["thread_id"])
            if raw.get("checkpoint") is not None:
                raise
            from langgraph.types import StateSnapshot

            return StateSnapshot(values=raw.get("values") or {}, next=(), config=wire, metadata=None,
                                 created_at=None, parent_config=None, tasks=(), interrupts=())

    # --- who is asking ------------------------------------------------------------------------
    def as_user(self, user: SignedInUser) -> RemoteAgent:
        """The same server, with requests made for ``user`` (the app's login; the server trusts this
        app's gateway token to name its users). One per browser session."""
        agent = RemoteAgent(self.settings, user=user)
        agent.server_info = agent.health()
        return agent

    def caller(self) -> dict[str, Any] | None:
        """Who the server took this app's requests to come from (``/cxr/health``'s ``caller``)."""
        found = self.server_info.get("caller")
        return found if isinstance(found, dict) else None

    def conversations(self, limit: int = 20) -> list[str]:
        """This caller's conversations on the server, newest first, as UI thread ids (the server lists
        only the caller's own threads; a service or open server lists everyone's)."""
        found = self.client.threads.search(limit=limit, sort_by="updated_at", sort_order="desc", select=["thread_id"])
        return [ui_thread_id(str(t["thread_id"])) for t in found]

    @staticmethod
    def _config(config: Mapping[str, Any]) -> dict[str, Any]:
        configurable = dict(config.get("configurable") or {})
        configurable.pop(STOP_KEY, None)  # the reader's Stop is an in-process event: it stays here
        if configurable.get("thread_id"):
            configurable["thread_id"] = server_thread_id(str(configurable["thread_id"]))
        return {**config, "configurable": configurable}

    # --- uploads and artifacts (server/app.py routes) ---------------------------------------
    def upload(self, data: bytes, filename: str | None, thread_id: str | None = None) -> dict[str, Any]:
        """POST the file to the server, which ingests it; its description (``study_id``, size...).
        ``thread_id``: the conversation it is for (``X-Cxr-Thread``), so the server keeps the study for
        it when another conversation on the same image is forgotten first."""
        headers = _file_type(filename)
        if thread_id:
            headers[THREAD_HEADER] = server_thread_id(thread_id)
        try:
            r = self.http.post("/cxr/studies", headers=headers, content=data)  # no name, no thread in the URL
        except httpx.HTTPError as exc:
            raise GraphServerUnavailable(f"the graph server at {self.url} did not answer ({type(exc).__name__}); "
                                         "try again") from None
        if r.status_code == 201:
            return r.json()
        detail = _detail(r)
        if r.status_code in (413, 422):  # the server's own refusal, meant for the clinician
            raise StudyError(detail)
        raise GraphServerUnavailable(f"the graph server refused the upload (HTTP {r.status_code}: {detail[:200]})")

    def load_study(self, data: bytes, *, filename: str | None = None, thread_id: str | None = None) -> Study:
        """Upload (the server stores the study) and decode the same bytes here for the page.

        Both sides de-identify with the same code; the study id is the server's. A loader for
        ``ui.session.ingest_upload``."""
        from tools.ingestion.loader import load_study

        info = self.upload(data, filename, thread_id)
        study = load_study(data, filename=filename, settings=self.settings)
        if study.id != info["study_id"]:  # e.g. different redaction settings on the server
            log.warning("the server stored a different rendering of the upload; using its study id")
            study = replace(study, id=str(info["study_id"]))
        return study

    def load_pair(self, files: list[tuple[str, bytes]], thread_id: str) -> tuple[list[Study], dict[str, Any] | None]:
        """Two films of one patient uploaded together (``POST /cxr/studies/pair``): the server stores both,
        orders them by their headers and holds the pair (patient keys under the thread's salt) in the
        conversation ``thread_id``. The two studies as loaded here (given order), and the pair's order and
        interval (``prior_study_id``, ``study_id``, ``interval_days``), None when the headers give no order."""
        from tools.ingestion.loader import load_study

        if len(files) != 2:
            raise ValueError(f"a pair is two files, not {len(files)}")
        parts = {field: (f"upload.{name.rpartition('.')[2]}" if "." in name else "upload", data)
                 for field, (name, data) in zip(("first", "second"), files, strict=True)}  # no name travels
        try:
            r = self.http.post("/cxr/studies/pair", params={"thread_id": server_thread_id(thread_id)}, files=parts)
        except httpx.HTTPError as exc:
            raise GraphServerUnavailable(f"the graph server at {self.url} did not answer ({type(exc).__name__}); "
                                         "try again") from None
        if r.status_code in (413, 422):
            raise StudyError(_detail(r))
        if r.status_code != 201:
            raise GraphServerUnavailable(f"the graph server refused the two films (HTTP {r.status_code}: "
                                         f"{_detail(r)[:200]})")
        body = r.json()
        films = []
        for (name, data), info in zip(files, body["studies"], strict=True):
            study = load_study(data, filename=name, settings=self.settings)
            films.append(study if study.id == info["study_id"] else replace(study, id=str(info["study_id"])))
        return films, body.get("pair")

    def load_heatmap(self, uri: str) -> np.ndarray | None:
        """A turn's heatmap from the server (cached); None (and a log line) when unavailable."""
        from ui.overlays import normalise_heatmap

        if uri in self._heatmaps:
            self._heatmaps.move_to_end(uri)
            return self._heatmaps[uri]
        try:
            r = self.http.get("/cxr/artifacts", params={"uri": uri})
            r.raise_for_status()
            arr = np.load(io.BytesIO(r.content), allow_pickle=False)
            normalise_heatmap(arr)  # validate shape
        except (httpx.HTTPError, OSError, ValueError) as exc:
            log.warning("cannot fetch heatmap from the graph server: %s", type(exc).__name__)
            return None
        self._heatmaps[uri] = arr
        while len(self._heatmaps) > HEATMAP_CACHE:
            self._heatmaps.popitem(last=False)
        return arr

    # --- server status and forgetting ---------------------------------------------------------
    def health(self) -> dict[str, Any]:
        """The server's ``/cxr/health`` answer (raises httpx errors: the app shows them)."""
        r = self.http.get("/cxr/health", timeout=10.0)
        r.raise_for_status()
        return r.json()

    def forget(self, thread_id: str) -> None:
        """Delete the conversation on the server: its thread, and the studies and heatmaps no other
        conversation uses (``DELETE /cxr/threads/{id}``; the server's own thread DELETE keeps those)."""
        r = self.http.delete(f"/cxr/threads/{server_thread_id(thread_id)}", timeout=60.0)
        if r.status_code == 404:  # never run on the server: nothing to delete
            return
        if r.status_code != 200:
            raise GraphServerUnavailable(f"the graph server could not delete the conversation (HTTP {r.status_code}: "
                                         f"{_detail(r)[:200]})")


def _detail(r: httpx.Response) -> str:
    try:
        body = r.json()
        return str(body.get("detail") or body)
    except ValueError:
        return r.text[:300]


def open_server_warning(settings: Settings, url: str) -> str | None:
    """What to tell the user when this app reached a graph server on another machine without a token
    (the server answered, so it is open: anyone who reaches it can read every conversation)."""
    from urllib.parse import urlsplit

    from ui.gate import is_loopback

    host = urlsplit(url).hostname or ""
    if settings.server_auth_headers() or is_loopback(host):
        return None
    return (f"The graph server at {host} answers without a token: anyone who can reach it can read every "
            "conversation and study. Set the same CXR_AGENT_SERVER_TOKEN on the server and this app.")


def connect(settings: Settings) -> RemoteAgent:
    """The app's handle on the served graph; checks the server answers (a clear error if not)."""
    agent = RemoteAgent(settings)
    try:
        agent.server_info = agent.health()
    except httpx.HTTPStatusError as exc:
        if exc.response.status_code in (401, 403):
            given = "a wrong" if settings.server_token is not None else "no"
            raise GraphServerUnavailable(f"the graph server at {agent.url} refused this app ({given} token): "
                                         "set CXR_AGENT_SERVER_TOKEN to the server's") from None
        raise GraphServerUnavailable(f"the graph server at {agent.url} answered /cxr/health with HTTP "
                                     f"{exc.response.status_code}") from None
    except httpx.HTTPError as exc:
        raise GraphServerUnavailable(f"the graph server at {agent.url} did not answer /cxr/health "
                                     f"({type(exc).__name__})") from None
    return agent
