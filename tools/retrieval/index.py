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

The work is split by job; this module is the index itself (build, open, search, add, relabel) and
re-exports every name of the others, so ``from tools.retrieval.index import X`` keeps working:
index_files.py (layout, manifest, errors, atomic writes), index_faiss.py (exact/IVF choice and
build, nprobe, GPU copy), index_store.py (SQLite rows, streaming ingestion, hits, PHI filter).
"""

from __future__ import annotations

import logging
import shutil
import sqlite3
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tools.retrieval.corpus import Report
from tools.retrieval.index_faiss import (  # noqa: F401 - re-exported
    IndexParams,
    _make_faiss,
    _maybe_gpu,
    _set_nprobe,
    _write_index_atomic,
    choose_index_params,
    read_index_checked,
)
from tools.retrieval.index_files import (  # noqa: F401 - re-exported
    FORMAT_VERSION,
    INDEX_FILE,
    MANIFEST,
    STORE_FILE,
    VECTORS_FILE,
    IndexCorrupt,
    IndexMismatch,
    IndexMissing,
    ProgressFn,
    ReportIndexError,
    _now,
    _open_vectors,
    _swap_dirs,
    _write_json_atomic,
    check_configured_embedder,
    check_embedder,
    new_manifest,
    read_manifest,
)
from tools.retrieval.index_store import (  # noqa: F401 - re-exported
    _DUPLICATE_KEYS,
    _PHI_KEY,
    Hit,
    _ingest,
    _IngestResult,
    _label_sets,
    _safe_metadata,
    _Store,
    hits_from,
    labeler_version,
    open_store_checked,
    relabel_rows,
    snippet,
)

if TYPE_CHECKING:
    from cxr_agent.settings import Settings
    from tools.retrieval.embedder import Embedder

log = logging.getLogger(__name__)


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
        check_embedder(self.path, self.manifest, emb)

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
            manifest = new_manifest(
                embedder_name=canonical_embedder_name(emb.name), dimension=emb.dimension, corpus_spec=corpus_spec,
                fingerprint=res.fingerprint, count=res.count,
                index_info=chosen.as_dict() | {"trained_count": res.count if chosen.kind != "flat" else None},
                label_counts=res.label_counts, labeler=labeler_version(),
                build_seconds=round(time.perf_counter() - t0, 2),
            )
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
        return read_manifest(index_dir)

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
        from cxr_agent.settings import get_settings
        from tools.retrieval.embedder import canonical_embedder_name

        settings = settings or get_settings()
        path = Path(index_dir or settings.resolved_index_dir).expanduser()
        manifest = cls.read_manifest(path)
        wanted = canonical_embedder_name(embedder.name if embedder is not None else settings.embedder)
        check_configured_embedder(path, manifest, wanted, embedder)
        index = read_index_checked(path, manifest)
        store = open_store_checked(path, manifest, index.ntotal, STORE_FILE)
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
        return hits_from(rows, scores, ids)

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
            counts, done = relabel_rows(self._store, progress, self.count)
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
