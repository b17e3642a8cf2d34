"""Our routes inside LangGraph Server (``langgraph dev`` / ``langgraph up``): uploads and artifacts.

LangGraph Server serves the graph (``langgraph.json`` -> ``graph.py:graph``) and mounts this
Starlette app in the same process (``http.app``), so a remote UI needs one address:

    POST /cxr/studies?filename=x.dcm   body: the file's bytes  -> 201 {"study_id", "width", ...}
    GET  /cxr/studies/{study_id}                                -> 200 {"study_id", "width", ...} | 404
    GET  /cxr/artifacts?uri=<Artifact.uri from a reply>         -> the file (a heatmap .npy) | 404
    GET  /cxr/health                                            -> 200 {"ok": true, ...}
    DELETE /cxr/threads/{thread_id}   the thread, then the studies/heatmaps no other thread uses -> 200 | 404

With ``CXR_AGENT_SERVER_TOKEN`` set, these routes and the server's own answer only callers bearing
it (server/auth.py, wired in langgraph.json). Deleting through ``/cxr/threads`` rather than the server's own ``DELETE /threads`` is what removes the
conversation's images too; with ``retention_days`` set, every worker also applies the retention
(server/threads.py: the same rules as agents/memory/retention.py, over the server's own thread store).

An upload is decoded, de-identified and stored once through ``tools.ingestion.intake.Studies``, the
graph's own ingestion path (the same limits, de-identification and store as ``graph.store_image``); runs then pass only ``{"study_id": ...}``, so no
image bytes travel through runs, the server's run queue or its checkpoints. Run inputs that carry
``image`` / ``image_name`` are refused by ``RefuseRawImageInput`` before the server stores them.

The studies and artifacts live under ``CXR_AGENT_DATA_DIR``: every server worker (and UI replica)
must see the same directory (shared storage). Handlers are async only to read the body; the
decoding and all disk work run in Starlette's thread pool (LangGraph's dev server flags blocking
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
RAW_INPUT_KEYS = ("image", "image_name")
"""Run input keys refused by the server: upload the file to /cxr/studies and pass its study_id."""
_RUN_PATH = re.compile(r"^/(threads/[^/]+/)?runs(/stream|/wait|/batch|/crons)?$")


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


async def upload_study(request: Request) -> Response:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_UPLOAD_BYTES:
        return _error(413, f"upload of {int(declared)} bytes exceeds the {MAX_UPLOAD_BYTES} byte limit")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_UPLOAD_BYTES:
            return _error(413, f"upload exceeds the {MAX_UPLOAD_BYTES} byte limit")
        chunks.append(chunk)
    if not size:
        return _error(400, "empty upload: send the image file's bytes as the request body")
    filename = request.query_params.get("filename")
    from tools.ingestion.study import StudyError

    try:
        info = await run_in_threadpool(ingest_bytes, b"".join(chunks), filename, _settings())
    except StudyError as exc:  # a refusal meant for the clinician: unsupported, too large, burned-in text...
        return _error(422, str(exc), kind=type(exc).__name__)
    return JSONResponse(info, status_code=201)


def _lookup(study_id: str, settings: Settings) -> dict[str, Any] | None:
    from tools.ingestion.store import StudyNotFound

    try:
        return _describe(_studies(settings).store.get(study_id))
    except StudyNotFound:
        return None


async def get_study(request: Request) -> Response:
    study_id = request.path_params["study_id"]
    info = await run_in_threadpool(_lookup, study_id, _settings())
    if info is None:
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
    path = await run_in_threadpool(artifact_path, uri, _settings())
    if path is None:
        return _error(404, "no such artifact on this server (expired, evicted, or outside the artifacts dir)")
    media = "application/x-npy" if path.suffix == ".npy" else None
    return FileResponse(path, media_type=media, filename=path.name)


@lru_cache(maxsize=1)
def _server_client() -> Any:
    """This server's own API, in process (``langgraph_sdk.get_client()`` with no URL), made once."""
    from langgraph_sdk import get_client

    return get_client(url=None, api_key=None, headers=_settings().server_auth_headers())


async def forget_thread(request: Request) -> Response:
    from server.threads import forget

    settings = _settings()
    thread_id = request.path_params["thread_id"]
    out = await forget(_server_client(), thread_id, settings, _studies(settings).store)
    if out is None:
        return _error(404, f"no thread {thread_id[:80]!r} on this server")
    return JSONResponse({"thread_id": thread_id, "studies_deleted": len(out.studies),
                         "heatmap_folders_deleted": out.artifact_dirs})


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    """Apply the retention periodically while the server runs (nothing when ``retention_days`` is 0)."""
    settings = _settings()
    if settings.server_token is None:
        log.warning("CXR_AGENT_SERVER_TOKEN is not set: this server answers anyone who can reach it "
                    "(conversations and studies included); keep it on loopback or set the token")
    task = None
    if settings.retention_days > 0:
        from server.threads import retention_loop

        task = asyncio.create_task(retention_loop(settings, _studies(settings).store, _server_client))
    try:
        yield
    finally:
        if task is not None:
            task.cancel()


async def health(request: Request) -> Response:
    s = _settings()
    return JSONResponse({"ok": True, "model_profile": s.model_profile, "pid": os.getpid()})


def _error(status: int, message: str, *, kind: str | None = None) -> JSONResponse:
    body: dict[str, Any] = {"detail": message}
    if kind:
        body["error"] = kind
    return JSONResponse(body, status_code=status)


class RefuseRawImageInput:
    """ASGI middleware: a run whose input carries ``image``/``image_name`` gets a 422 naming the fix.

    LangGraph Server applies an ``http.app``'s middleware to every route, its own run routes
    included, so such an input is refused before the server writes it to its run queue (which the
    in-memory runtime pickles to ``.langgraph_api/``) or to a checkpoint.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or not _RUN_PATH.match(scope["path"]):
            await self.app(scope, receive, send)
            return
        messages: list[Message] = []
        body = b""
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        bad = _raw_keys(body)
        if bad:
            response = _error(422, f"run input must not carry {', '.join(bad)}: upload the file to "
                                   "POST /cxr/studies and pass {\"study_id\": ...} instead", kind="RawImageInput")
            await response(scope, receive, send)
            return

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)


def _raw_keys(body: bytes) -> list[str]:
    try:
        payload = json.loads(body or b"{}")
    except ValueError:
        return []  # not ours to judge: the server answers malformed JSON itself
    runs = payload if isinstance(payload, list) else [payload]  # /runs/batch takes a list
    found: set[str] = set()
    for run in runs:
        inp = run.get("input") if isinstance(run, dict) else None
        if isinstance(inp, dict):
            found.update(k for k in RAW_INPUT_KEYS if inp.get(k) is not None)
    return sorted(found)


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

    if "langgraph_runtime_inmem" in sys.modules or os.environ.get("LANGGRAPH_RUNTIME_EDITION") == "inmem":
        private_state_dir()

    routes = [
        Route("/cxr/studies", upload_study, methods=["POST"]),
        Route("/cxr/studies/{study_id}", get_study, methods=["GET"]),
        Route("/cxr/artifacts", get_artifact, methods=["GET"]),
        Route("/cxr/health", health, methods=["GET"]),
        Route("/cxr/threads/{thread_id}", forget_thread, methods=["DELETE"]),
    ]
    return Starlette(routes=routes, middleware=[Middleware(RefuseRawImageInput)], lifespan=lifespan)


app = create_app()
