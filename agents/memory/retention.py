"""Deleting conversations and what only they referenced, on request and after a retention period.

Why here: a conversation's data lives in three places — the checkpointer (user text, replies,
evidence), the study store (de-identified pixels) and the artifacts dir (heatmaps, one folder per
study) — and only together do they say what is safe to delete: a study two threads used stays
until both are gone, and one another conversation has uploaded but not yet used in a checkpointed turn
(a pending upload) stays too. ``forget_thread`` is what `cxr-agent forget` and the UI's delete button call (it also rewrites the
audit days without the thread's lines);
``apply_retention`` drops threads whose last checkpoint is older than ``settings.retention_days``
(with their audit lines, plus unreferenced studies/artifacts and audit days older than that), at start and periodically
(``start_periodic``). The rules work on a thread catalogue (``ThreadInfo`` per thread), so LangGraph
Server, whose threads are not in our checkpointer, applies the same ones (server/threads.py).

"Gone from disk" needs more than DELETE on SQLite: deleted rows stay in free pages and in the WAL.
The checkpointer's connection has ``secure_delete`` on (zeroes freed content), and ``compact``
then VACUUMs and truncates the WAL; the WAL checkpoint's result is checked (``Deleted.compacted``).
A pass reads one checkpoint per thread (the latest) and the whole history only of a thread it
deletes. Postgres keeps dead tuples until (auto)VACUUM: documented.
"""

from __future__ import annotations

import datetime as dt
import logging
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cxr_agent.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class ThreadInfo:
    """What the checkpointer knows of one thread: when it last changed and which studies it used."""

    last_ts: float = 0.0
    studies: set[str] = field(default_factory=set)


@dataclass
class Deleted:
    """What a forget / retention pass removed (ids only, for messages and tests)."""

    threads: list[str] = field(default_factory=list)
    studies: list[str] = field(default_factory=list)
    artifact_dirs: int = 0
    audit_files: int = 0
    audit_lines: int = 0
    kept_recent: list[str] = field(default_factory=list)  # uploaded again since: another thread may use them
    compacted: bool | None = None  # SQLite VACUUM + WAL truncate done (None: not SQLite / nothing to do)

    def __bool__(self) -> bool:
        return bool(self.threads or self.studies or self.artifact_dirs or self.audit_files)


def timestamp(value: Any) -> float:
    """An ISO time (a checkpoint's ``ts``, a server thread's ``updated_at``) as epoch seconds; 0 if unreadable."""
    try:
        return dt.datetime.fromisoformat(str(value)).timestamp()
    except (TypeError, ValueError):
        return 0.0


def studies_in(values: dict[str, Any]) -> set[str]:
    """The studies a thread's state values reference: its ``study_id`` and its evidence ledger's."""
    out = set()
    sid = values.get("study_id")
    if isinstance(sid, str):
        out.add(sid)
    for key in ("ledger", "last_result"):  # the evidence ledger's study; checkpoints before it kept last_result
        held = values.get(key)
        held_id = held.get("study_id") if isinstance(held, dict) else getattr(held, "study_id", None)
        if isinstance(held_id, str):
            out.add(held_id)
    earlier = values.get("earlier")  # the conversation's earlier studies, by id
    if isinstance(earlier, dict):
        out.update(sid for sid in earlier if isinstance(sid, str))
    return out


_THREAD_IDS_SQL = "SELECT DISTINCT thread_id FROM checkpoints"


def thread_ids(saver: Any) -> list[str]:
    """The ids of the checkpointer's threads, read without deserialising any checkpoint."""
    conn = getattr(saver, "conn", None)
    if isinstance(conn, sqlite3.Connection):
        with getattr(saver, "lock", None) or threading.Lock():
            try:
                return [str(row[0]) for row in conn.execute(_THREAD_IDS_SQL)]
            except sqlite3.OperationalError:  # no table yet: no thread
                return []
    storage = getattr(saver, "storage", None)  # InMemorySaver: thread id -> namespaces
    if isinstance(storage, Mapping):
        return [str(tid) for tid, spaces in list(storage.items()) if spaces]
    cursor = getattr(saver, "_cursor", None)  # PostgresSaver: dict rows
    if callable(cursor):
        with cursor() as cur:
            cur.execute(_THREAD_IDS_SQL)
            return [str(row["thread_id"]) for row in cur.fetchall()]
    return sorted({str((t.config.get("configurable") or {}).get("thread_id")) for t in saver.list(None)})


def latest(saver: Any, thread_id: str) -> ThreadInfo:
    """A thread's last change and the studies its current state references (one checkpoint read)."""
    tup = saver.get_tuple({"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}})
    checkpoint = (tup.checkpoint if tup is not None else None) or {}
    return ThreadInfo(last_ts=timestamp(checkpoint.get("ts")), studies=studies_in(checkpoint.get("channel_values") or {}))


def history_studies(saver: Any, thread_id: str) -> set[str]:
    """Every study any checkpoint of this one thread referenced (read when the thread is deleted)."""
    return set(first_references(saver, thread_id))


def first_references(saver: Any, thread_id: str) -> dict[str, float]:
    """Every study this one thread's checkpoints reference, with the time of the first that did.

    A thread's own upload of a study precedes its first turn on it; an upload after that is another
    conversation's (pending_uploads)."""
    out: dict[str, float] = {}
    for tup in saver.list({"configurable": {"thread_id": thread_id}}):
        checkpoint = tup.checkpoint or {}
        ts = timestamp(checkpoint.get("ts"))
        for sid in studies_in(checkpoint.get("channel_values") or {}):
            out[sid] = min(out.get(sid, ts), ts)
    return out


def scan(saver: Any) -> dict[str, ThreadInfo]:
    """Every thread in the checkpointer: its last change and the studies its current state references.

    One checkpoint per thread (the latest), like the server's catalogue: a thread reads only its
    current study again. The whole history is read only for a thread being deleted (history_studies)."""
    return {tid: latest(saver, tid) for tid in thread_ids(saver)}


def compact(saver: Any) -> bool | None:
    """Make deleted rows unrecoverable from a SQLite checkpointer file: VACUUM, then truncate the WAL.

    True when both completed (the WAL checkpoint reported no busy reader), False when they did not
    (another process holds the file: the next pass retries), None for a backend that is not SQLite."""
    conn, lock = getattr(saver, "conn", None), getattr(saver, "lock", None)
    if not isinstance(conn, sqlite3.Connection):
        return None  # Postgres: dead tuples go at the next (auto)VACUUM; see README "Deploying for a team"
    with lock or threading.Lock():
        try:
            conn.commit()
            conn.execute("PRAGMA secure_delete=ON")
            conn.execute("VACUUM")
            busy, _log, _done = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        except sqlite3.OperationalError as exc:
            log.warning("checkpoint database not compacted (%s)", exc)
            return False
    if busy:
        log.warning("checkpoint database WAL not truncated: another connection is reading it")
        return False
    return True


def recently_uploaded(ids: Iterable[str], store: Any, since: float | Mapping[str, float]) -> set[str]:
    """The studies uploaded (put) after ``since`` (one time, or one per study): another conversation
    may be about to use them, before any checkpoint of its references them. Kept; retention collects
    them if none ever does."""
    uploaded_at = getattr(store, "uploaded_at", None)
    if store is None or not callable(uploaded_at):
        return set()
    if isinstance(since, Mapping):
        return {sid for sid in ids if sid in since and uploaded_at(sid) > since[sid]}
    return {sid for sid in ids if uploaded_at(sid) > since}


def delete_studies(ids: Iterable[str], store: Any, artifacts_dir: Path, out: Deleted) -> None:
    """Delete these studies from the store and their heatmap folders (a failure on one never stops the rest)."""
    for sid in sorted(set(ids)):
        try:
            if store is not None and store.delete(sid):
                out.studies.append(sid)
        except Exception as exc:  # noqa: BLE001 - a bad id or a vanished file: keep going
            log.warning("study %s… not deleted (%s)", sid[:12], type(exc).__name__)
        folder = Path(artifacts_dir) / "".join(c for c in sid if c.isalnum())[:64]
        if sid and folder.is_dir():
            shutil.rmtree(folder, ignore_errors=True)
            out.artifact_dirs += 1


def studies_only_in(threads: dict[str, ThreadInfo], thread_id: str) -> set[str]:
    """The studies ``thread_id`` used that no other thread in the catalogue references."""
    others = set().union(*(t.studies for tid, t in threads.items() if tid != thread_id))
    info = threads.get(thread_id)
    return (info.studies if info else set()) - others


def unnamed_since(settings: Settings, first: Mapping[str, float]) -> dict[str, float]:
    """Per study, the time after which a store write is an upload that named no conversation: after the
    thread's first turn on it and after the last upload made for a named conversation (those are
    pending references, counted by ``pending_elsewhere``)."""
    from tools.ingestion.pending import named_uploads

    named = named_uploads(settings, first)
    return {sid: max(at, named.get(sid, 0.0)) for sid, at in first.items()}


def pending_elsewhere(settings: Settings, studies: set[str], doomed: set[str], thread_id: str,
                      saver: Any) -> set[str]:
    """Of the studies a forgotten thread is about to delete (``doomed``, among all it used: ``studies``),
    those another conversation uploaded and has not yet checkpointed a turn on (a pending reference,
    tools/ingestion/pending.py). A holder whose checkpoints already reference one of ``studies`` has
    used it: its reference is released, not counted."""
    from tools.ingestion.pending import holders, release

    kept: set[str] = set()
    used: dict[str, set[str]] = {}
    for sid, threads in holders(settings, studies).items():
        for other in sorted(set(threads) - {thread_id}):
            if other not in used:
                used[other] = set(first_references(saver, other))
            if sid in used[other]:
                release(settings, other, [sid])
            elif sid in doomed:
                kept.add(sid)
    return kept


def forget_thread(
    thread_id: str, *, saver: Any, store: Any, artifacts_dir: Path, settings: Settings | None = None
) -> Deleted | None:
    """Delete a conversation's checkpoints, the studies/heatmaps no other thread references and its
    audit lines (under ``settings``' data dir; the process-wide settings by default).

    A study another conversation uploaded and has not yet checkpointed a turn on is kept
    (``Deleted.kept_recent``): one it holds a pending reference on (an upload made for it), or, for an
    upload that named no conversation, one uploaded again after this thread's first checkpoint that
    referenced it. A conversation's own pending uploads count as its studies. Returns None when
    neither the checkpointer nor the upload registry knows the thread (nothing is touched)."""
    from tools.ingestion.pending import held_by, release

    if settings is None:
        from cxr_agent.settings import get_settings

        settings = get_settings()
    tid = str(thread_id)
    threads = scan(saver)
    uploaded = held_by(settings, tid)
    checkpointed = tid in threads
    if not checkpointed and not uploaded:
        return None
    first = first_references(saver, tid) if checkpointed else {}
    threads.setdefault(tid, ThreadInfo()).studies |= set(first) | uploaded
    doomed = studies_only_in(threads, tid)
    out = Deleted(threads=[tid])
    kept = recently_uploaded(doomed, store, unnamed_since(settings, first)) | pending_elsewhere(settings, threads[tid].studies, doomed, tid, saver)
    out.kept_recent = sorted(kept)
    if checkpointed:
        saver.delete_thread(tid)
    release(settings, tid)
    delete_studies(doomed - kept, store, artifacts_dir, out)
    from agents.memory.audit_log import forget_thread_lines

    out.audit_lines = forget_thread_lines(settings, tid)
    from agents.review.store import forget_reviews

    forget_reviews(settings, tid)  # signed reviews follow their thread
    out.compacted = compact(saver)
    return out


def _mtime(paths: Iterable[Path]) -> float:
    times = [p.stat().st_mtime for p in paths if p.exists()]
    return max(times) if times else 0.0


def expired_threads(threads: dict[str, ThreadInfo], cutoff: float) -> tuple[set[str], set[str], set[str]]:
    """(threads last changed before ``cutoff``, the studies only they used, the studies live threads use)."""
    expired = {tid for tid, t in threads.items() if t.last_ts < cutoff}
    live = set().union(*(t.studies for tid, t in threads.items() if tid not in expired))
    doomed = set().union(*(threads[t].studies for t in expired)) - live
    return expired, doomed, live


def retention_cutoff(settings: Settings, now: float | None = None) -> float | None:
    """The epoch time before which data is deleted, or None when retention is off (0 days)."""
    days = float(getattr(settings, "retention_days", 0) or 0)
    if days <= 0:
        return None
    return (time.time() if now is None else now) - days * 86400


def sweep_files(settings: Settings, store: Any, *, doomed: set[str], live: set[str], cutoff: float,
                out: Deleted) -> None:
    """Delete ``doomed`` studies, plus stored studies, heatmap folders and audit days older than ``cutoff``
    that no live thread references (an upload never used in a turn is covered too)."""
    out.kept_recent = sorted(recently_uploaded(doomed, store, cutoff))
    doomed = set(doomed) - set(out.kept_recent)
    root = Path(getattr(store, "root", settings.studies_dir))
    for sid in list(store.ids()) if store is not None else []:  # uploaded, never (or no longer) in a thread
        if sid not in live and sid not in doomed and _mtime(root.glob(f"{sid[:2]}/{sid}*")) < cutoff:
            doomed.add(sid)
    delete_studies(doomed, store, settings.artifacts_dir, out)
    artifacts = Path(settings.artifacts_dir)
    if artifacts.is_dir():
        for folder in artifacts.iterdir():
            if folder.is_dir() and folder.name not in live and _mtime([folder, *folder.iterdir()]) < cutoff:
                shutil.rmtree(folder, ignore_errors=True)
                out.artifact_dirs += 1
    from agents.memory.audit_log import audit_dir

    cutoff_day = dt.datetime.fromtimestamp(cutoff, dt.UTC).date().isoformat()
    folder = audit_dir(settings)
    if folder.is_dir():
        for f in folder.glob("*.jsonl"):
            if f.stem < cutoff_day:
                f.unlink(missing_ok=True)
                out.audit_files += 1


def apply_retention(settings: Settings, *, saver: Any, store: Any, now: float | None = None) -> Deleted:
    """Delete everything older than ``settings.retention_days`` (nothing when it is 0)."""
    out = Deleted()
    cutoff = retention_cutoff(settings, now)
    if cutoff is None:
        return out
    threads = scan(saver)
    for tid, info in threads.items():  # only an expired thread's whole history is read
        if info.last_ts < cutoff:
            info.studies |= history_studies(saver, tid)
    expired, doomed, live = expired_threads(threads, cutoff)
    from agents.review.store import forget_reviews
    from tools.ingestion.pending import expire, forget_studies, release

    for tid in sorted(expired):
        saver.delete_thread(tid)
        forget_reviews(settings, tid)  # signed reviews follow their thread
        release(settings, tid)
        out.threads.append(tid)
    expire(settings, cutoff)  # a pending upload never used within the retention period is no longer pending
    sweep_files(settings, store, doomed=doomed, live=live, cutoff=cutoff, out=out)
    forget_studies(settings, out.studies)
    from agents.memory.audit_log import forget_threads_lines

    out.audit_lines = forget_threads_lines(settings, out.threads)  # lines in days younger than the cutoff
    if out.threads:
        out.compacted = compact(saver)
    log_retention(out)
    return out


def log_retention(out: Deleted) -> None:
    """One log line for a retention pass that deleted anything."""
    if out:
        log.info("retention: deleted %d thread(s), %d study(ies), %d artifact folder(s), %d audit day(s)",
                 len(out.threads), len(out.studies), out.artifact_dirs, out.audit_files)


_STARTED: dict[str, threading.Thread] = {}
_STARTED_LOCK = threading.Lock()


def start_periodic(settings: Settings, *, saver: Any, store: Any) -> threading.Thread | None:
    """Apply the retention now and then every ``retention_interval_s`` on a daemon thread (once per
    data dir per process; no thread when retention is off)."""
    if float(getattr(settings, "retention_days", 0) or 0) <= 0:
        return None
    key = str(Path(settings.data_dir).resolve())
    with _STARTED_LOCK:
        if key in _STARTED and _STARTED[key].is_alive():
            return _STARTED[key]

        def loop() -> None:
            while True:
                try:
                    apply_retention(settings, saver=saver, store=store)
                except Exception:  # noqa: BLE001 - the next pass tries again
                    log.exception("retention pass failed")
                time.sleep(float(settings.retention_interval_s))

        thread = threading.Thread(target=loop, name="cxr-retention", daemon=True)
        thread.start()
        _STARTED[key] = thread
        return thread
