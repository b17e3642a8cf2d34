"""The files of a report index directory: their names, the manifest (read, validated, written), the
raw vector file, atomic writes and the final directory swap, and the errors that name the fix.

Split from tools/retrieval/index.py (which re-exports every name here) so each module has one job:
this one knows the on-disk layout; index_faiss.py the FAISS index; index_store.py the report rows.
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from tools.retrieval.embedder import Embedder

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
INDEX_FILE = "index.faiss"
VECTORS_FILE = "vectors.f32"
STORE_FILE = "reports.sqlite"

# (stage, done, total): stages "embedding", "training", "indexing", "relabeling"; total None if unknown.
ProgressFn = Callable[[str, int, "int | None"], None]


class ReportIndexError(RuntimeError):
    """Base class: the message names the index directory, the problem and the fix."""


class IndexMissing(ReportIndexError, FileNotFoundError):
    """No index has been built at this location."""


class IndexMismatch(ReportIndexError):
    """The index was built with a different embedder or dimension than the one configured."""


class IndexCorrupt(ReportIndexError):
    """Files disagree with each other or cannot be read; rebuild."""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def read_manifest(index_dir: str | Path) -> dict[str, Any]:
    """The manifest of the index at ``index_dir``, validated (format version, required keys)."""
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


def new_manifest(*, embedder_name: str, dimension: int, corpus_spec: str, fingerprint: str, count: int,
                 index_info: dict[str, Any], label_counts: dict[str, int], labeler: str,
                 build_seconds: float) -> dict[str, Any]:
    """The manifest of a freshly built index."""
    return {
        "format_version": FORMAT_VERSION,
        "embedder": embedder_name,
        "dimension": dimension,
        "metric": "inner_product",
        "normalized": True,
        "corpus": {"spec": corpus_spec, "fingerprint": fingerprint, "count": count},
        "additions": [],
        "labeler_version": labeler,
        "index": index_info,
        "count": count,
        "label_counts": dict(sorted(label_counts.items())),
        "created_at": _now(),
        "updated_at": _now(),
        "build_seconds": build_seconds,
    }


def check_configured_embedder(path: Path, manifest: dict[str, Any], wanted: str, embedder: Embedder | None) -> None:
    """Refuse to open an index built with another embedder than the configured (or given) one."""
    if manifest["embedder"] != wanted:
        raise IndexMismatch(
            f"the index at {path} was built with embedder {manifest['embedder']!r} (dimension "
            f"{manifest['dimension']}), but the configured embedder is {wanted!r}"
            + (f" (dimension {embedder.dimension})" if embedder is not None else "")
            + f". Rebuild it with `cxr-agent kb build --embedder {wanted}`, or set "
            f"CXR_AGENT_EMBEDDER={manifest['embedder']} to use it as built."
        )


def check_embedder(path: Path, manifest: dict[str, Any], emb: Embedder) -> None:
    """Refuse a loaded embedder whose name or dimension differs from the manifest's."""
    from tools.retrieval.embedder import canonical_embedder_name

    name = canonical_embedder_name(emb.name)
    built, dimension = str(manifest["embedder"]), int(manifest["dimension"])
    if name != built:
        raise IndexMismatch(
            f"the index at {path} was built with embedder {built!r} (dimension "
            f"{dimension}), but embedder {name!r} (dimension {emb.dimension}) was given; rebuild with "
            f"`cxr-agent kb build --embedder {name}` or use {built!r}"
        )
    if emb.dimension != dimension:
        raise IndexMismatch(
            f"the index at {path} holds {dimension}-d vectors but embedder {name!r} produces "
            f"{emb.dimension}-d vectors; rebuild with `cxr-agent kb build`"
        )


def _open_vectors(path: Path, count: int, dim: int) -> np.ndarray:
    expected = count * dim * 4
    size = path.stat().st_size if path.exists() else -1
    if size != expected:
        raise IndexCorrupt(f"{path} holds {size} bytes, expected {expected} ({count} x {dim} float32); rebuild the index")
    if count == 0:
        return np.zeros((0, dim), dtype=np.float32)
    return np.memmap(path, dtype=np.float32, mode="r", shape=(count, dim))


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
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

