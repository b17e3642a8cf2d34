"""A persistent FAISS index of prior reports, built streaming so corpus size is bounded by disk, not RAM.

Layout of an index directory (``settings.resolved_index_dir``)::

    manifest.json    embedder + dimension, corpus spec + fingerprint, labeler version, index type/params,
                     count, label counts, timestamps. Validated on load: a different embedder or dimension
                     is refused with a message naming both (never silent garbage).
    index.faiss      the FAISS index (inner product on L2-normalised vectors == cosine similarity).
    vectors.f32      every embedding, raw float32 rows in FAISS id order: lets an exact index be re-made
                     as IVF when incremental adds cross ``exact_index_max`` without re-embedding anything.
    reports.sqlite   one row per report (row = FAISS id): id, text, present/uncertain labels, metadata.

Building streams the corpus in batches: each batch is labelled (``label_report``, once, at build time),
embedded, appended to SQLite and to ``vectors.f32``, then dropped. Only the FAISS index itself lives in
memory. Corpora up to ``exact_index_max`` get an exact ``IndexFlatIP``; larger ones an IVF index trained
on a sample of the stored vectors (parameters chosen from bench/retrieval.py measurements).
"""

from __future__ import annotations

import json
import logging
import math
import re
import shutil
import sqlite3
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from knowledge.evidence import RetrievedReport, Status
from tools.retrieval.corpus import Report, corpus_fingerprint

if TYPE_CHECKING:
    from cxr_agent.settings import Settings
    from tools.retrieval.embedder import Embedder

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
INDEX_FILE = "index.faiss"
VECTORS_FILE = "vectors.f32"
STORE_FILE = "reports.sqlite"

# (stage, done, total): stages "embedding", "training", "indexing", "relabeling"; total None if unknown.
ProgressFn = Callable[[str, int, "int | None"], None]

# Metadata keys that could identify a patient never enter the index (user corpora are arbitrary tables).
_PHI_KEY = re.compile(r"name|birth|dob|mrn|accession|address|phone|email|ssn|social|patient", re.IGNORECASE)
# Section copies that duplicate `text`: not stored twice.
_DUPLICATE_KEYS = frozenset({"findings", "impression"})


class ReportIndexError(RuntimeError):
    """Base class: the message names the index directory, the problem and the fix."""


class IndexMissing(ReportIndexError, FileNotFoundError):
    """No index has been built at this location."""


class IndexMismatch(ReportIndexError):
    """The index was built with a different embedder or dimension than the one configured."""


class IndexCorrupt(ReportIndexError):
    """Files disagree with each other or cannot be read; rebuild."""


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


@dataclass(frozen=True)
class IndexParams:
    """What FAISS index to build. ``factory`` is a faiss.index_factory string."""

    kind: str  # "flat" | "ivf"
    factory: str
    nprobe: int | None = None
    train_size: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"type": self.kind, "factory": self.factory, "nprobe": self.nprobe, "train_size": self.train_size}


def choose_index_params(n: int, exact_index_max: int) -> IndexParams:
    """Exact search up to ``exact_index_max`` vectors; beyond, IVF-Flat with ~4*sqrt(n) lists.

    Measured on 1M 384-d vectors with the structure of real report embeddings (bench/retrieval.py):
    see the bench note for the figures this choice rests on.
    """
    if n <= exact_index_max:
        return IndexParams("flat", "Flat")
    nlist = 1 << max(0, min(16, round(math.log2(4 * math.sqrt(n)))))
    nlist = max(1, min(nlist, n // 39))  # faiss wants >= 39 training points per list
    nprobe = min(nlist, max(8, nlist // 128))
    train_size = min(n, nlist * 32)
    return IndexParams("ivf", f"IVF{nlist},Flat", nprobe=nprobe, train_size=train_size)


def snippet(text: str, limit: int = 320) -> str:
    """Whitespace-collapsed head of a report, cut on a word boundary."""
    flat = " ".join(text.split())
    if len(flat) <= limit:
        return flat
    cut = flat[:limit].rsplit(" ", 1)[0]
    return cut + " …"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


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


def _open_vectors(path: Path, count: int, dim: int) -> np.ndarray:
    expected = count * dim * 4
    size = path.stat().st_size if path.exists() else -1
    if size != expected:
        raise IndexCorrupt(f"{path} holds {size} bytes, expected {expected} ({count} x {dim} float32); rebuild the index")
    if count == 0:
        return np.zeros((0, dim), dtype=np.float32)
    return np.memmap(path, dtype=np.float32, mode="r", shape=(count, dim))


def _make_faiss(vectors: np.ndarray, params: IndexParams, progress: ProgressFn | None, chunk: int = 65536):
    import faiss

    n, d = vectors.shape
    index = faiss.index_factory(d, params.factory, faiss.METRIC_INNER_PRODUCT)
    if not index.is_trained:
        m = min(n, params.train_size or n)
        rng = np.random.default_rng(0)
        sample_rows = np.sort(rng.choice(n, size=m, replace=False)) if m < n else np.arange(n)
        sample = np.ascontiguousarray(vectors[sample_rows], dtype=np.float32)
        if progress is not None:
            progress("training", 0, 1)
        index.train(sample)
        del sample
        if progress is not None:
            progress("training", 1, 1)
    for start in range(0, n, chunk):
        index.add(np.ascontiguousarray(vectors[start : start + chunk], dtype=np.float32))
        if progress is not None:
            progress("indexing", min(n, start + chunk), n)
    _set_nprobe(index, params.nprobe)
    return index


def _set_nprobe(index, nprobe: int | None) -> None:
    if nprobe:
        import faiss

        faiss.ParameterSpace().set_index_parameter(index, "nprobe", int(nprobe))


def _maybe_gpu(index):
    """A GPU copy of the index when faiss sees a GPU (faiss-gpu); the CPU index otherwise."""
    import faiss

    try:
        if faiss.get_num_gpus() > 0:
            return faiss.index_cpu_to_all_gpus(index)
    except Exception as exc:  # GPU clone is an optimisation; never fatal
        log.warning("faiss GPU clone failed (%s); searching on CPU", exc)
    return index


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)


def _write_index_atomic(index, path: Path) -> None:
    import faiss

    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    faiss.write_index(index, str(tmp))
    tmp.replace(path)


def _swap_dirs(new: Path, target: Path) -> None:
    """Move a finished build into place; the previous index (if any) is removed only afterwards."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
        target.rename(old)
    new.rename(target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# ----------------------------------------------------------------------------------------------- index
class ReportIndex:
    """Prior reports searchable by meaning. Build with :meth:`build`, open with :meth:`load`.

    Thread-safe: any thread may search (the FAISS call itself is serialised: milliseconds); :meth:`add`
    and :meth:`relabel` serialise on a lock.
    """

    def __init__(self, path: Path, manifest: dict[str, Any], index, store: _Store, settings: Settings,
                 embedder: Embedder | None = None) -> None:
        self.path = path
        self.manifest = manifest
        self._cpu_index = index
        self._index = _maybe_gpu(index)
        self._store = store
        self.settings = settings
        self._embedder = embedder
        self._lock = threading.RLock()  # serialises add / relabel
        self._index_lock = threading.Lock()  # FAISS add and search must not overlap
        self.labels_stale = manifest.get("labeler_version") != labeler_version()

    # -- properties ------------------------------------------------------------------------------
    @property
    def count(self) -> int:
        return int(self.manifest["count"])

    def __len__(self) -> int:
        return self.count

    @property
    def dimension(self) -> int:
        return int(self.manifest["dimension"])

    @property
    def embedder_name(self) -> str:
        return str(self.manifest["embedder"])

    @property
    def index_type(self) -> str:
        return str(self.manifest["index"]["type"])

    @property
    def embedder(self) -> Embedder:
        """The embedder the index was built with, loaded on first use and checked against the manifest."""
        if self._embedder is None:
            from tools.retrieval.embedder import get_embedder

            emb = get_embedder(self.embedder_name, settings=self.settings)
            self._check_embedder(emb)
            self._embedder = emb
        return self._embedder

    def _check_embedder(self, emb: Embedder) -> None:
        from tools.retrieval.embedder import canonical_embedder_name

        name = canonical_embedder_name(emb.name)
        if name != self.embedder_name:
            raise IndexMismatch(
                f"the index at {self.path} was built with embedder {self.embedder_name!r} (dimension "
                f"{self.dimension}), but embedder {name!r} (dimension {emb.dimension}) was given; rebuild with "
                f"`cxr-agent kb build --embedder {name}` or use {self.embedder_name!r}"
            )
        if emb.dimension != self.dimension:
            raise IndexMismatch(
                f"the index at {self.path} holds {self.dimension}-d vectors but embedder {name!r} produces "
                f"{emb.dimension}-d vectors; rebuild with `cxr-agent kb build`"
            )

    # -- build / load ------------------------------------------------------------------------------
    @classmethod
    def build(
        cls,
        reports: Iterable[Report],
        settings: Settings | None = None,
        *,
        index_dir: str | Path | None = None,
        embedder: Embedder | None = None,
        corpus_spec: str = "custom",
        batch_size: int = 256,
        progress: ProgressFn | None = None,
        total: int | None = None,
        params: IndexParams | None = None,
    ) -> ReportIndex:
        """Stream ``reports`` into a new index at ``index_dir`` (default settings.resolved_index_dir).

        The build happens in a sibling temporary directory and replaces any previous index only once it
        is complete, so a reader never sees a half-built index and a failed build leaves the old one.
        """
        from cxr_agent.settings import get_settings
        from tools.retrieval.embedder import canonical_embedder_name, get_embedder

        settings = settings or get_settings()
        emb = embedder or get_embedder(settings=settings)
        target = Path(index_dir or settings.resolved_index_dir).expanduser()
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.building-{uuid.uuid4().hex[:8]}")
        tmp.mkdir()
        t0 = time.perf_counter()
        store = None
        try:
            store = _Store(tmp / STORE_FILE, bulk=True)
            res = _ingest(
                reports, store=store, vectors_path=tmp / VECTORS_FILE, embedder=emb, start_row=0,
                batch_size=batch_size, progress=progress, total=total, skip_existing=False,
            )
            if res.count == 0:
                raise ValueError(f"corpus {corpus_spec!r} yielded no report with text; nothing to index")
            chosen = params or choose_index_params(res.count, settings.exact_index_max)
            vectors = _open_vectors(tmp / VECTORS_FILE, res.count, emb.dimension)
            index = _make_faiss(vectors, chosen, progress)
            del vectors
            _write_index_atomic(index, tmp / INDEX_FILE)
            manifest = {
                "format_version": FORMAT_VERSION,
                "embedder": canonical_embedder_name(emb.name),
                "dimension": emb.dimension,
                "metric": "inner_product",
                "normalized": True,
                "corpus": {"spec": corpus_spec, "fingerprint": res.fingerprint, "count": res.count},
                "additions": [],
                "labeler_version": labeler_version(),
                "index": chosen.as_dict() | {"trained_count": res.count if chosen.kind != "flat" else None},
                "count": res.count,
                "label_counts": dict(sorted(res.label_counts.items())),
                "created_at": _now(),
                "updated_at": _now(),
                "build_seconds": round(time.perf_counter() - t0, 2),
            }
            _write_json_atomic(tmp / MANIFEST, manifest)
            store.close()
            store = None
            _swap_dirs(tmp, target)
        except BaseException:
            if store is not None:
                store.close()
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        log.info("built %s index of %d reports at %s in %.1fs", chosen.kind, res.count, target, time.perf_counter() - t0)
        return cls.load(target, settings, embedder=emb, relabel=False)

    @classmethod
    def exists(cls, index_dir: str | Path) -> bool:
        return (Path(index_dir) / MANIFEST).is_file()

    @staticmethod
    def read_manifest(index_dir: str | Path) -> dict[str, Any]:
        path = Path(index_dir).expanduser()
        mpath = path / MANIFEST
        if not mpath.is_file():
            raise IndexMissing(f"no report index at {path}; build one with `cxr-agent kb build`")
        try:
            manifest = json.loads(mpath.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise IndexCorrupt(f"{mpath} cannot be read ({exc}); rebuild with `cxr-agent kb build`") from exc
        if not isinstance(manifest, dict) or manifest.get("format_version") != FORMAT_VERSION:
            raise IndexCorrupt(
                f"{mpath} has format {manifest.get('format_version') if isinstance(manifest, dict) else '?'}, "
                f"this version reads format {FORMAT_VERSION}; rebuild with `cxr-agent kb build`"
            )
        for key in ("embedder", "dimension", "count", "index", "labeler_version"):
            if key not in manifest:
                raise IndexCorrupt(f"{mpath} lacks {key!r}; rebuild with `cxr-agent kb build`")
        return manifest

    @classmethod
    def load(
        cls,
        index_dir: str | Path | None = None,
        settings: Settings | None = None,
        *,
        embedder: Embedder | None = None,
        relabel: bool | None = None,
    ) -> ReportIndex:
        """Open an index and validate it against the configured (or given) embedder.

        ``relabel``: None relabels automatically when the labeler version changed and the index is
        small (<= 50,000 reports), else logs a warning and sets ``labels_stale``; True/False force it.
        """
        import faiss

        from cxr_agent.settings import get_settings
        from tools.retrieval.embedder import canonical_embedder_name

        settings = settings or get_settings()
        path = Path(index_dir or settings.resolved_index_dir).expanduser()
        manifest = cls.read_manifest(path)
        wanted = canonical_embedder_name(embedder.name if embedder is not None else settings.embedder)
        if manifest["embedder"] != wanted:
            raise IndexMismatch(
                f"the index at {path} was built with embedder {manifest['embedder']!r} (dimension "
                f"{manifest['dimension']}), but the configured embedder is {wanted!r}"
                + (f" (dimension {embedder.dimension})" if embedder is not None else "")
                + f". Rebuild it with `cxr-agent kb build --embedder {wanted}`, or set "
                f"CXR_AGENT_EMBEDDER={manifest['embedder']} to use it as built."
            )
        try:
            index = faiss.read_index(str(path / INDEX_FILE))
        except Exception as exc:
            raise IndexCorrupt(f"{path / INDEX_FILE} cannot be read ({exc}); rebuild with `cxr-agent kb build`") from exc
        if index.d != int(manifest["dimension"]):
            raise IndexMismatch(
                f"the index at {path} holds {index.d}-d vectors but its manifest says dimension "
                f"{manifest['dimension']} for embedder {manifest['embedder']!r}; rebuild with `cxr-agent kb build`"
            )
        store_path = path / STORE_FILE
        if not store_path.is_file():
            raise IndexCorrupt(f"{store_path} is missing; rebuild with `cxr-agent kb build`")
        store = _Store(store_path)
        rows = store.count()
        if not (index.ntotal == rows == int(manifest["count"])):
            store.close()
            raise IndexCorrupt(
                f"the index at {path} is inconsistent: manifest count {manifest['count']}, FAISS {index.ntotal}, "
                f"reports table {rows} (an interrupted update?); rebuild with `cxr-agent kb build`"
            )
        self = cls(path, manifest, index, store, settings)
        if embedder is not None:
            self._check_embedder(embedder)
            self._embedder = embedder
        if self.labels_stale:
            auto = self.count <= 50_000 if relabel is None else relabel
            if auto:
                try:
                    self.relabel()
                except (OSError, sqlite3.Error) as exc:  # e.g. a read-only index: search with the old labels
                    log.warning("could not relabel the index at %s (%s); neighbour labels may be outdated", path, exc)
            else:
                log.warning(
                    "index at %s was labelled by labeler %s, current is %s: neighbour labels may be outdated; "
                    "run `cxr-agent kb build` (or ReportIndex.relabel())",
                    path, manifest["labeler_version"], labeler_version(),
                )
        return self

    # -- search ----------------------------------------------------------------------------------
    def search(self, query: str | list[str], k: int | None = None) -> list[list[Hit]]:
        """Top-``k`` reports per query (one list per query, best first)."""
        texts = [query] if isinstance(query, str) else list(query)
        if not texts:
            return []
        vecs = self.embedder.encode(texts)
        return self.search_vectors(vecs, k)

    def search_vectors(self, vectors: np.ndarray, k: int | None = None) -> list[list[Hit]]:
        k = int(k or self.settings.retrieval_k)
        k = max(1, min(k, self.count))
        vecs = np.ascontiguousarray(np.atleast_2d(vectors), dtype=np.float32)
        with self._index_lock:
            scores, ids = self._index.search(vecs, k)
        rows = self._store.get(int(i) for i in ids.ravel() if i >= 0)
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

    # -- updates ---------------------------------------------------------------------------------
    def add(
        self,
        reports: Iterable[Report],
        *,
        corpus_spec: str = "custom",
        batch_size: int = 256,
        progress: ProgressFn | None = None,
        total: int | None = None,
        skip_existing: bool = True,
    ) -> int:
        """Append reports (ids already indexed are skipped by default); returns how many were added.

        An exact index that grows past ``exact_index_max`` is re-made as IVF from the stored vectors;
        an IVF index that grows 4x beyond the vectors it was trained on is retrained the same way.
        """
        with self._lock:
            emb = self.embedder
            start = self.count
            vec_path = self.path / VECTORS_FILE
            try:
                res = _ingest(
                    reports, store=self._store, vectors_path=vec_path, embedder=emb, start_row=start,
                    batch_size=batch_size, progress=progress, total=total, skip_existing=skip_existing,
                )
            except BaseException:
                self._rollback(start)
                raise
            if res.count == 0:
                return 0
            new_count = start + res.count
            vectors = _open_vectors(vec_path, new_count, self.dimension)
            info = dict(self.manifest["index"])
            trained = info.get("trained_count") or 0
            if (info["type"] == "flat" and new_count > self.settings.exact_index_max) or (
                info["type"] != "flat" and new_count > 4 * max(trained, 1)
            ):
                params = choose_index_params(new_count, self.settings.exact_index_max)
                index = _make_faiss(vectors, params, progress)
                info = params.as_dict() | {"trained_count": new_count if params.kind != "flat" else None}
            else:
                index = self._cpu_index
                with self._index_lock:
                    index.add(np.ascontiguousarray(vectors[start:new_count], dtype=np.float32))
            del vectors
            _write_index_atomic(index, self.path / INDEX_FILE)
            manifest = dict(self.manifest)
            manifest["index"] = info
            manifest["count"] = new_count
            counts = Counter(manifest.get("label_counts", {}))
            counts.update(res.label_counts)
            manifest["label_counts"] = dict(sorted(counts.items()))
            manifest["additions"] = [
                *manifest.get("additions", []),
                {"spec": corpus_spec, "fingerprint": res.fingerprint, "count": res.count, "skipped": res.skipped,
                 "added_at": _now()},
            ]
            manifest["updated_at"] = _now()
            _write_json_atomic(self.path / MANIFEST, manifest)
            gpu_or_cpu = _maybe_gpu(index)
            with self._index_lock:
                self.manifest = manifest
                self._cpu_index = index
                self._index = gpu_or_cpu
            return res.count

    def _rollback(self, start: int) -> None:
        """Undo a partial add: drop rows and vectors past ``start``."""
        with self._store.lock:
            self._store.conn.rollback()
            self._store.conn.execute("DELETE FROM reports WHERE row >= ?", (start,))
            self._store.conn.commit()
        vec_path = self.path / VECTORS_FILE
        with open(vec_path, "r+b") as fh:
            fh.truncate(start * self.dimension * 4)

    def relabel(self, progress: ProgressFn | None = None) -> None:
        """Re-run the current labeler over every stored report (after a labeler upgrade)."""
        with self._lock:
            counts: Counter = Counter()
            done = 0
            for batch in self._store.iter_texts():
                updates = []
                for row, text in batch:
                    present, uncertain = _label_sets(text)
                    counts.update(present)
                    updates.append((json.dumps(present), json.dumps(uncertain), row))
                self._store.update_labels(updates)
                done += len(batch)
                if progress is not None:
                    progress("relabeling", done, self.count)
            self._store.commit()
            manifest = dict(self.manifest)
            manifest["labeler_version"] = labeler_version()
            manifest["label_counts"] = dict(sorted(counts.items()))
            manifest["updated_at"] = _now()
            _write_json_atomic(self.path / MANIFEST, manifest)
            self.manifest = manifest
            self.labels_stale = False
            log.info("relabelled %d reports at %s with labeler %s", done, self.path, manifest["labeler_version"])

    def close(self) -> None:
        self._store.close()

    def __repr__(self) -> str:
        return f"ReportIndex({str(self.path)!r}, {self.count} reports, {self.index_type}, embedder={self.embedder_name!r})"
