"""The report side of an index: the SQLite rows keyed by FAISS id, streaming ingestion (label, embed,
store, append the vectors), the hits a search returns, and what never enters the index (PHI-like
metadata keys).

Split from tools/retrieval/index.py (which re-exports every name here).
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from knowledge.evidence import RetrievedReport, Status
from tools.retrieval.corpus import Report, corpus_fingerprint
from tools.retrieval.index_files import IndexCorrupt, ProgressFn

if TYPE_CHECKING:
    from tools.retrieval.embedder import Embedder

# Metadata keys that could identify a patient never enter the index (user corpora are arbitrary tables).
_PHI_KEY = re.compile(r"name|birth|dob|mrn|accession|address|phone|email|ssn|social|patient", re.IGNORECASE)
# Section copies that duplicate `text`: not stored twice.
_DUPLICATE_KEYS = frozenset({"findings", "impression"})


@dataclass(frozen=True)
class Hit:
    """One neighbour of a query."""

    id: str
    score: float
    snippet: str
    labels: tuple[str, ...]
    uncertain: tuple[str, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    row: int = -1

    def to_retrieved(self) -> RetrievedReport:
        meta = dict(self.metadata)
        if self.uncertain:
            meta["uncertain_labels"] = list(self.uncertain)
        return RetrievedReport(id=self.id, score=self.score, text=self.snippet, labels=list(self.labels), metadata=meta)


def snippet(text: str, limit: int = 320) -> str:
    """Whitespace-collapsed head of a report, cut on a word boundary."""
    flat = " ".join(text.split())
    if len(flat) <= limit:
        return flat
    cut = flat[:limit].rsplit(" ", 1)[0]
    return cut + " …"


def _safe_metadata(meta: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in (meta or {}).items():
        if k in _DUPLICATE_KEYS or _PHI_KEY.search(str(k)):
            continue
        out[str(k)] = v
    return out


def _label_sets(text: str) -> tuple[list[str], list[str]]:
    """(present, uncertain) findings of one report, in order of first mention; present wins."""
    from knowledge.labeler import label_report

    present: list[str] = []
    uncertain: list[str] = []
    for call in label_report(text):
        if call.status == Status.present:
            if call.finding not in present:
                present.append(call.finding)
        elif call.status == Status.uncertain and call.finding not in uncertain:
            uncertain.append(call.finding)
    uncertain = [f for f in uncertain if f not in present]
    return present, uncertain


def labeler_version() -> str:
    from knowledge.labeler import LABELER_VERSION

    return str(LABELER_VERSION)


# ----------------------------------------------------------------------------------------------- store
class _Store:
    """SQLite rows keyed by FAISS id. One connection guarded by a lock (sqlite3 objects are not thread-safe)."""

    def __init__(self, path: Path, *, bulk: bool = False) -> None:
        self.path = path
        self.lock = threading.RLock()
        self.conn = sqlite3.connect(str(path), check_same_thread=False)
        if bulk:
            self.conn.execute("PRAGMA synchronous=OFF")
            self.conn.execute("PRAGMA journal_mode=MEMORY")
        self.conn.execute(
            "CREATE TABLE IF NOT EXISTS reports (row INTEGER PRIMARY KEY, id TEXT NOT NULL, text TEXT NOT NULL, "
            "labels TEXT NOT NULL, uncertain TEXT NOT NULL, metadata TEXT NOT NULL)"
        )
        self.conn.execute("CREATE INDEX IF NOT EXISTS reports_id ON reports(id)")
        self.conn.commit()

    def insert(self, rows: list[tuple[int, str, str, str, str, str]]) -> None:
        with self.lock:
            self.conn.executemany("INSERT INTO reports VALUES (?, ?, ?, ?, ?, ?)", rows)

    def commit(self) -> None:
        with self.lock:
            self.conn.commit()

    def count(self) -> int:
        with self.lock:
            return int(self.conn.execute("SELECT COUNT(*) FROM reports").fetchone()[0])

    def existing_ids(self, ids: list[str]) -> set[str]:
        found: set[str] = set()
        with self.lock:
            for i in range(0, len(ids), 500):
                chunk = ids[i : i + 500]
                q = f"SELECT id FROM reports WHERE id IN ({','.join('?' * len(chunk))})"
                found.update(r[0] for r in self.conn.execute(q, chunk))
        return found

    def get(self, rows: Iterable[int]) -> dict[int, tuple[str, str, str, str, str]]:
        wanted = sorted({int(r) for r in rows if r >= 0})
        out: dict[int, tuple[str, str, str, str, str]] = {}
        with self.lock:
            for i in range(0, len(wanted), 500):
                chunk = wanted[i : i + 500]
                q = f"SELECT row, id, text, labels, uncertain, metadata FROM reports WHERE row IN ({','.join('?' * len(chunk))})"
                for r in self.conn.execute(q, chunk):
                    out[int(r[0])] = tuple(r[1:])  # type: ignore[assignment]
        return out

    def iter_texts(self, batch: int = 1000) -> Iterator[list[tuple[int, str]]]:
        last = -1
        while True:
            with self.lock:
                rows = self.conn.execute(
                    "SELECT row, text FROM reports WHERE row > ? ORDER BY row LIMIT ?", (last, batch)
                ).fetchall()
            if not rows:
                return
            yield [(int(r), t) for r, t in rows]
            last = int(rows[-1][0])

    def update_labels(self, rows: list[tuple[str, str, int]]) -> None:
        with self.lock:
            self.conn.executemany("UPDATE reports SET labels = ?, uncertain = ? WHERE row = ?", rows)

    def close(self) -> None:
        with self.lock:
            self.conn.close()


# ----------------------------------------------------------------------------------------------- ingest
@dataclass
class _IngestResult:
    count: int
    fingerprint: str
    label_counts: Counter
    skipped: int = 0


def _ingest(
    reports: Iterable[Report],
    *,
    store: _Store,
    vectors_path: Path,
    embedder: Embedder,
    start_row: int,
    batch_size: int,
    progress: ProgressFn | None,
    total: int | None,
    skip_existing: bool,
) -> _IngestResult:
    """Label, embed and store ``reports`` in batches; returns the count and corpus_fingerprint of what was read.

    The fingerprint is computed by ``corpus_fingerprint`` itself while the stream passes through it, so it
    equals ``corpus_fingerprint(load_corpus(spec))`` without a second pass over the corpus.
    """
    state = {"row": start_row, "seen": 0, "skipped": 0}
    label_counts: Counter = Counter()
    pending: list[Report] = []

    def flush() -> None:
        batch = pending[:]
        pending.clear()
        if skip_existing:
            have = store.existing_ids([r.id for r in batch])
            dropped = [r for r in batch if r.id in have]
            state["skipped"] += len(dropped)
            batch = [r for r in batch if r.id not in have]
        if batch:
            vecs = embedder.encode([r.text for r in batch])
            rows = []
            for r in batch:
                present, uncertain = _label_sets(r.text)
                label_counts.update(present)
                rows.append(
                    (
                        state["row"],
                        r.id,
                        r.text,
                        json.dumps(present),
                        json.dumps(uncertain),
                        json.dumps(_safe_metadata(r.metadata), default=str, ensure_ascii=False),
                    )
                )
                state["row"] += 1
            store.insert(rows)
            with open(vectors_path, "ab") as fh:
                fh.write(vecs.tobytes())
        if progress is not None:
            progress("embedding", state["seen"], total)

    def tap(stream: Iterable[Report]) -> Iterator[Report]:
        for r in stream:
            if not isinstance(r, Report):
                raise TypeError(f"expected tools.retrieval.corpus.Report, got {type(r).__name__}")
            if not r.text or not r.text.strip():
                continue
            yield r
            pending.append(r)
            state["seen"] += 1
            if len(pending) >= batch_size:
                flush()

    fingerprint = corpus_fingerprint(tap(reports))
    if pending:
        flush()
    store.commit()
    return _IngestResult(state["row"] - start_row, fingerprint, label_counts, state["skipped"])


def hits_from(rows: dict[int, tuple[str, str, str, str, str]], scores: np.ndarray, ids: np.ndarray) -> list[list[Hit]]:
    """FAISS results (one row of scores and ids per query) as Hits, best first; unknown rows dropped."""
    out: list[list[Hit]] = []
    for srow, irow in zip(scores, ids, strict=True):
        hits = []
        for s, i in zip(srow, irow, strict=True):
            rec = rows.get(int(i))
            if rec is None:
                continue
            rid, text, labels, uncertain, meta = rec
            hits.append(
                Hit(
                    id=rid, score=float(s), snippet=snippet(text), labels=tuple(json.loads(labels)),
                    uncertain=tuple(json.loads(uncertain)), metadata=json.loads(meta), row=int(i),
                )
            )
        out.append(hits)
    return out


def relabel_rows(store: _Store, progress: ProgressFn | None, total: int) -> tuple[Counter, int]:
    """Re-run the current labeler over every stored report; (present-label counts, reports done)."""
    counts: Counter = Counter()
    done = 0
    for batch in store.iter_texts():
        updates = []
        for row, text in batch:
            present, uncertain = _label_sets(text)
            counts.update(present)
            updates.append((json.dumps(present), json.dumps(uncertain), row))
        store.update_labels(updates)
        done += len(batch)
        if progress is not None:
            progress("relabeling", done, total)
    store.commit()
    return counts, done


def open_store_checked(path: Path, manifest: dict[str, Any], ntotal: int, store_file: str) -> _Store:
    """The reports table of the index at ``path``, its row count checked against FAISS and the manifest."""
    store_path = path / store_file
    if not store_path.is_file():
        raise IndexCorrupt(f"{store_path} is missing; rebuild with `cxr-agent kb build`")
    store = _Store(store_path)
    rows = store.count()
    if not (ntotal == rows == int(manifest["count"])):
        store.close()
        raise IndexCorrupt(
            f"the index at {path} is inconsistent: manifest count {manifest['count']}, FAISS {ntotal}, "
            f"reports table {rows} (an interrupted update?); rebuild with `cxr-agent kb build`"
        )
    return store
