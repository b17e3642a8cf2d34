"""The FAISS side of a report index: which index to build (exact up to ``exact_index_max``, IVF
beyond), building it from the stored vectors, nprobe, the optional GPU copy, writing it atomically and
reading it back checked against the manifest.

Split from tools/retrieval/index.py (which re-exports every name here).
"""

from __future__ import annotations

import logging
import math
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tools.retrieval.index_files import INDEX_FILE, IndexCorrupt, IndexMismatch, ProgressFn

log = logging.getLogger(__name__)


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


def _write_index_atomic(index, path: Path) -> None:
    import faiss

    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    faiss.write_index(index, str(tmp))
    tmp.replace(path)


def read_index_checked(path: Path, manifest: dict[str, Any]):
    """The FAISS index of the index directory ``path``, its dimension checked against the manifest."""
    import faiss

    try:
        index = faiss.read_index(str(path / INDEX_FILE))
    except Exception as exc:
        raise IndexCorrupt(f"{path / INDEX_FILE} cannot be read ({exc}); rebuild with `cxr-agent kb build`") from exc
    if index.d != int(manifest["dimension"]):
        raise IndexMismatch(
            f"the index at {path} holds {index.d}-d vectors but its manifest says dimension "
            f"{manifest['dimension']} for embedder {manifest['embedder']!r}; rebuild with `cxr-agent kb build`"
        )
    return index
