"""The production server's HTTP API: LangGraph's thread, run and assistant endpoints that our clients call.

``langgraph_sdk`` (threads create/get/search/delete/get_state/update_state/get_history, runs
stream/wait/create/get/list/join/cancel, assistants search/get), ``RemoteGraph`` and the remote UI
speak to it as to LangGraph Server; ``server/app.py``'s ``/cxr`` routes are mounted beside them,
behind the same authentication (``access.py``) and the same body checks (``RefuseRawImageInput``).
Threads and runs are Postgres rows (``threads.py``), checkpoints LangGraph's Postgres saver; turns
are queued in Postgres (``run_rows.py``) and run by whichever server process claims them (``runs.py``),
so several processes may serve one database.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid4, uuid5

import orjson
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from cxr_agent.settings import Settings, get_settings
from server.identities import SERVICE
from server.standalone.access import Authenticate, Denied, authorize
from server.standalone.heap import HeapWatch
from server.standalone.run_rows import ENDED, RunRows
from server.standalone.runs import STREAM_MODES, Outcome, Run, RunQueue
from server.standalone.threads import SCHEMA, BadQuery, ThreadTable, parse_id, run_dict
from server.standalone.wire import dumps, empty_state, plain, state_dict

log = logging.getLogger(__name__)

_RUN_KEYS = ("input", "command", "config", "context", "metadata", "stream_mode", "stream_subgraphs",
             "interrupt_before", "interrupt_after", "multitask_strategy", "if_not_exists", "durability",
             "assistant_id", "on_disconnect", "stream_resumable", "checkpoint", "checkpoint_id",
             "checkpoint_during", "feedback_keys", "webhook", "on_completion", "after_seconds", "strict_resume",
             "langsmith_tracer")


@dataclass
class Served:
    """What the running server holds: the graph, the tables, the run queue."""

    graph: Any
    saver: Any
    table: ThreadTable
    rows: RunRows
    queue: RunQueue
    name: str

    @property
    def assistant_id(self) -> str:
        return str(uuid5(NAMESPACE_URL, self.name))  # as LangGraph Server names a graph's default assistant


STATE: dict[str, Served] = {}
HEAP = HeapWatch()


def served() -> Served:
    return STATE["served"]


def _json(body: Any, status: int = 200) -> Response:
    return Response(dumps(body), status_code=status, media_type="application/json")


def _error(status: int, detail: str) -> Response:
    return JSONResponse({"detail": detail}, status_code=status)


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw:
        return {}
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise Denied(422, "the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise Denied(422, "the request body must be a JSON object")
    return body


def _thread_id(request: Request) -> UUID:
    tid = parse_id(request.path_params["thread_id"])
    if tid is None:
        raise Denied(422, f"thread_id {request.path_params['thread_id'][:80]!r} is not a UUID")
    return tid


async def _visible_thread(request: Request, action: str, value: dict[str, Any] | None = None) -> dict[str, Any]:
    """The thread named in the path if the caller may ``action`` it; 404 for missing and foreign alike."""
    tid = _thread_id(request)
    filters = await authorize(request.scope, "threads", action, value or {"thread_id": str(tid)})
    thread = await run_in_threadpool(served().table.get, tid, filters)
    if thread is None:
        raise Denied(404, f"no thread {str(tid)!r}")
    return thread


def _config(thread_id: str, checkpoint: dict[str, Any] | None = None) -> dict[str, Any]:
    conf: dict[str, Any] = {"thread_id": thread_id, "checkpoint_ns": ""}
    if checkpoint:
        conf.update({k: v for k, v in checkpoint.items() if k in ("checkpoint_id", "checkpoint_ns") and v})
    return {"configurable": conf}


# --- assistants ---------------------------------------------------------------------------------------
def _assistant() -> dict[str, Any]:
    s = served()
    now = datetime.fromtimestamp(0, timezone.utc).isoformat()
    return {"assistant_id": s.assistant_id, "graph_id": s.name, "name": s.name, "description": None,
            "config": {}, "context": {}, "metadata": {"created_by": "system"}, "version": 1,
            "created_at": now, "updated_at": now}


async def search_assistants(request: Request) -> Response:
    await authorize(request.scope, "assistants", "search", await _body(request))
    return _json([_assistant()])


async def get_assistant(request: Request) -> Response:
    await authorize(request.scope, "assistants", "read", {"assistant_id": request.path_params["assistant_id"]})
    if request.path_params["assistant_id"] not in (served().name, served().assistant_id):
        return _error(404, f"no assistant {request.path_params['assistant_id'][:80]!r}")
    return _json(_assistant())


# --- threads -------------------------------------------------------------------------------------------
async def create_thread(request: Request) -> Response:
    body = await _body(request)
    tid = parse_id(body.get("thread_id") or uuid4())
    if tid is None:
        return _error(422, "thread_id must be a UUID")
    metadata = body.get("metadata") or {}
    if not isinstance(metadata, dict):
        return _error(422, "metadata must be an object")
    value = {"thread_id": str(tid), "metadata": metadata}
    await authorize(request.scope, "threads", "create", value)
    if_exists = body.get("if_exists") or "raise"
    if if_exists not in ("raise", "do_nothing"):
        return _error(422, "if_exists must be 'raise' or 'do_nothing'")
    thread = await run_in_threadpool(served().table.create, tid, value["metadata"], if_exists=if_exists)
    if thread is None:
        return _error(409, f"thread {str(tid)!r} already exists")
    return _json(thread)


async def get_thread(request: Request) -> Response:
    return _json(await _visible_thread(request, "read"))


async def patch_thread(request: Request) -> Response:
    body = await _body(request)
    metadata = body.get("metadata") or {}
    if not isinstance(metadata, dict):
        return _error(422, "metadata must be an object")
    value = {"thread_id": request.path_params["thread_id"], "metadata": metadata}
    thread = await _visible_thread(request, "update", value)  # stamps the caller as owner: no handing over
    await run_in_threadpool(served().table.patch_metadata, UUID(thread["thread_id"]), value["metadata"])
    return _json(await run_in_threadpool(served().table.get, UUID(thread["thread_id"]), None))


async def delete_thread(request: Request) -> Response:
    tid = _thread_id(request)
    filters = await authorize(request.scope, "threads", "delete", {"thread_id": str(tid)})
    s = served()
    if await run_in_threadpool(s.table.get, tid, filters) is None:
        return _error(404, f"no thread {str(tid)!r}")
    await s.queue.stop_thread(tid)  # its runs, wherever they run, before its rows and checkpoints go
    if not await run_in_threadpool(s.table.delete, tid, filters):
        return _error(404, f"no thread {str(tid)!r}")
    await run_in_threadpool(s.saver.delete_thread, str(tid))
    return Response(status_code=204)


async def search_threads(request: Request) -> Response:
    body = await _body(request)
    value = {"metadata": body.get("metadata") or {}, "status": body.get("status")}
    filters = await authorize(request.scope, "threads", "search", value)
    try:
        return _json(await run_in_threadpool(served().table.search, filters, body))
    except BadQuery as exc:
        return _error(422, str(exc))


def _read_state(thread_id: str, checkpoint: dict[str, Any] | None = None) -> dict[str, Any]:
    snapshot = served().graph.get_state(_config(thread_id, checkpoint))
    if not snapshot.config.get("configurable", {}).get("checkpoint_id"):
        return empty_state(thread_id)
    return state_dict(snapshot, thread_id)


async def get_state(request: Request) -> Response:
    thread = await _visible_thread(request, "read")
    return _json(await run_in_threadpool(_read_state, thread["thread_id"]))


async def get_state_at(request: Request) -> Response:
    thread = await _visible_thread(request, "read")
    body = await _body(request) if request.method == "POST" else {}
    checkpoint = body.get("checkpoint") or {"checkpoint_id": request.path_params.get("checkpoint_id")}
    return _json(await run_in_threadpool(_read_state, thread["thread_id"], checkpoint))


async def update_state(request: Request) -> Response:
    body = await _body(request)
    thread = await _visible_thread(request, "update", {"thread_id": request.path_params["thread_id"], "metadata": {}})
    tid = thread["thread_id"]
    s = served()
    if await run_in_threadpool(s.queue.busy, UUID(tid)):
        return _error(409, "this thread has a run pending or running; update its state when it ends")

    def update() -> dict[str, Any]:
        config = s.graph.update_state(_config(tid, body.get("checkpoint")), body.get("values"),
                                      as_node=body.get("as_node"))
        values = plain(s.graph.get_state(_config(tid)).values)
        s.table.set_status(UUID(tid), "idle", values)
        return {"checkpoint": {**config["configurable"], "thread_id": tid}}

    return _json(await run_in_threadpool(update))


async def thread_history(request: Request) -> Response:
    thread = await _visible_thread(request, "read")
    body = await _body(request) if request.method == "POST" else dict(request.query_params)
    limit = int(body.get("limit") or 10)
    if not 1 <= limit <= 1000:
        return _error(422, "limit must be 1-1000")
    tid = thread["thread_id"]

    def history() -> list[dict[str, Any]]:
        before = body.get("before")
        return [state_dict(snap, tid) for snap in served().graph.get_state_history(
            _config(tid, body.get("checkpoint")), limit=limit, filter=body.get("metadata") or None,
            before=_config(tid, before) if before else None)]

    return _json(await run_in_threadpool(history))


# --- runs ----------------------------------------------------------------------------------------------
def _stream_modes(value: Any) -> list[str]:
    modes = [value] if isinstance(value, str) else list(value or ["values"])
    modes = ["messages" if m == "messages-tuple" else m for m in modes]
    unknown = [m for m in modes if m not in STREAM_MODES]
    if unknown:
        raise Denied(422, f"stream_mode {unknown[0]!r} is not served; use {', '.join(STREAM_MODES)}")
    return list(dict.fromkeys(modes))


@dataclass(frozen=True)
class Started:
    """A run just queued: its ids, its row as answered, and what its creator asked on disconnect."""

    run_id: UUID
    thread_id: UUID
    row: dict[str, Any]
    cancel_on_disconnect: bool


async def _start_run(request: Request) -> Started:
    """Check, record and queue a run on the thread in the path (created when asked to)."""
    body = await _body(request)
    unknown = [k for k in body if k not in _RUN_KEYS]
    if unknown:
        raise Denied(422, f"unknown run field {unknown[0]!r}")
    s = served()
    if body.get("assistant_id") not in (s.name, s.assistant_id):
        raise Denied(404, f"no assistant {str(body.get('assistant_id'))[:80]!r}: this server serves {s.name!r}")
    tid = _thread_id(request)
    strategy = body.get("multitask_strategy") or "enqueue"
    if strategy not in ("enqueue", "reject"):
        raise Denied(422, f"multitask_strategy must be 'enqueue' or 'reject' (got {strategy!r})")
    on_disconnect = body.get("on_disconnect") or "continue"  # LangGraph Server's default
    if on_disconnect not in ("cancel", "continue"):
        raise Denied(422, f"on_disconnect must be 'cancel' or 'continue' (got {str(on_disconnect)[:40]!r})")
    modes = _stream_modes(body.get("stream_mode"))
    config = body.get("config") or {}
    if not isinstance(config, dict):
        raise Denied(422, "config must be an object")
    metadata = body.get("metadata") or {}
    run_value = {"thread_id": str(tid), "assistant_id": body["assistant_id"], "metadata": metadata,
                 "kwargs": {"input": body.get("input"), "command": body.get("command"), "config": config}}
    filters = await authorize(request.scope, "threads", "create_run", run_value)
    if not await run_in_threadpool(s.table.exists, tid):
        if body.get("if_not_exists") != "create":
            raise Denied(404, f"no thread {str(tid)!r} (pass if_not_exists='create' to make it)")
        value = {"thread_id": str(tid), "metadata": {}}
        await authorize(request.scope, "threads", "create", value)
        await run_in_threadpool(s.table.create, tid, value["metadata"], if_exists="do_nothing")
    if await run_in_threadpool(s.table.get, tid, filters) is None:
        raise Denied(404, f"no thread {str(tid)!r}")
    options = {k: body[k] for k in ("interrupt_before", "interrupt_after", "durability") if body.get(k)}
    kwargs = {"input": body.get("input"), "command": body.get("command"), "config": config, "stream_mode": modes,
              "options": options}
    run_id = uuid4()
    row = await run_in_threadpool(s.rows.add, run_id, tid, s.name, run_value["metadata"], strategy, dumps(kwargs),
                                  s.queue.worker)
    if row is None:
        raise Denied(409, "this thread already has a run pending or running (multitask_strategy='reject')")
    s.queue.nudge()
    return Started(run_id, tid, run_dict(row), on_disconnect == "cancel")


def _sse(event: str, data: Any) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + dumps(data) + b"\n\n"


def _cancel_if_gone(run_id: UUID, finished: bool, cancel: bool) -> None:
    """A client that asked for it went away before its run ended: cancel the run (in the background:
    the response is being torn down)."""
    if cancel and not finished:
        log.info("a client disconnected: its run is cancelled")
        task = asyncio.get_running_loop().create_task(served().queue.cancel([run_id]))
        _BACKGROUND.add(task)
        task.add_done_callback(_BACKGROUND.discard)


_BACKGROUND: set[asyncio.Task[Any]] = set()


def _event_stream(run_id: UUID, cancel_on_disconnect: bool, modes: list[str] | None = None,
                  first: bytes = b"") -> AsyncIterator[bytes]:
    async def events() -> AsyncIterator[bytes]:
        finished = False
        try:
            if first:
                yield first
            async for event, data in served().queue.follow(run_id):
                if modes is None or event in modes or event == "error":
                    yield _sse(event, data)
            finished = True
        finally:
            _cancel_if_gone(run_id, finished, cancel_on_disconnect)

    return events()


async def stream_run(request: Request) -> Response:
    started = await _start_run(request)
    first = _sse("metadata", {"run_id": str(started.run_id), "attempt": 1})
    where = f"/threads/{started.thread_id}/runs/{started.run_id}"
    return StreamingResponse(_event_stream(started.run_id, started.cancel_on_disconnect, first=first),
                             media_type="text/event-stream",
                             headers={"Content-Location": where, "Cache-Control": "no-store"})


async def _result(outcome: Outcome, thread_id: UUID) -> Any:
    """What ``runs.wait``/``runs.join`` answer: the thread's values after the run, or its error."""
    if outcome.status == "error":
        return {"__error__": outcome.error or {"error": "RunError", "message": "the run failed"}}
    if outcome.values is not None:
        return outcome.values
    fresh = await run_in_threadpool(served().table.get, thread_id, None)
    return (fresh or {}).get("values") or {}


def _result_body(run_id: UUID, thread_id: UUID, cancel_on_disconnect: bool) -> AsyncIterator[bytes]:
    async def body() -> AsyncIterator[bytes]:
        finished = False
        try:
            outcome = await served().queue.outcome(run_id)
            finished = True
            yield dumps(await _result(outcome, thread_id))
        finally:
            _cancel_if_gone(run_id, finished, cancel_on_disconnect)

    return body()


async def wait_run(request: Request) -> Response:
    started = await _start_run(request)
    where = f"/threads/{started.thread_id}/runs/{started.run_id}"
    return StreamingResponse(_result_body(started.run_id, started.thread_id, started.cancel_on_disconnect),
                             media_type="application/json", headers={"Content-Location": where})


async def create_run(request: Request) -> Response:
    return _json((await _start_run(request)).row)


def _run_id(request: Request) -> UUID:
    rid = parse_id(request.path_params["run_id"])
    if rid is None:
        raise Denied(422, f"run_id {request.path_params['run_id'][:80]!r} is not a UUID")
    return rid


async def _visible_run(request: Request, action: str = "read") -> dict[str, Any]:
    value = {"thread_id": request.path_params["thread_id"], "metadata": {}} if action == "update" else None
    thread = await _visible_thread(request, action, value)
    row = await run_in_threadpool(served().table.get_run, UUID(thread["thread_id"]), _run_id(request))
    if row is None:
        raise Denied(404, "no such run on this thread")
    return row


def _cancel_on_disconnect(request: Request) -> bool:
    return request.query_params.get("cancel_on_disconnect", "false").lower() in ("true", "yes", "1")


async def get_run(request: Request) -> Response:
    return _json(await _visible_run(request))


async def list_runs(request: Request) -> Response:
    thread = await _visible_thread(request, "read")
    limit, offset = int(request.query_params.get("limit", 10)), int(request.query_params.get("offset", 0))
    return _json(await run_in_threadpool(served().table.list_runs, UUID(thread["thread_id"]), limit, offset))


async def join_run(request: Request) -> Response:
    row = await _visible_run(request)
    return StreamingResponse(_result_body(UUID(row["run_id"]), UUID(row["thread_id"]), _cancel_on_disconnect(request)),
                             media_type="application/json")


async def join_stream(request: Request) -> Response:
    """``runs.join_stream``: the run's events from its first, wherever it runs, until it ends."""
    row = await _visible_run(request)
    asked = [m for m in request.query_params.getlist("stream_mode") if m]  # the SDK sends "" for none
    modes = _stream_modes(asked) if asked else None
    return StreamingResponse(_event_stream(UUID(row["run_id"]), _cancel_on_disconnect(request), modes),
                             media_type="text/event-stream", headers={"Cache-Control": "no-store"})


async def cancel_run(request: Request) -> Response:
    row = await _visible_run(request, "update")
    rid = UUID(row["run_id"])
    s = served()
    if row["status"] in ENDED or rid not in await s.queue.cancel([rid]):
        fresh = await run_in_threadpool(s.table.get_run, UUID(row["thread_id"]), rid)
        return _error(409, f"the run has already ended ({(fresh or row)['status']})")
    if request.query_params.get("wait") in ("1", "true", "True"):
        await s.queue.outcome(rid)
    return Response(status_code=202)


async def ok(request: Request) -> Response:
    return JSONResponse({"ok": True})


async def metrics(request: Request) -> Response:
    """What the run pool is doing (as LangGraph Server's ``/metrics?format=json`` names it), and, when
    traced and asked (``heap=1``; server/standalone/heap.py), where Python memory grew since the previous ask."""
    q = served().queue
    body: dict[str, Any] = {"workers": {"active": q.running, "available": q.jobs - q.running,
                                        "most_at_once": q.most_at_once},
                            "process": {"pid": os.getpid(), "queue_worker": q.worker},  # which process answered
                            "runs_in_memory": len(q.local),
                            "threads_with_runs": len({r.thread_id for r in q.local.values()})}
    wants_heap = request.query_params.get("heap") == "1"
    if wants_heap and SERVICE not in request.scope["user"].permissions:
        return _error(403, "only the service identity may read the heap report")
    heap = await run_in_threadpool(HEAP.report) if wants_heap else None
    if heap is not None:
        body["heap"] = heap
    return _json(body)


def execute(run: Run, emit: Any) -> tuple[str, Any, str | None]:
    """One turn in a worker thread: stream the graph, hand each event to ``emit``; (status, values, error)."""
    from langgraph.types import Command

    graph = served().graph
    configurable = {**(run.config.get("configurable") or {}), "thread_id": str(run.thread_id)}
    config = {**run.config, "configurable": configurable}
    kwargs: dict[str, Any] = dict(run.options)
    given = Command(**run.command) if run.command else run.input
    try:
        for mode, chunk in graph.stream(given, config, stream_mode=run.stream_mode, **kwargs):
            if run.cancelled.is_set():
                return "interrupted", None, None
            emit(mode, plain(chunk))
        values = plain(graph.get_state({"configurable": {"thread_id": str(run.thread_id)}}).values)
    except Exception as exc:  # noqa: BLE001 - the run ends as an error, told to its listeners
        log.warning("run on a thread failed: %s", type(exc).__name__)
        emit("error", {"error": type(exc).__name__, "message": str(exc)[:500]})
        return "error", None, type(exc).__name__
    return "success", values, None


def _open(settings: Settings, jobs: int, lease_s: float) -> Served:
    """Open Postgres (tables, saver) and build the graph (no model is loaded until a turn needs one)."""
    from psycopg.rows import dict_row
    from psycopg_pool import ConnectionPool

    from agents.memory.checkpointers import make_checkpointer
    from graph import build_graph

    url = settings.checkpointer_url or ""
    if not url.startswith(("postgresql://", "postgres://")):
        raise SystemExit("the production server keeps threads in Postgres: set CXR_AGENT_CHECKPOINTER_URL="
                         "postgresql://user:password@host:5432/db")
    pool = ConnectionPool(url, min_size=1, max_size=max(6, jobs + 4), timeout=settings.checkpointer_pool_timeout_s,
                          kwargs={"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row},
                          check=ConnectionPool.check_connection, name="cxr-agent-threads", open=False)
    pool.open(wait=True, timeout=settings.checkpointer_pool_timeout_s)
    rows = RunRows(pool)
    with rows.schema_lock():  # processes starting together create the tables one after another
        saver = make_checkpointer(settings, url=url)
        rows.setup(SCHEMA)
    graph = build_graph(settings, checkpointer=saver, server_input=True)
    queue = RunQueue(jobs, rows, execute, lease_s=lease_s)
    return Served(graph=graph, saver=saver, table=ThreadTable(pool), rows=rows, queue=queue,
                  name=settings.graph_assistant_id)


def _in_process_client(app: Starlette, settings: Settings) -> Any:
    """``langgraph_sdk``'s client calling this app directly (no socket), as the service identity."""
    import httpx
    from langgraph_sdk.client import LangGraphClient

    http = httpx.AsyncClient(base_url="http://cxr-agent.local", transport=httpx.ASGITransport(app=app),
                             headers=settings.server_auth_headers(), timeout=300)
    return LangGraphClient(http)


def create_app(jobs: int = 4, lease_s: float = 60.0) -> Starlette:
    """The server app: our ``/cxr`` routes, LangGraph's endpoints, one auth in front of both.

    ``lease_s``: a run whose process has not renewed it for this long is ended as an error by another."""
    import server.app as cxr

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        settings = get_settings()
        cxr.check_auth_configured(settings)
        HeapWatch.frames()  # a bad setting stops the start
        STATE["served"] = await run_in_threadpool(_open, settings, jobs, lease_s)
        STATE["served"].queue.start()
        cxr.use_server_client(_in_process_client(app, settings))
        try:
            async with cxr.lifespan(app):
                yield
        finally:
            s = STATE.pop("served")
            await s.queue.shutdown()
            s.table.pool.close()
            pool = getattr(s.saver, "conn", None)
            if pool is not None and hasattr(pool, "close"):
                pool.close()

    def guarded(handler: Any) -> Any:
        async def endpoint(request: Request) -> Response:
            try:
                return await handler(request)
            except Denied as exc:
                return _error(exc.status, exc.detail)
        return endpoint

    api = [
        Route("/ok", ok, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/assistants/search", search_assistants, methods=["POST"]),
        Route("/assistants/{assistant_id}", get_assistant, methods=["GET"]),
        Route("/threads", create_thread, methods=["POST"]),
        Route("/threads/search", search_threads, methods=["POST"]),
        Route("/threads/{thread_id}", get_thread, methods=["GET"]),
        Route("/threads/{thread_id}", patch_thread, methods=["PATCH"]),
        Route("/threads/{thread_id}", delete_thread, methods=["DELETE"]),
        Route("/threads/{thread_id}/state", get_state, methods=["GET"]),
        Route("/threads/{thread_id}/state", update_state, methods=["POST"]),
        Route("/threads/{thread_id}/state/checkpoint", get_state_at, methods=["POST"]),
        Route("/threads/{thread_id}/state/{checkpoint_id}", get_state_at, methods=["GET"]),
        Route("/threads/{thread_id}/history", thread_history, methods=["GET", "POST"]),
        Route("/threads/{thread_id}/runs", create_run, methods=["POST"]),
        Route("/threads/{thread_id}/runs", list_runs, methods=["GET"]),
        Route("/threads/{thread_id}/runs/stream", stream_run, methods=["POST"]),
        Route("/threads/{thread_id}/runs/wait", wait_run, methods=["POST"]),
        Route("/threads/{thread_id}/runs/{run_id}", get_run, methods=["GET"]),
        Route("/threads/{thread_id}/runs/{run_id}/join", join_run, methods=["GET"]),
        Route("/threads/{thread_id}/runs/{run_id}/stream", join_stream, methods=["GET"]),
        Route("/threads/{thread_id}/runs/{run_id}/cancel", cancel_run, methods=["POST"]),
    ]
    routes = [Route(r.path, guarded(r.endpoint), methods=list(r.methods or ())) for r in api] + list(cxr.app.routes)
    middleware = [Middleware(Authenticate), Middleware(cxr.RefuseRawImageInput)]
    return Starlette(routes=routes, middleware=middleware, lifespan=lifespan)

