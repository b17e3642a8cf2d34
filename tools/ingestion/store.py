"""Ingested studies on disk, by content id, so the graph state holds only the id.

Layout: ``<root>/<id[:2]>/<id>.npy`` (uint16 pixels, the quantised Study pixels the id hashes;
v0.1 wrote float32 and those still load under their old id) and ``<id>.json`` (everything
else). Directories are created 0700 and files 0600 (tools.ingestion.disk_quota). With a quota (Settings
.storage_quota_mb) every put evicts the least recently used studies and their heatmaps. A put of an id
whose stored copy is damaged rewrites it (uploading the image again repairs it). Each file is written to a unique temporary name in the same directory and renamed into place
(atomic on POSIX and Windows), pixels first and metadata last, so a reader sees either no
study or a complete one; concurrent writers of the same id write identical bytes. Safe for
Streamlit's threads and for several processes sharing one directory.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tools.ingestion.disk_quota import atomic_write, enforce_quota, private_dir, touch
from tools.ingestion.study import Study, dequantise, legacy_pixel_hash, pixel_hash, quantise

if TYPE_CHECKING:
    from cxr_agent.settings import Settings

_ID_RE = re.compile(r"^[0-9a-f]{64}$")
_SCHEMA = 2  # 1: float32 pixels (v0.1); 2: uint16


class StudyNotFound(KeyError):
    """No stored study has this id (never uploaded here, removed, or damaged on disk)."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else "study not found"


class StudyStore:
    """Content-addressed store of Study objects under one directory."""

    def __init__(self, root: Path | str, *, artifacts_dir: Path | str | None = None, quota_bytes: int = 0) -> None:
        self.root = Path(root).expanduser()
        self.artifacts_dir = Path(artifacts_dir).expanduser() if artifacts_dir is not None else None
        self.quota_bytes = int(quota_bytes)

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> StudyStore:
        """The store under ``settings.studies_dir`` (the process-wide settings by default), with the
        disk quota shared with ``settings.artifacts_dir``."""
        if settings is None:
            from cxr_agent.settings import get_settings

            settings = get_settings()
        private_dir(settings.data_dir)
        return cls(settings.studies_dir, artifacts_dir=settings.artifacts_dir,
                   quota_bytes=settings.storage_quota_mb * 2**20)

    # ---- paths ------------------------------------------------------------------------------
    def _paths(self, study_id: str) -> tuple[Path, Path]:
        if not isinstance(study_id, str) or not _ID_RE.match(study_id):
            raise StudyNotFound(f"'{study_id!s:.80}' is not a study id (expected 64 hex characters).")
        folder = self.root / study_id[:2]
        return folder / f"{study_id}.npy", folder / f"{study_id}.json"

    def enforce_quota(self, keep: tuple[str, ...] = ()) -> list[str]:
        """Evict least recently used studies (and their artifacts) beyond the quota; the evicted ids."""
        return enforce_quota(self.root, self.artifacts_dir, self.quota_bytes, keep=keep)

    # ---- API ---------------------------------------------------------------------------------
    def put(self, study: Study) -> str:
        """Store a study and return its id. Idempotent: an intact copy already stored is not rewritten;
        a damaged one (truncated, altered, unreadable metadata) is replaced, so uploading the image
        again repairs it."""
        pixels_path, meta_path = self._paths(study.id)
        if meta_path.exists() and pixels_path.exists() and self._intact(study.id):
            touch(meta_path)  # a re-upload is a use (eviction order)
            touch(pixels_path)  # and an upload (uploaded_at): reads touch only the metadata
            return study.id
        pixels, schema = quantise(study.pixels), _SCHEMA
        if pixel_hash(pixels) != study.id:
            if not (study.pixels.dtype == np.float32 and legacy_pixel_hash(study.pixels) == study.id):
                raise ValueError("the study's id is not the hash of its pixels; it cannot be stored")
            pixels, schema = np.ascontiguousarray(study.pixels), 1  # a v0.1 study keeps its id
        private_dir(self.root)
        record = {
            "schema": schema,
            "id": study.id,
            "original_size": list(study.original_size),
            "view": study.view,
            "source_format": study.source_format,
            "metadata": study.metadata,
        }
        payload = json.dumps(record, sort_keys=True, default=_json_default).encode()
        atomic_write(pixels_path, lambda fh: np.save(fh, pixels, allow_pickle=False))
        atomic_write(meta_path, lambda fh: fh.write(payload))  # written last: the commit marker
        self.enforce_quota(keep=(study.id,))
        return study.id

    def _read(self, study_id: str) -> tuple[dict[str, Any], np.ndarray, int, int]:
        """The stored record, pixels and size, checked; StudyNotFound if absent or damaged."""
        pixels_path, meta_path = self._paths(study_id)
        damaged = StudyNotFound(f"Study {study_id[:12]}... is damaged on disk; upload the image again.")
        try:
            record = json.loads(meta_path.read_text())
            pixels = np.load(pixels_path, allow_pickle=False)
        except FileNotFoundError:  # the message names no directory: paths stay out of replies
            raise StudyNotFound(
                f"Study {study_id[:12]}... is not in the study store; upload the image again."
            ) from None
        except (OSError, ValueError):
            raise damaged from None
        if pixels.ndim != 2 or not _matches(pixels, study_id):
            raise damaged
        try:
            width, height = record["original_size"]
            return record, pixels, int(width), int(height)
        except (KeyError, TypeError, ValueError):
            raise damaged from None

    def _intact(self, study_id: str) -> bool:
        try:
            self._read(study_id)
        except StudyNotFound:
            return False
        return True

    def get(self, study_id: str) -> Study:
        """The stored study; StudyNotFound if absent or damaged (its pixels no longer match the id)."""
        record, pixels, width, height = self._read(study_id)
        if pixels.dtype == np.uint16:
            pixels = dequantise(pixels)
        touch(self._paths(study_id)[1])  # last use, for least-recently-used eviction
        return Study(
            id=study_id,
            pixels=pixels,
            original_size=(width, height),
            view=record.get("view", "unknown"),
            source_format=record.get("source_format", "array"),
            metadata=record.get("metadata", {}),
        )

    def uploaded_at(self, study_id: str) -> float:
        """When the study was last put (epoch seconds; 0 if absent): a forget keeps a study put
        after the forgotten conversation's last turn, since another conversation may be about to use it."""
        try:
            return self._paths(study_id)[0].stat().st_mtime
        except (OSError, StudyNotFound):
            return 0.0

    def __contains__(self, study_id: object) -> bool:
        if not isinstance(study_id, str) or not _ID_RE.match(study_id):
            return False
        pixels_path, meta_path = self._paths(study_id)
        return meta_path.exists() and pixels_path.exists()

    def ids(self) -> Iterator[str]:
        """Ids of the complete studies stored here."""
        if not self.root.is_dir():
            return
        for meta_path in sorted(self.root.glob("??/*.json")):
            study_id = meta_path.stem
            if _ID_RE.match(study_id) and meta_path.with_suffix(".npy").exists():
                yield study_id

    def __len__(self) -> int:
        return sum(1 for _ in self.ids())

    def delete(self, study_id: str) -> bool:
        """Remove a study; True if it was there."""
        pixels_path, meta_path = self._paths(study_id)
        existed = meta_path.exists()
        meta_path.unlink(missing_ok=True)  # the commit marker first: readers stop seeing it at once
        pixels_path.unlink(missing_ok=True)
        return existed


def _matches(pixels: np.ndarray, study_id: str) -> bool:
    """The stored array is what the id hashes: uint16 (current) or float32 (v0.1, old id)."""
    if pixels.dtype == np.uint16:
        return pixel_hash(pixels) == study_id
    if pixels.dtype == np.float32:
        return legacy_pixel_hash(pixels) == study_id
    return False


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (np.ndarray, tuple, set)):
        return list(value.tolist() if isinstance(value, np.ndarray) else value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"metadata value of type {type(value).__name__} is not JSON-serialisable")
