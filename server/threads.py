"""Forgetting and retention on LangGraph Server, where the server (not our checkpointer) owns the threads.

The rules are agents/memory/retention.py's: a study and its heatmaps go when no remaining thread references
them, and retention drops threads idle for ``retention_days`` plus the stored files nobody uses. Only
the thread catalogue differs: it comes from the server's own API (the in-process ``langgraph_sdk``
client), whatever runtime stores the threads (in memory for ``langgraph dev``, Postgres for
``langgraph up``). The forgotten thread's whole history is read, so a study it switched away from
goes too; other threads are read by their current values (``study_id``, ``ledger.study_id``, and ``last_result.study_id`` of older checkpoints),
the only studies a thread ever reads again, which keeps a pass one light query per 100 threads.
A study someone uploaded and has not yet used in a turn (its upload row in server/ownership.py) stays
when another thread that used the same image is forgotten.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import httpx
from starlette.concurrency import run_in_threadpool

from agents.memory.audit_log import forget_thread_lines, forget_threads_lines
from agents.memory.retention import (
    Deleted,
    ThreadInfo,
    delete_studies,
    expired_threads,
    log_retention,
    recently_uploaded,
    retention_cutoff,
    studies_in,
    studies_only_in,
    sweep_files,
    timestamp,
    unnamed_since,
)
from server.ownership import forget_uploads, pending_uploads, release_uploads
from tools.ingestion.pending import expire, forget_studies, held_by, holders, release

if TYPE_CHECKING:
    from cxr_agent.settings import Settings

log = logging.getLogger(__name__)

PAGE = 100
"""Threads per catalogue query, and checkpoints per history query."""
_EXTRACT = {"study": "values.study_id", "ledger": "values.ledger.study_id", "last": "values.last_result.study_id",
            "earlier": "values.earlier"}


def _ids(*values: Any) -> set[str]:
    return {v for v in values if isinstance(v, str) and v}


async def catalogue(client: Any) -> dict[str, ThreadInfo]:
    """Every thread on the server: when it last changed and the studies its current state references."""
    threads: dict[str, ThreadInfo] = {}
    offset = 0
    while True:
        page = await client.threads.search(limit=PAGE, offset=offset, sort_by="created_at", sort_order="asc",
                                           select=["thread_id", "updated_at"], extract=_EXTRACT)
        for t in page:
            found = t.get("extracted") or {}
            threads[str(t["thread_id"])] = ThreadInfo(last_ts=timestamp(t.get("updated_at")),
                                                      studies=_ids(found.get("study"), found.get("ledger"), found.get("last"),
                                                                  *(found.get("earlier") or {})))
        if len(page) < PAGE:
            return threads
        offset += PAGE


async def thread_studies(client: Any, thread_id: str) -> dict[str, float] | None:
    """Every study the thread's checkpoints reference, with when the first of them did (epoch seconds),
    or None when the server has no such thread."""
    studies: dict[str, float] = {}
    before: Any = None
    while True:
        try:
            states = await client.threads.get_history(thread_id, limit=PAGE, before=before)
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code in (404, 422):  # unknown thread, or not a thread id at all
                return None
            raise
        for state in states:
            values = state.get("values")
            at = timestamp(state.get("created_at"))
            for sid in studies_in(values) if isinstance(values, dict) else ():
                studies[sid] = min(studies.get(sid, at), at)
        if len(states) < PAGE:
            break
        before = states[-1].get("checkpoint")
    if not studies:  # a thread with no checkpoint yet has no history: check it exists at all
        try:
            await client.threads.get(thread_id)
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code in (404, 422):
                return None
            raise
    return studies


async def forget(client: Any, thread_id: str, settings: Settings, store: Any) -> Deleted | None:
    """Delete the thread on the server, then the studies and heatmaps no other thread references and
    no upload still waits for (``Deleted.kept_recent``: one another conversation uploaded for itself
    and has not yet checkpointed a turn on, another user's upload, or one made after this thread's
    first turn on the study that named no conversation), and its audit lines. The thread's own
    pending uploads count as its studies.

    Returns None when the server has no such thread (nothing is touched)."""
    own = await thread_studies(client, thread_id)
    if own is None:
        return None
    owner = await _owner(client, thread_id)
    threads = await catalogue(client)
    last_ts = threads[thread_id].last_ts if thread_id in threads else 0.0
    uploaded = await run_in_threadpool(held_by, settings, thread_id)
    threads[thread_id] = ThreadInfo(last_ts=last_ts, studies=set(own) | uploaded)
    doomed = studies_only_in(threads, thread_id)
    await client.threads.delete(thread_id)
    out = Deleted(threads=[thread_id])
    first = await run_in_threadpool(unnamed_since, settings, {sid: own.get(sid) or last_ts for sid in doomed})
    kept = await run_in_threadpool(recently_uploaded, doomed, store, first)
    kept |= await run_in_threadpool(pending_uploads, settings, first, owner)
    waiting, mine = await pending_elsewhere(client, settings, threads[thread_id].studies, doomed, thread_id, owner)
    kept |= waiting
    out.kept_recent = sorted(kept)
    only_uploaded = await run_in_threadpool(unnamed_since, settings, dict.fromkeys(uploaded - set(own), 0.0))
    used = {**only_uploaded, **{sid: at or last_ts for sid, at in own.items()}}
    await run_in_threadpool(release_uploads, settings, {sid: at for sid, at in used.items() if sid not in mine},
                            owner)  # this thread used its owner's uploads; another of theirs still waits on some
    await run_in_threadpool(release, settings, thread_id)
    await run_in_threadpool(delete_studies, doomed - kept, store, settings.artifacts_dir, out)
    await run_in_threadpool(forget_studies, settings, out.studies)
    out.audit_lines = await run_in_threadpool(forget_thread_lines, settings, thread_id)
    log.info("forgot a thread: %d study(ies), %d heatmap folder(s), %d audit line(s)",
             len(out.studies), out.artifact_dirs, out.audit_lines)
    return out


async def pending_elsewhere(client: Any, settings: Settings, studies: set[str], doomed: set[str], thread_id: str,
                            owner: str) -> tuple[set[str], set[str]]:
    """(of ``doomed``, the studies another conversation uploaded for itself and has not yet checkpointed
    a turn on; of ``studies``, those another thread of ``owner`` still waits on). A holder whose history
    already references a study has used it: its pending reference is released."""
    found = await run_in_threadpool(holders, settings, studies)
    kept: set[str] = set()
    mine: set[str] = set()
    history: dict[str, dict[str, float]] = {}
    for sid, waiting in found.items():
        for other, other_owner in sorted(waiting.items()):
            if other == thread_id:
                continue
            if other not in history:
                history[other] = await thread_studies(client, other) or {}  # not created yet: nothing used
            if sid in history[other]:
                await run_in_threadpool(release, settings, other, [sid])
                continue
            if sid in doomed:
                kept.add(sid)
            if other_owner == owner:
                mine.add(sid)
    return kept, mine


async def _owner(client: Any, thread_id: str) -> str:
    """The thread's ``metadata.owner`` (server/auth.py stamps it), "" when it has none."""
    try:
        thread = await client.threads.get(thread_id)
    except httpx.HTTPStatusError as exc:
        if exc.response.status_code in (404, 422):
            return ""
        raise
    return str((thread.get("metadata") or {}).get("owner") or "")


async def retention_pass(client: Any, settings: Settings, store: Any, *, now: float | None = None) -> Deleted:
    """Delete the threads idle past ``retention_days`` and every file no live thread uses that is as old."""
    out = Deleted()
    cutoff = retention_cutoff(settings, now)
    if cutoff is None:
        return out
    expired, doomed, live = expired_threads(await catalogue(client), cutoff)
    for tid in sorted(expired):
        try:
            await client.threads.delete(tid)
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code != 404:  # gone meanwhile (another worker's pass) is fine
                raise
        out.threads.append(tid)
        await run_in_threadpool(release, settings, tid)
    await run_in_threadpool(expire, settings, cutoff)  # a pending upload never used within the retention period
    await run_in_threadpool(sweep_files, settings, store, doomed=doomed, live=live, cutoff=cutoff, out=out)
    await run_in_threadpool(forget_uploads, settings, out.studies)  # who uploaded what goes with it
    await run_in_threadpool(forget_studies, settings, out.studies)
    out.audit_lines = await run_in_threadpool(forget_threads_lines, settings, out.threads)
    log_retention(out)
    return out


async def retention_loop(settings: Settings, store: Any, client_factory: Any, *, first_delay_s: float = 5.0) -> None:
    """Apply the retention every ``retention_interval_s`` (the first pass once the server has started:
    the in-process client only answers after start-up). Every worker may run it; passes are idempotent."""
    await asyncio.sleep(first_delay_s)
    client = client_factory()
    while True:
        try:
            await retention_pass(client, settings, store)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - the next pass tries again
            log.exception("retention pass failed")
        await asyncio.sleep(float(settings.retention_interval_s))
