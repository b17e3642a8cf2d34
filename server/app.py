"""Our routes inside LangGraph Server (``langgraph dev`` / ``langgraph up``): uploads and artifacts.

LangGraph Server serves the graph (``langgraph.json`` -> ``graph.py:graph``) and mounts this
Starlette app in the same process (``http.app``), so a remote UI needs one address:

    POST /cxr/studies  body: the file's bytes, X-Cxr-File-Type: dcm -> 201 {"study_id", "width", ...}
                       (X-Cxr-Thread: the conversation it is for; optional, kept for it until it is used)
    POST /cxr/studies/pair?thread_id=  multipart 'first', 'second': both stored, the pair held in the thread
                                                                -> 201 {"studies", "pair": {..., "interval_days"}}
    GET  /cxr/studies/{study_id}                                -> 200 {"study_id", "width", ...} | 404
    GET  /cxr/artifacts?uri=<Artifact.uri from a reply>         -> the file (a heatmap .npy) | 404
    GET  /cxr/health                                            -> 200 {"ok": true, ...}
    DELETE /cxr/threads/{thread_id}   the thread, then the studies/heatmaps no other thread uses -> 200 | 404
    GET|PUT /cxr/threads/{thread_id}/review, POST .../review/sign   a study's clinician review (server/reviews.py)

These routes and the server's own answer only callers bearing ``CXR_AGENT_SERVER_TOKEN``
(server/auth.py, wired in langgraph.json, checked before any middleware reads a body); the server
does not start without one unless ``CXR_AGENT_SERVER_AUTH_DISABLED=true``. Deleting through ``/cxr/threads`` rather than the server's own ``DELETE /threads`` is what removes the
conversation's images too; with ``retention_days`` set, every worker also applies the retention
(server/threads.py: the same rules as agents/memory/retention.py, over the server's own thread store).

An upload is decoded, de-identified and stored once through ``tools.ingestion.intake.Studies``, the
graph's own ingestion path (the same limits, de-identification and store as ``graph.store_image``); runs then pass only ``{"study_id": ...}``, so no
image bytes travel through runs, the server's run queue or its checkpoints. Request bodies are
bounded, and ones that carry ``image`` / ``image_name`` or an image inside a message are refused by
``RefuseRawImageInput`` before the server stores them; the served graph itself reads no image
whatever writes its ``image`` channel. Uploads are bounded together (``UploadPressure``): bytes held
at once (503) and uploads decoding or waiting for a decode slot (429).

The studies and artifacts live under ``CXR_AGENT_DATA_DIR``: every server worker (and UI replica)
must see the same directory (shared storage). Handlers are async only to read the body; JSON
parsing, decoding and all disk work run in Starlette's thread pool (LangGraph's dev server flags blocking
calls made on its event loop).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cxr_agent.settings import Settings, get_settings

log = logging.getLogger(__name__)

MAX_UPLOAD_BYTES = 512 * 2**20
"""Largest accepted upload body; the decoder's own pixel cap (max_image_pixels) applies after."""
UPLOAD_PATH = "/cxr/studies"
PAIR_PATH = "/cxr/studies/pair"
RAW_INPUT_KEYS = ("image", "image_name")
"""Run input keys refused by the server: upload the file to /cxr/studies and pass its study_id."""


def _settings() -> Settings:
    return get_settings()


_STUDIES: dict[str, Any] = {}


def _studies(settings: Settings):
    """One ``Studies`` (store + decoded-study cache) per data dir for this process: the ingestion path the
    graph, ``graph.store_image`` and the UI use. Not the served graph's own object: LangGraph Server may
    load graph.py under another module name, and each worker has its own cache anyway; the store on
    disk is what every worker shares."""
    from tools.ingestion.intake import Studies

    key = str(Path(settings.data_dir).resolve())
    studies = _STUDIES.get(key)
    if studies is None:
        studies = _STUDIES.setdefault(key, Studies(settings))
    return studies


def _describe(study: Any) -> dict[str, Any]:
    return {"study_id": study.id, "width": study.width, "height": study.height, "view": study.view,
            "source_format": study.source_format}


def ingest_bytes(data: bytes, filename: str | None, settings: Settings) -> dict[str, Any]:
    """Decode + de-identify + store (blocking; run it off the event loop). Raises StudyError."""
    study_id, study = _studies(settings).ingest(data, filename=filename)
    return {**_describe(study), "study_id": study_id}  # the id the store keeps it under


class UploadPressure:
    """What one server process holds for uploads: bytes received or decoding, and uploads decoding or
    waiting for a decode slot. Touched only on the event loop, so plain counters suffice."""

    def __init__(self) -> None:
        self.bytes = 0
        self.peak_bytes = 0
        self.ingesting = 0

    def take(self, n: int, limit: int) -> bool:
        if self.bytes + n > limit:
            return False
        self.bytes += n
        self.peak_bytes = max(self.peak_bytes, self.bytes)
        return True

    def give(self, n: int) -> None:
        self.bytes -= n


PRESSURE = UploadPressure()
RETRY_AFTER_S = 5


def _busy(status: int, message: str) -> JSONResponse:
    response = _error(status, message, kind="ServerBusy")
    response.headers["Retry-After"] = str(RETRY_AFTER_S)
    return response


def upload_name(request: Request) -> str | None:
    """The file name ingestion sees, only to note an extension that disagrees with the content:
    ``upload.<ext>`` from the ``X-Cxr-File-Type`` header (no name travels in the URL, which access logs
    record); a ``?filename=`` from an older client is still read, reduced the same way."""
    ext = request.headers.get(FILE_TYPE_HEADER) or Path(request.query_params.get("filename") or "").suffix
    ext = ext.strip().lstrip(".").lower()
    return f"upload.{ext}" if _EXTENSION.fullmatch(ext) else None


FILE_TYPE_HEADER = "x-cxr-file-type"
_EXTENSION = re.compile(r"[a-z0-9]{1,8}")


async def upload_study(request: Request) -> Response:
    from server.ownership import caller, thread_owner, upload_thread

    settings = _settings()
    owner, service = caller(request)
    if not owner:
        return _error(403, "uploads are made for a user: a gateway names the signed-in user in X-Cxr-User")
    try:
        thread_id = upload_thread(request)
    except ValueError as exc:
        return _error(400, str(exc))
    if thread_id and not service and (await thread_owner(_server_client(), thread_id)) not in (None, owner):
        return _error(403, "X-Cxr-Thread names a conversation of another user")  # a new one may not exist yet
    in_flight = settings.server_uploads_in_flight_mb * 2**20
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_UPLOAD_BYTES:
        return _error(413, f"upload of {int(declared)} bytes exceeds the {MAX_UPLOAD_BYTES} byte limit")
    queue = settings.decode_concurrency + settings.server_upload_queue
    if PRESSURE.ingesting >= queue:  # refused before a byte is read
        return _busy(429, "too many uploads are waiting to be decoded (CXR_AGENT_SERVER_UPLOAD_QUEUE); "
                          "send the image again in a moment")
    held = 0
    try:
        if declared is not None and declared.isdigit():  # reserve it all up front: refuse before reading
            if not PRESSURE.take(int(declared), in_flight):
                return _busy(503, "the server is receiving or decoding other uploads "
                                  "(CXR_AGENT_SERVER_UPLOADS_IN_FLIGHT_MB); send the image again in a moment")
            held = int(declared)
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_UPLOAD_BYTES:
                return _error(413, f"upload exceeds the {MAX_UPLOAD_BYTES} byte limit")
            if size > held:
                if not PRESSURE.take(size - held, in_flight):
                    return _busy(503, "the server is receiving or decoding other uploads "
                                      "(CXR_AGENT_SERVER_UPLOADS_IN_FLIGHT_MB); send the image again in a moment")
                held = size
            chunks.append(chunk)
        if not size:
            return _error(400, "empty upload: send the image file's bytes as the request body")
        if PRESSURE.ingesting >= queue:
            return _busy(429, "too many uploads are waiting to be decoded (CXR_AGENT_SERVER_UPLOAD_QUEUE); "
                              "send the image again in a moment")
        from tools.ingestion.study import StudyError

        data = b"".join(chunks)
        del chunks
        PRESSURE.ingesting += 1
        try:
            info = await run_in_threadpool(ingest_bytes, data, upload_name(request), settings)
        except StudyError as exc:  # a refusal meant for the clinician: unsupported, too large, burned-in text...
            return _error(422, str(exc), kind=type(exc).__name__)
        finally:
            PRESSURE.ingesting -= 1
        from server.ownership import record_upload

        await run_in_threadpool(record_upload, settings, info["study_id"], owner, thread_id)
        return JSONResponse(info, status_code=201)
    finally:
        PRESSURE.give(held)


async def upload_pair(request: Request) -> Response:
    from server.pairs import upload_pair as pair

    return await pair(request, _settings(), _server_client(), ingest_bytes, PRESSURE)  # bounded with uploads


def _lookup(study_id: str, settings: Settings) -> dict[str, Any] | None:
    from tools.ingestion.store import StudyNotFound

    try:
        return _describe(_studies(settings).store.get(study_id))
    except StudyNotFound:
        return None


async def get_study(request: Request) -> Response:
    from server.ownership import may_see_study

    study_id = request.path_params["study_id"]
    visible = await may_see_study(_settings(), _server_client(), request, study_id)
    info = await run_in_threadpool(_lookup, study_id, _settings()) if visible else None
    if info is None:  # someone else's study answers like a missing one
        return _error(404, f"no stored study {study_id[:80]!r}: upload it to POST /cxr/studies")
    return JSONResponse(info)


def artifact_path(uri: str, settings: Settings) -> Path | None:
    """The file ``uri`` names if it lies inside the artifacts dir and exists, else None (blocking)."""
    root = Path(settings.artifacts_dir).resolve()
    candidate = Path(uri)
    path = (candidate if candidate.is_absolute() else root / candidate).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        return None
    return path


async def get_artifact(request: Request) -> Response:
    uri = request.query_params.get("uri")
    if not uri:
        return _error(400, "missing ?uri=<Artifact.uri from the reply's additional_kwargs['cxr']>")
    from server.ownership import artifact_study, may_see_study

    path = await run_in_threadpool(artifact_path, uri, _settings())
    study = artifact_study(path, _settings()) if path is not None else None
    if path is not None and (study is None or not await may_see_study(_settings(), _server_client(), request, study)):
        path = None  # someone else's heatmap answers like a missing one
    if path is None:
        return _error(404, "no such artifact on this server (expired, evicted, or outside the artifacts dir)")
    media = "application/x-npy" if path.suffix == ".npy" else None
    return FileResponse(path, media_type=media, filename=path.name)


_OWN_CLIENT: list[Any] = []


def use_server_client(client: Any) -> None:
    """Make our routes reach the server's API through ``client``: a server other than LangGraph's
    (server/standalone) hands in its own in-process client, which LangGraph's loopback cannot reach."""
    _OWN_CLIENT[:] = [client]
    _server_client.cache_clear()


@lru_cache(maxsize=1)
def _server_client() -> Any:
    """This server's own API, in process (``langgraph_sdk.get_client()`` with no URL), made once."""
    if _OWN_CLIENT:
        return _OWN_CLIENT[0]
    from langgraph_sdk import get_client

    return get_client(url=None, api_key=None, headers=_settings().server_auth_headers())


async def forget_thread(request: Request) -> Response:
    from server.ownership import caller, forget_uploads, owns_thread
    from server.threads import forget

    settings = _settings()
    thread_id = request.path_params["thread_id"]
    owner, service = caller(request)
    if not service and not await owns_thread(_server_client(), thread_id, owner):
        out = None  # someone else's thread answers like a missing one
    else:
        out = await forget(_server_client(), thread_id, settings, _studies(settings).store)
    if out is None:
        return _error(404, f"no thread {thread_id[:80]!r} on this server")
    from agents.review.store import forget_reviews

    await run_in_threadpool(forget_reviews, settings, thread_id)  # its clinician reviews go with it
    await run_in_threadpool(forget_uploads, settings, out.studies)
    return JSONResponse({"thread_id": thread_id, "studies_deleted": len(out.studies),
                         "heatmap_folders_deleted": out.artifact_dirs})


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    """Apply the retention periodically while the server runs (nothing when ``retention_days`` is 0)."""
    settings = _settings()
    check_auth_configured(settings)
    if settings.server_users is not None and not settings.server_auth_headers():
        log.error("CXR_AGENT_SERVER_USERS is set but CXR_AGENT_SERVER_TOKEN is not: the server's own retention "
                  "and DELETE /cxr/threads act as the service identity and will be refused; set a service token")
    task = None
    if settings.retention_days > 0:
        from server.threads import retention_loop

        task = asyncio.create_task(retention_loop(settings, _studies(settings).store, _server_client))
        from server.reviews import sweep_loop

        reviews_task = asyncio.create_task(sweep_loop(settings, _server_client))  # reviews follow their threads
    try:
        yield
    finally:
        if task is not None:
            task.cancel()
            reviews_task.cancel()


class ServerAuthMissing(RuntimeError):
    """The server was started without a token and without saying it runs open on purpose."""


def check_auth_configured(settings: Settings) -> None:
    """Refuse to start with an unset or empty ``CXR_AGENT_SERVER_TOKEN`` unless
    ``CXR_AGENT_SERVER_AUTH_DISABLED=true`` says so (then warn: anyone who reaches it is let in)."""
    token = settings.server_token.get_secret_value().strip() if settings.server_token is not None else ""
    if token or getattr(settings, "server_users", None) is not None:
        return
    if not settings.server_auth_disabled:
        raise ServerAuthMissing(
            "CXR_AGENT_SERVER_TOKEN is unset or empty: set it to a long random secret (the UI sends the same), "
            "or set CXR_AGENT_SERVER_AUTH_DISABLED=true to run this server open to anyone who can reach it")
    log.warning("CXR_AGENT_SERVER_AUTH_DISABLED=true: this server answers anyone who can reach it "
                "(conversations and studies included); keep it on loopback")


async def health(request: Request) -> Response:
    from server.ownership import caller

    s = _settings()
    who, sees_all = caller(request)  # the UI says so when it was not taken for a user of its own
    return JSONResponse({"ok": True, "model_profile": s.model_profile, "pid": os.getpid(),
                         "caller": {"id": who, "sees_all": sees_all}})


def _error(status: int, message: str, *, kind: str | None = None) -> JSONResponse:
    body: dict[str, Any] = {"detail": message}
    if kind:
        body["error"] = kind
    return JSONResponse(body, status_code=status)


class RefuseRawImageInput:
    """ASGI middleware bounding and checking every JSON body sent to the server (uploads excepted).

    A body over ``server_max_run_body_kb`` gets a 413 from its Content-Length, or as soon as the
    stream passes the limit (the rest is never read). A body carrying ``image``/``image_name``
    anywhere (a run's input, a command's update, a state update, a thread's supersteps) or a message
    with a part that is not text (a base64 image) gets a 422 naming the fix. The JSON is parsed off
    the event loop. LangGraph Server applies an ``http.app``'s middleware to its own routes too, after
    its auth (``http.middleware_order: "auth_first"``), so a stranger's body is never read, and a
    refused input never reaches the run queue (pickled to ``.langgraph_api/`` by the in-memory
    runtime) or a checkpoint.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] != "http" or scope["method"] not in _BODY_METHODS
                or scope["path"].rstrip("/") in (UPLOAD_PATH, PAIR_PATH)):
            await self.app(scope, receive, send)
            return
        limit = _settings().server_max_run_body_kb * 1024
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _error(413, f"request body of {declared} bytes exceeds the {limit} byte limit "
                              "(CXR_AGENT_SERVER_MAX_RUN_BODY_KB)", kind="BodyTooLarge")(scope, receive, send)
            return
        messages: list[Message] = []
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await _error(413, f"request body exceeds the {limit} byte limit (CXR_AGENT_SERVER_MAX_RUN_BODY_KB)",
                             kind="BodyTooLarge")(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        problem = await run_in_threadpool(body_problem, b"".join(chunks)) if size else None
        if problem:
            await _error(422, problem, kind="RawImageInput")(scope, receive, send)
            return

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)


_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_NOT_TEXT = "messages carry text only"


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers") or ():
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


def body_problem(body: bytes) -> str | None:
    """Why a JSON request body may not enter a run or a thread, or None (blocking: run it off the loop)."""
    bad, images = _raw_keys_and_images(body)
    if bad:
        return (f"run input must not carry {', '.join(bad)}: upload the file to "
                "POST /cxr/studies and pass {\"study_id\": ...} instead")
    if images:
        return (f"{_NOT_TEXT}: a message part of type {images[0]!r} was refused; upload the image to "
                "POST /cxr/studies and pass {\"study_id\": ...} instead")
    return None


def _raw_keys(body: bytes) -> list[str]:
    return _raw_keys_and_images(body)[0]


def _raw_keys_and_images(body: bytes) -> tuple[list[str], list[str]]:
    """``image``/``image_name`` keys with a value anywhere in the JSON, and the types of message
    parts that are not text (walked iteratively: a deeply nested body cannot exhaust the stack)."""
    try:
        payload = json.loads(body or b"{}")
    except (ValueError, RecursionError):
        return [], []  # not ours to judge: the server answers malformed JSON itself
    found: set[str] = set()
    parts: list[str] = []
    stack: list[tuple[Any, bool]] = [(payload, False)]
    while stack:
        node, in_messages = stack.pop()
        if isinstance(node, dict):
            found.update(k for k in RAW_INPUT_KEYS if node.get(k) is not None)
            if in_messages:
                parts += _non_text_parts(node.get("content"))
            stack += [(v, k == "messages") for k, v in node.items()]
        elif isinstance(node, list):
            if in_messages:  # a message as ["user", content] or ("user", content)
                for m in node:
                    if isinstance(m, list) and len(m) == 2:
                        parts += _non_text_parts(m[1])
            stack += [(v, in_messages) for v in node]
    return sorted(found), parts


def _non_text_parts(content: Any) -> list[str]:
    """The refused parts of one message's content: non-text parts, and text holding a base64 image."""
    items = content if isinstance(content, list) else [content]
    out = []
    for part in items:
        if isinstance(part, dict) and part.get("type", "text") != "text":
            out.append(str(part.get("type"))[:40])
            continue
        text = part.get("text") if isinstance(part, dict) else part
        if isinstance(text, str) and _DATA_IMAGE.search(text):
            out.append("data:image")
    return out


_DATA_IMAGE = re.compile(r"data:image/[\w.+-]+;base64,", re.IGNORECASE)


def private_state_dir(path: Path = Path(".langgraph_api")) -> Path:
    """Make the in-memory runtime's state dir owner-only (0700).

    ``langgraph dev`` pickles threads, checkpoints (replies, findings: PHI) and the run queue into
    ``.langgraph_api/`` under its working directory, with the default umask; closing the directory
    keeps other local users out of all of it, whatever the files' own modes."""
    path.mkdir(exist_ok=True)
    os.chmod(path, 0o700)
    return path


def create_app() -> Starlette:
    from starlette.middleware import Middleware

    from server.reviews import ReviewRoutes

    if "langgraph_runtime_inmem" in sys.modules or os.environ.get("LANGGRAPH_RUNTIME_EDITION") == "inmem":
        private_state_dir()

    routes = [
        Route(UPLOAD_PATH, upload_study, methods=["POST"]),
        Route(PAIR_PATH, upload_pair, methods=["POST"]),  # two films together: order and keys (server/pairs.py)
        Route("/cxr/studies/{study_id}", get_study, methods=["GET"]),
        Route("/cxr/artifacts", get_artifact, methods=["GET"]),
        Route("/cxr/health", health, methods=["GET"]),
        Route("/cxr/threads/{thread_id}", forget_thread, methods=["DELETE"]),
        *ReviewRoutes(_settings, _server_client).routes(),  # a thread's clinician review (server/reviews.py)
    ]
    return Starlette(routes=routes, middleware=[Middleware(RefuseRawImageInput)], lifespan=lifespan)


app = create_app()
