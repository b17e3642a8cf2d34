"""Pending upload references: a conversation uploaded a study and has not yet checkpointed a turn on it.

Studies are shared on disk by pixel hash, so two conversations uploading the same image hold one
file. Until a conversation's checkpoint references its upload, only this registry says the study is
wanted: forgetting another conversation that used the same image must not delete it. A reference is
released when its conversation is forgotten, when a forget finds that conversation's checkpoints
already reference the study, or when it is older than the retention period (``expire``).

The rows live in ``<data_dir>/uploads.sqlite`` (owner-only, ``secure_delete``), beside the graph
server's upload registry; they hold a study id, a conversation id and a time, never PHI.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterable
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cxr_agent.settings import Settings

REGISTRY = "uploads.sqlite"


def registry_path(settings: Settings) -> Path:
    return Path(settings.data_dir) / REGISTRY


def open_registry(settings: Settings) -> sqlite3.Connection:
    """The owner-only upload registry, created on first use; deleted rows are overwritten on disk."""
    path = registry_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not path.exists():
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    os.chmod(path, 0o600)
    conn = sqlite3.connect(path, timeout=30)
    conn.execute("PRAGMA secure_delete = ON")
    return conn


def _connect(settings: Settings) -> sqlite3.Connection:
    conn = open_registry(settings)
    conn.execute("CREATE TABLE IF NOT EXISTS pending (study_id TEXT NOT NULL, thread_id TEXT NOT NULL, "
                 "owner TEXT NOT NULL DEFAULT '', at REAL NOT NULL, PRIMARY KEY (study_id, thread_id))")
    conn.execute("CREATE TABLE IF NOT EXISTS named (study_id TEXT PRIMARY KEY, at REAL NOT NULL)")
    return conn


def hold(settings: Settings, study_id: str, thread_id: str, owner: str = "") -> None:
    """Record that conversation ``thread_id`` (of user ``owner`` on the graph server; "" in-process)
    uploaded the study and may be about to use it (blocking)."""
    if not isinstance(thread_id, str) or not thread_id:
        raise ValueError("a pending upload reference needs the conversation's thread id (a non-empty string)")
    now = time.time()
    with closing(_connect(settings)) as conn, conn:
        conn.execute("INSERT INTO pending (study_id, thread_id, owner, at) VALUES (?, ?, ?, ?) "
                     "ON CONFLICT (study_id, thread_id) DO UPDATE SET at = excluded.at",
                     (study_id, thread_id, owner, now))
        conn.execute("INSERT INTO named (study_id, at) VALUES (?, ?) "
                     "ON CONFLICT (study_id) DO UPDATE SET at = excluded.at", (study_id, now))


def named_uploads(settings: Settings, study_ids: Iterable[str]) -> dict[str, float]:
    """When each study was last uploaded for a named conversation (absent: never). A store write no
    later than that is accounted for by the pending references; only a later one named nobody."""
    ids = sorted(set(study_ids))
    if not ids or not registry_path(settings).exists():
        return {}
    with closing(_connect(settings)) as conn:
        return {str(sid): float(at) for sid in ids
                for (at,) in conn.execute("SELECT at FROM named WHERE study_id = ?", (sid,))}


def holders(settings: Settings, study_ids: Iterable[str]) -> dict[str, dict[str, str]]:
    """The conversations holding a pending reference on each of these studies, with their owners
    (absent: none)."""
    ids = sorted(set(study_ids))
    if not ids or not registry_path(settings).exists():
        return {}
    out: dict[str, dict[str, str]] = {}
    with closing(_connect(settings)) as conn:
        for sid in ids:
            for tid, owner in conn.execute("SELECT thread_id, owner FROM pending WHERE study_id = ?", (sid,)):
                out.setdefault(sid, {})[str(tid)] = str(owner)
    return out


def held_by(settings: Settings, thread_id: str) -> set[str]:
    """The studies conversation ``thread_id`` uploaded and has a pending reference on."""
    if not registry_path(settings).exists():
        return set()
    with closing(_connect(settings)) as conn:
        return {str(sid) for (sid,) in conn.execute("SELECT study_id FROM pending WHERE thread_id = ?", (thread_id,))}


def release(settings: Settings, thread_id: str, study_ids: Iterable[str] | None = None) -> int:
    """Drop the conversation's pending references (all, or only on ``study_ids``); how many went."""
    if not registry_path(settings).exists():
        return 0
    with closing(_connect(settings)) as conn, conn:
        if study_ids is None:
            return conn.execute("DELETE FROM pending WHERE thread_id = ?", (thread_id,)).rowcount
        return conn.executemany("DELETE FROM pending WHERE study_id = ? AND thread_id = ?",
                                [(sid, thread_id) for sid in set(study_ids)]).rowcount


def forget_studies(settings: Settings, study_ids: Iterable[str]) -> int:
    """Drop every pending reference on deleted studies; how many went."""
    ids = [(sid,) for sid in set(study_ids)]
    if not ids or not registry_path(settings).exists():
        return 0
    with closing(_connect(settings)) as conn, conn:
        conn.executemany("DELETE FROM named WHERE study_id = ?", ids)
        return conn.executemany("DELETE FROM pending WHERE study_id = ?", ids).rowcount


def expire(settings: Settings, cutoff: float) -> int:
    """Drop the pending references made before ``cutoff`` (the retention period's start); how many went."""
    if not registry_path(settings).exists():
        return 0
    with closing(_connect(settings)) as conn, conn:
        conn.execute("DELETE FROM named WHERE at < ?", (cutoff,))
        return conn.execute("DELETE FROM pending WHERE at < ?", (cutoff,)).rowcount
