"""Two films of one patient uploaded together: the server orders them and keys the patient itself.

De-identification drops every date and patient id at ingest, so order, interval and patient keys can only be
read while both files are at hand. ``POST /cxr/studies/pair?thread_id=<id>`` (multipart: two files, any order)
reads both headers, ingests both files as ``POST /cxr/studies`` does, and writes the pair (prior, current,
interval in days, patient keys under the thread's own salt) into that thread's state, never into the answer:
a client learns the order and the interval, but never makes, sees or hands in a key or the salt. The thread
must be the caller's (a new one is made for them); someone else's answers like a missing one.
"""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

PAIR_PATH = "/cxr/studies/pair"
FILE_FIELDS = ("first", "second")
WRITER = "respond"
MAX_FILE_BYTES = 512 * 2**20  # as POST /cxr/studies
RETRY_AFTER_S = 5  # the pair is written as the end of a turn would write it: nothing runs after


def _error(status: int, message: str, *, kind: str | None = None) -> JSONResponse:
    body: dict[str, Any] = {"detail": message}
    if kind:
        body["error"] = kind
    return JSONResponse(body, status_code=status)


async def _files(request: Request, limit: int) -> list[tuple[bytes, str | None]] | JSONResponse:
    """The two files' bytes and extensions; an error response naming what is wrong."""
    form = await request.form(max_files=2, max_fields=4)
    try:
        found = [form.get(name) for name in FILE_FIELDS]
        if not all(isinstance(f, UploadFile) for f in found):
            return _error(400, "send two files as multipart form fields 'first' and 'second' (any order)")
        out = []
        for f in found:
            data = await f.read(limit + 1)  # type: ignore[union-attr]
            if len(data) > limit:
                return _error(413, f"a file exceeds the {limit} byte limit")
            if not data:
                return _error(400, "an empty file: send each image file's bytes")
            name = f.filename or ""  # type: ignore[union-attr]
            out.append((data, f"upload.{name.rpartition('.')[2]}" if "." in name else None))  # only the extension
        return out
    finally:
        await form.close()


async def _own_thread(client: Any, thread_id: str, owner: str, service: bool) -> bool:
    """The caller's thread, made for them when it does not exist yet; False when it is someone else's."""
    from server.auth import OWNER
    from server.ownership import owns_thread, thread_owner

    if service:
        await client.threads.create(thread_id=thread_id, if_exists="do_nothing")
        return True
    found = await thread_owner(client, thread_id)  # one read: whose it is, or None when there is none
    if found is not None:
        return found == owner
    await client.threads.create(thread_id=thread_id, if_exists="do_nothing")
    await client.threads.update(thread_id, metadata={OWNER: owner})  # the service stamps itself on create
    return await owns_thread(client, thread_id, owner)


def _pair(files: list[tuple[bytes, str | None]], salt: bytes, settings: Any, ingest: Any) -> dict[str, Any]:
    """Ingest both files and order them by their headers (blocking). Raises StudyError for a refused file."""
    from agents.comparing.pair import ordered_pair
    from agents.comparing.patient import patient_key
    from tools.ingestion.headers import header_facts

    read, infos = [], []
    for data, name in files:
        facts = header_facts(data)  # read before ingest drops them; never kept or logged
        info = ingest(data, name, settings)
        infos.append(info)
        read.append((info["study_id"], facts.taken, patient_key(facts.patient_id, facts.issuer, salt=salt)))
    pair = ordered_pair(read[0], read[1], thread_keys=True)
    return {"studies": infos, "pair": pair}


def _busy(status: int, message: str) -> JSONResponse:
    response = _error(status, message, kind="ServerBusy")
    response.headers["Retry-After"] = str(RETRY_AFTER_S)
    return response


async def upload_pair(request: Request, settings: Any, client: Any, ingest: Any, pressure: Any = None) -> Response:
    """``POST /cxr/studies/pair``: both studies stored and the pair held in the caller's thread. ``pressure``:
    the process's upload bounds (server/app.py ``UploadPressure``), shared with single uploads: the declared
    body is reserved before a byte is read (503 when over the bytes in flight, 429 when the decode queue is full)."""
    from server.ownership import caller

    owner, service = caller(request)
    if not owner:
        return _error(403, "uploads are made for a user: a gateway names the signed-in user in X-Cxr-User")
    thread_id = request.query_params.get("thread_id") or ""
    if not thread_id:
        return _error(400, "missing ?thread_id=<the conversation the pair belongs to>")
    limit = MAX_FILE_BYTES
    declared = request.headers.get("content-length") or ""
    if not declared.isdigit():
        return _error(411, "send the two files with a Content-Length (a multipart body of known size)")
    size = int(declared)
    if size > 2 * limit + 2**20:
        return _error(413, f"a pair of {size} bytes exceeds two files of {limit} bytes")
    if pressure is None:
        return await _stored_pair(request, settings, client, ingest, owner, service, thread_id, limit)
    if pressure.ingesting >= settings.decode_concurrency + settings.server_upload_queue:
        return _busy(429, "too many uploads are waiting to be decoded (CXR_AGENT_SERVER_UPLOAD_QUEUE); "
                          "send the two films again in a moment")
    if not pressure.take(size, settings.server_uploads_in_flight_mb * 2**20):
        return _busy(503, "the server is receiving or decoding other uploads (CXR_AGENT_SERVER_UPLOADS_IN_FLIGHT_MB); "
                          "send the two films again in a moment")
    pressure.ingesting += 1
    try:
        return await _stored_pair(request, settings, client, ingest, owner, service, thread_id, limit)
    finally:
        pressure.ingesting -= 1
        pressure.give(size)


async def _stored_pair(request: Request, settings: Any, client: Any, ingest: Any, owner: str, service: bool,
                       thread_id: str, limit: int) -> Response:
    from agents.comparing.patient import thread_salt
    from server.ownership import record_upload
    from tools.ingestion.study import StudyError

    files = await _files(request, limit)
    if isinstance(files, Response):
        return files
    if not await _own_thread(client, thread_id, owner, service):
        return _error(404, f"no thread {thread_id[:80]!r} of yours on this server")
    state = await client.threads.get_state(thread_id)
    salt, recorded = thread_salt((state or {}).get("values") or {})
    try:
        out = await run_in_threadpool(_pair, files, salt, settings, ingest)
    except StudyError as exc:  # a refusal meant for the clinician; the file name is never echoed
        return _error(422, str(exc), kind=type(exc).__name__)
    for info in out["studies"]:
        await run_in_threadpool(record_upload, settings, info["study_id"], owner, thread_id)  # held for the thread
    pair = out["pair"]
    if pair is not None:  # held in the thread (keys and salt included), never in the answer
        # a thread no run has used yet names no graph; the state update needs the served one
        await client.threads.update(thread_id, metadata={"graph_id": settings.graph_assistant_id})
        await client.threads.update_state(thread_id, {"pairs": {pair.study_id: pair.model_dump()}, **recorded},
                                          as_node=WRITER)
    answer = pair.model_dump(include={"prior_study_id", "study_id", "interval_days"}) if pair is not None else None
    return JSONResponse({"thread_id": thread_id, "studies": out["studies"], "pair": answer}, status_code=201)
