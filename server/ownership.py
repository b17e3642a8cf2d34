"""Who may see a stored study or heatmap on the graph server: its uploaders and its threads' owners.

Studies stay shared on disk by pixel hash (two uploads of the same image are one file), so
ownership is recorded beside them: ``<data_dir>/uploads.sqlite`` (owner-only, ``secure_delete``)
holds one row per (study, uploader). A caller may see a study it uploaded, or one a thread it owns
references (the threads' ``metadata.owner``, server/auth.py); the service identity sees all. A
study nobody may see answers 404, exactly like a missing one, so ids cannot be probed. Rows go when
their study is deleted (forget, retention) or their uploader's thread that used it is forgotten.

A row is also an upload reference: until its uploader's thread has checkpointed a turn on the study,
forgetting someone else's thread that used the same image does not delete it (server/threads.py).
"""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Iterable, Mapping
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tools.ingestion.pending import open_registry, registry_path

if TYPE_CHECKING:
    from cxr_agent.settings import Settings

PAGE = 100


def _connect(settings: Settings) -> sqlite3.Connection:
    conn = open_registry(settings)
    conn.execute("CREATE TABLE IF NOT EXISTS uploads (study_id TEXT NOT NULL, owner TEXT NOT NULL, "
                 "at REAL NOT NULL, PRIMARY KEY (study_id, owner))")
    return conn


def record_upload(settings: Settings, study_id: str, owner: str, thread_id: str | None = None) -> None:
    """Remember that ``owner`` uploaded the study, and when it last did; with ``thread_id`` (the
    ``X-Cxr-Thread`` header), also the conversation it is for, as a pending reference
    (tools/ingestion/pending.py) that keeps it when another thread on the same image is forgotten
    (blocking)."""
    with closing(_connect(settings)) as conn, conn:
        conn.execute("INSERT INTO uploads (study_id, owner, at) VALUES (?, ?, ?) "
                     "ON CONFLICT (study_id, owner) DO UPDATE SET at = excluded.at",
                     (study_id, owner, time.time()))
    if thread_id:
        from tools.ingestion.pending import hold

        hold(settings, study_id, thread_id, owner)


THREAD_HEADER = "x-cxr-thread"
_THREAD_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")


def upload_thread(request: Any) -> str | None:
    """The conversation an upload names in ``X-Cxr-Thread`` (None: none named, as SDK callers may).
    Raises ValueError naming the problem for a value that is not a thread id."""
    value = request.headers.get(THREAD_HEADER)
    if value is None:
        return None
    if not _THREAD_ID.fullmatch(value):
        raise ValueError(f"{THREAD_HEADER} must be a thread id (letters, digits, '.', '_', ':' or '-', "
                         "at most 128 characters)")
    return value


def pending_uploads(settings: Settings, first_seen: Mapping[str, float], owner: str) -> set[str]:
    """Of the studies a thread of ``owner`` is about to lose (each with the time its first checkpoint
    referenced it), those with an upload still pending: one by another user, or by ``owner`` after
    that first turn (for another of their threads). Such an upload is released when its uploader's
    thread is forgotten (release_uploads) or its study deleted; retention collects a study nobody
    ever used (blocking)."""
    if not first_seen or not registry_path(settings).exists():
        return set()
    out: set[str] = set()
    with closing(_connect(settings)) as conn:
        for sid, since in first_seen.items():
            rows = conn.execute("SELECT owner, at FROM uploads WHERE study_id = ?", (sid,)).fetchall()
            if any(who != owner or at > since for who, at in rows):
                out.add(sid)
    return out


def release_uploads(settings: Settings, first_seen: Mapping[str, float], owner: str) -> int:
    """Drop ``owner``'s uploads that a thread of theirs being forgotten used (uploaded before its first
    turn on the study), even where the study stays for others; how many went (blocking)."""
    rows = [(sid, owner, since) for sid, since in first_seen.items()]
    if not rows or not registry_path(settings).exists():
        return 0
    with closing(_connect(settings)) as conn, conn:
        return conn.executemany("DELETE FROM uploads WHERE study_id = ? AND owner = ? AND at <= ?", rows).rowcount


def uploaded_by(settings: Settings, study_id: str, owner: str) -> bool:
    """Did ``owner`` upload this study (blocking)?"""
    if not registry_path(settings).exists():
        return False
    with closing(_connect(settings)) as conn:
        row = conn.execute("SELECT 1 FROM uploads WHERE study_id = ? AND owner = ?", (study_id, owner)).fetchone()
    return row is not None


def forget_uploads(settings: Settings, study_ids: Iterable[str]) -> int:
    """Drop the rows of deleted studies; how many went (blocking)."""
    ids = [(s,) for s in study_ids]
    if not ids or not registry_path(settings).exists():
        return 0
    with closing(_connect(settings)) as conn, conn:
        return conn.executemany("DELETE FROM uploads WHERE study_id = ?", ids).rowcount


def caller(request: Any) -> tuple[str, bool]:
    """(owner id, is service) of an authenticated request to one of our routes."""
    from server.identities import SERVICE

    user = request.scope.get("user")
    auth = request.scope.get("auth")
    identity = getattr(user, "identity", None)
    scopes = getattr(auth, "scopes", None) or []
    if not identity or "gateway" in scopes:  # a gateway acts only for a user it names
        return "", False
    return str(identity), SERVICE in scopes


async def owns_thread(client: Any, thread_id: str, owner: str) -> bool:
    """Does the thread exist and belong to ``owner``? (``client``: the service's in-process client)."""
    import httpx

    try:
        thread = await client.threads.get(thread_id)
    except httpx.HTTPStatusError as exc:
        if exc.response.status_code in (404, 422):
            return False
        raise
    return (thread.get("metadata") or {}).get("owner") == owner


async def thread_owner(client: Any, thread_id: str) -> str | None:
    """The thread's ``metadata.owner`` ("" when it has none), or None when the server has no such thread."""
    import httpx

    try:
        thread = await client.threads.get(thread_id)
    except httpx.HTTPStatusError as exc:
        if exc.response.status_code in (404, 422):
            return None
        raise
    return str((thread.get("metadata") or {}).get("owner") or "")


async def thread_references(client: Any, owner: str, study_id: str) -> bool:
    """Does a thread of ``owner`` reference the study in its current state?"""
    offset = 0
    while True:
        page = await client.threads.search(metadata={"owner": owner}, limit=PAGE, offset=offset,
                                           select=["thread_id"],
                                           extract={"study": "values.study_id", "ledger": "values.ledger.study_id",
                                                    "last": "values.last_result.study_id"})
        if any(study_id in (t.get("extracted") or {}).values() for t in page):
            return True
        if len(page) < PAGE:
            return False
        offset += PAGE


async def may_see_study(settings: Settings, client: Any, request: Any, study_id: str) -> bool:
    """The service identity, an uploader of the study, or the owner of a thread that references it."""
    from starlette.concurrency import run_in_threadpool

    owner, service = caller(request)
    if service:
        return True
    if not owner:
        return False
    if await run_in_threadpool(uploaded_by, settings, study_id, owner):
        return True
    return await thread_references(client, owner, study_id)


def artifact_study(path: Path, settings: Settings) -> str | None:
    """The study an artifact belongs to (``artifacts/<study_id>/...``), or None for a stray file."""
    try:
        parts = path.relative_to(Path(settings.artifacts_dir).resolve()).parts
    except ValueError:
        return None
    return parts[0] if len(parts) > 1 else None
