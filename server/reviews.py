"""A study's clinician review on a thread of the graph server: read it, save edits, sign it.

    GET  /cxr/threads/{thread_id}/review[?study_id=]       -> 200 {"review", "pending", "pending_changes",
                                                                     "reviewer", "signed"}
    PUT  /cxr/threads/{thread_id}/review        body: {"study_id"?, "rows", "added", "report_text"?,
                                                       "change_rows"?}
                                                                              -> 200 (the saved draft, as GET)
    POST /cxr/threads/{thread_id}/review/sign   body: as PUT                 -> 201 {"signed": ...}

Why on the server: with the remote UI the thread lives here, so its review must too, under the
server's data dir, where ``forget`` and retention (server/threads.py) delete it with the thread.
Only the thread's owner (or the service identity, which may read) gets an answer; anyone else gets
404, as for a missing thread. The reviewer is the authenticated caller, never the body: name and
organisation from the users file, or, for the user a gateway names, from that user's login claims the
gateway passes (server/auth.py; the gateway's own entry when it passes none). A caller that is not a person (the
service, or anyone on a server run open) may only sign under a ``typed_name``, which is recorded as
"reviewed by (unauthenticated) NAME" and never verifies anything. Rows are the UI table's
(``agents.review.edits``); a flagged finding without an action blocks signing (409). A study compared with a
prior has change rows too (``change_rows``: accept, reject or another change value), a flagged one likewise.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from agents.review import (
    Review,
    Reviewer,
    ReviewError,
    ReviewIncomplete,
    ReviewStore,
    apply_edits,
    review_from_values,
)
from cxr_agent.settings import Settings

log = logging.getLogger(__name__)

REVIEW_PATH = "/cxr/threads/{thread_id}/review"
MAX_BODY = 256 * 1024


class NotAReader(ReviewError):
    """The caller is not a person the server knows, and gave no typed name to record the review under."""


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"detail": message}, status_code=status)


def reviewer_of(request: Request, typed_name: str | None) -> Reviewer:
    """The reader: the authenticated person, else (service or open server) the typed name, unverified."""
    from server.auth import identify

    identity = identify(request.headers.get("authorization"), dict(request.headers))
    if identity.role == "user":
        return Reviewer.from_identity(identity)
    if typed_name and typed_name.strip():
        return Reviewer.typed(typed_name)
    raise NotAReader("this caller is not a reader the server knows (a service token, or a server run without "
                     "users): sign in with a user token, or give 'typed_name' to record an unverified review")


def _view(review: Review, store: ReviewStore) -> dict[str, Any]:
    current = store.current(review.thread_id, review.study_id)
    return {"review": review.model_dump(mode="json"), "pending": review.pending(),
            "pending_changes": review.pending_changes(),
            "reviewer": {"label": review.reviewer.label, "authenticated": review.reviewer.authenticated},
            "signed": None if current is None else current.model_dump(mode="json")}


class ReviewRoutes:
    """The routes, given this server's settings and its in-process client (passed in by server/app.py)."""

    def __init__(self, settings: Callable[[], Settings], client: Callable[[], Any]) -> None:
        self._settings, self._client = settings, client

    def routes(self) -> list[Route]:
        return [Route(REVIEW_PATH, self.get, methods=["GET"]), Route(REVIEW_PATH, self.put, methods=["PUT"]),
                Route(REVIEW_PATH + "/sign", self.sign, methods=["POST"])]

    async def _values(self, request: Request) -> Mapping[str, Any] | None:
        """The thread's state values if the caller may see the thread, else None (answered as 404)."""
        from server.ownership import caller, owns_thread

        thread_id = request.path_params["thread_id"]
        owner, service = caller(request)
        if not service and (not owner or not await owns_thread(self._client(), thread_id, owner)):
            return None
        try:
            state = await self._client().threads.get_state(thread_id)
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code in (404, 422):
                return None
            raise
        return state.get("values") or {}

    async def _body(self, request: Request) -> dict[str, Any]:
        raw = await request.body()
        if len(raw) > MAX_BODY:
            raise ReviewError(f"the review body is over {MAX_BODY // 1024} KiB")
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            raise ReviewError("the body is not JSON") from None
        if not isinstance(body, dict):
            raise ReviewError("the body must be a JSON object with 'rows', 'added' and 'report_text'")
        for key, kind in (("rows", list), ("added", list), ("report_text", str), ("study_id", str),
                          ("typed_name", str), ("change_rows", list)):
            if body.get(key) is not None and not isinstance(body[key], kind):
                raise ReviewError(f"{key!r} must be a {kind.__name__}")
        return body

    def _open(self, request: Request, values: Mapping[str, Any], study_id: str | None,
              typed_name: str | None) -> tuple[Review, ReviewStore]:
        store = ReviewStore.for_settings(self._settings())
        reviewer = reviewer_of(request, typed_name)
        return review_from_values(values, request.path_params["thread_id"], study_id, reviewer=reviewer,
                                  store=store), store

    async def _handle(self, request: Request, act: Callable[[Request, Mapping[str, Any], dict[str, Any]], Response]
                      ) -> Response:
        try:
            body = await self._body(request) if request.method != "GET" else {}
        except ReviewError as exc:
            return _error(422, str(exc))
        values = await self._values(request)
        if values is None:
            return _error(404, f"no thread {request.path_params['thread_id'][:80]!r} on this server")
        try:
            return await run_in_threadpool(act, request, values, body)
        except NotAReader as exc:
            return _error(403, str(exc))
        except ReviewIncomplete as exc:
            return _error(409, str(exc))
        except ReviewError as exc:
            return _error(422, str(exc))

    async def get(self, request: Request) -> Response:
        def act(req: Request, values: Mapping[str, Any], _body: dict[str, Any]) -> Response:
            review, store = self._open(req, values, req.query_params.get("study_id"), req.query_params.get("typed_name"))
            return JSONResponse(_view(review, store))

        return await self._handle(request, act)

    async def put(self, request: Request) -> Response:
        def act(req: Request, values: Mapping[str, Any], body: dict[str, Any]) -> Response:
            review, store = self._open(req, values, body.get("study_id"), body.get("typed_name"))
            apply_edits(review, body.get("rows") or [], body.get("added") or [], body.get("report_text"),
                        body.get("change_rows") or [])
            store.save_draft(review)
            return JSONResponse(_view(review, store))

        return await self._handle(request, act)

    async def sign(self, request: Request) -> Response:
        def act(req: Request, values: Mapping[str, Any], body: dict[str, Any]) -> Response:
            review, store = self._open(req, values, body.get("study_id"), body.get("typed_name"))
            apply_edits(review, body.get("rows") or [], body.get("added") or [], body.get("report_text"),
                        body.get("change_rows") or [])
            signed = review.sign()
            store.save_signed(signed)
            return JSONResponse({"signed": signed.model_dump(mode="json")}, status_code=201)

        return await self._handle(request, act)


async def sweep(settings: Settings, client: Any) -> int:
    """Delete the reviews of every thread the server no longer holds; how many threads' reviews went."""
    from server.threads import catalogue

    started = time.time()
    live = await catalogue(client)
    gone = await run_in_threadpool(ReviewStore.for_settings(settings).sweep, live, started)
    if gone:
        log.info("deleted the reviews of %d thread(s) the server no longer holds", gone)
    return gone


async def sweep_loop(settings: Settings, client_factory: Callable[[], Any], *, first_delay_s: float = 5.0) -> None:
    """``sweep`` every ``retention_interval_s`` (beside the retention pass, which deletes the threads)."""
    await asyncio.sleep(first_delay_s)
    client = client_factory()
    while True:
        try:
            await sweep(settings, client)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - the next pass tries again
            log.exception("review sweep failed")
        await asyncio.sleep(float(settings.retention_interval_s))
