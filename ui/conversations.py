"""Conversations that outlive the page: who owns which thread, the owner's list, and reopening one.

The checkpointer keeps every conversation, but it has no notion of who started it; the owner table
here (a small SQLite file next to the checkpoints) does. An owner is a hashed identity: the login's
user when the app requires one, otherwise the browser key the page keeps in its URL. Every reopen and
delete checks this table first, so a thread id in the URL alone opens nothing. Kept free of Streamlit
(tested with a plain graph and a temporary file); the page code is ui/history.py.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ui.evidence_table import as_decisions, as_evidence
from ui.turn import TurnResult, cxr_meta, reply_text

TITLE_CHARS = 60


def owner_id(kind: str, identity: str) -> str:
    """A stored owner: the kind ("login" or "browser") and a hash, never the e-mail or the key itself."""
    if not identity:
        raise ValueError(f"an empty {kind} identity cannot own conversations")
    return f"{kind}:{hashlib.sha256(identity.encode()).hexdigest()}"


class OwnerBook:
    """thread id -> owner, in SQLite: which conversations a user may list, reopen and delete."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(str(path), check_same_thread=False)
        with self._lock, self._conn:
            self._conn.execute("CREATE TABLE IF NOT EXISTS owners (thread_id TEXT PRIMARY KEY, owner TEXT NOT NULL, "
                               "created REAL NOT NULL)")

    def claim(self, thread_id: str, owner: str) -> bool:
        """Record ``owner`` for a new thread; True if the thread is (now) theirs, False if another's."""
        with self._lock, self._conn:
            self._conn.execute("INSERT OR IGNORE INTO owners VALUES (?, ?, ?)", (thread_id, owner, time.time()))
            row = self._conn.execute("SELECT owner FROM owners WHERE thread_id = ?", (thread_id,)).fetchone()
        return bool(row) and row[0] == owner

    def owns(self, thread_id: str, owner: str) -> bool:
        with self._lock:
            row = self._conn.execute("SELECT owner FROM owners WHERE thread_id = ?", (thread_id,)).fetchone()
        return bool(row) and row[0] == owner

    def threads(self, owner: str) -> list[str]:
        """The owner's threads, newest first."""
        with self._lock:
            rows = self._conn.execute("SELECT thread_id FROM owners WHERE owner = ? ORDER BY created DESC",
                                      (owner,)).fetchall()
        return [r[0] for r in rows]

    def drop(self, thread_id: str) -> None:
        with self._lock, self._conn:
            self._conn.execute("DELETE FROM owners WHERE thread_id = ?", (thread_id,))


@dataclass(frozen=True)
class ConversationSummary:
    """One line of the sidebar's list."""

    thread_id: str
    title: str
    updated: float  # epoch seconds of the last checkpoint
    studies: int
    deletes_at: float | None  # when retention removes it; None when retention is off


def _values(graph: Any, thread_id: str) -> tuple[dict[str, Any], float]:
    snap = graph.get_state({"configurable": {"thread_id": thread_id}})
    values = dict(getattr(snap, "values", None) or {})
    created = getattr(snap, "created_at", None)
    try:
        ts = dt.datetime.fromisoformat(str(created)).timestamp() if created else 0.0
    except ValueError:
        ts = 0.0
    return values, ts


def _kind(message: Any) -> str | None:
    kind = getattr(message, "type", None)
    if kind is None and isinstance(message, dict):
        kind = message.get("type") or message.get("role")
    return {"human": "human", "user": "human", "ai": "ai", "assistant": "ai"}.get(str(kind))


def _study_ids(messages: Sequence[Any]) -> list[str]:
    """Distinct studies the replies were about, in the order they first appeared."""
    out: list[str] = []
    for m in messages:
        sid = cxr_meta(m).get("study_id") if _kind(m) == "ai" else None
        if isinstance(sid, str) and sid not in out:
            out.append(sid)
    return out


def summarize(graph: Any, thread_ids: Sequence[str], retention_days: float) -> list[ConversationSummary]:
    """The sidebar's list: title from the first question, last change, studies, retention date.
    Threads with no checkpoint (deleted elsewhere, e.g. by retention) are left out."""
    out = []
    for tid in thread_ids:
        values, ts = _values(graph, tid)
        messages = values.get("messages") or []
        first = next((m for m in messages if _kind(m) == "human"), None)
        if first is None:
            continue
        title = " ".join(reply_text(first).split())
        title = title if len(title) <= TITLE_CHARS else title[: TITLE_CHARS - 1] + "…"
        deletes = ts + retention_days * 86400 if retention_days > 0 and ts else None
        out.append(ConversationSummary(tid, title or "(empty message)", ts, len(_study_ids(messages)), deletes))
    return sorted(out, key=lambda c: c.updated, reverse=True)


@dataclass
class Restored:
    """A reopened conversation: its turns, the study it was last about, and how many studies it held."""

    turns: list[TurnResult]
    study_id: str | None
    study_count: int
    labels: dict[str, str]  # study id -> "Study n", in the order the studies came


def restore(graph: Any, thread_id: str) -> Restored:
    """Rebuild the page's turns from the checkpointer: each question with its answer (boxes and heatmaps
    from the reply's payload); the latest answer also gets the evidence and decisions the state holds.
    A question with no answer (a stopped turn) comes back as a stopped turn."""
    values, _ = _values(graph, thread_id)
    messages = values.get("messages") or []
    turns: list[TurnResult] = []
    for m in messages:
        kind = _kind(m)
        if kind == "human":
            turns.append(TurnResult(user_text=reply_text(m), stopped=True))
        elif kind == "ai" and turns and turns[-1].stopped and not turns[-1].reply:
            turn = turns[-1]
            turn.stopped = False
            turn.reply = reply_text(m)
            turn.cxr = cxr_meta(m)
            turn.study_id = turn.cxr.get("study_id")
    last = next((t for t in reversed(turns) if not t.stopped), None)
    if last is not None:
        last.evidence = as_evidence(values.get("evidence"))
        last.decisions = as_decisions(values.get("decisions"))
    studies = _study_ids(messages)
    current = values.get("study_id") if isinstance(values.get("study_id"), str) else None
    labels = {sid: f"Study {i}" for i, sid in enumerate(studies, 1)}
    return Restored(turns, current or (studies[-1] if studies else None), len(studies), labels)
