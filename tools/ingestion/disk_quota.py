"""Owner-only files and a disk quota for what ingestion and the tools write (studies, heatmaps).

Why: studies are de-identified but still a patient's image, and heatmaps are derived from it;
on a shared machine nothing of it should be readable by other accounts (directories 0700, files
0600), and nothing should grow without bound (a quota, least recently used first out).

Eviction works per study: a study's pixels and metadata (``<studies>/<id[:2]>/<id>.*``) and its
artifacts (``<artifacts>/<id>/``) go together. "Last used" is the newest modification time of
those files; StudyStore.get touches the metadata file so reading a study counts as a use.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO

log = logging.getLogger(__name__)

_ID_RE = re.compile(r"^[0-9a-f]{64}$")
_QUOTA_LOCK = threading.Lock()


def private_dir(path: Path) -> Path:
    """Create ``path`` (and missing parents) owner-only (0700); an existing leaf is tightened to 0700.

    Parents that already exist are left alone (they may be a user's home or a shared mount)."""
    path = Path(path)
    missing = []
    p = path
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=0o700)
        except FileExistsError:
            pass
    try:
        if path.stat().st_uid == os.getuid() and (path.stat().st_mode & 0o077):
            path.chmod(0o700)
    except (OSError, AttributeError):  # AttributeError: os.getuid on Windows
        pass
    return path


def atomic_write(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    """Write through a unique temporary file (mkstemp: mode 0600) renamed into place (atomic)."""
    private_dir(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _groups(studies_dir: Path, artifacts_dir: Path | None) -> dict[str, list[Path]]:
    """Files per study id (both trees); temporary files of writers in progress are left out."""
    groups: dict[str, list[Path]] = {}
    if studies_dir.is_dir():
        for f in studies_dir.glob("??/*"):
            sid = f.name.split(".", 1)[0]
            if _ID_RE.match(sid) and f.is_file():
                groups.setdefault(sid, []).append(f)
    if artifacts_dir is not None and artifacts_dir.is_dir():
        for folder in artifacts_dir.iterdir():
            if folder.is_dir() and _ID_RE.match(folder.name):
                files = [f for f in folder.iterdir() if f.is_file() and not f.name.endswith(".tmp")]
                groups.setdefault(folder.name, []).extend(files)
                groups[folder.name].append(folder)  # the folder itself goes too
    return groups


def _stat(files: Iterable[Path]) -> tuple[int, float]:
    size, newest = 0, 0.0
    for f in files:
        try:
            st = f.stat()
        except OSError:
            continue
        if f.is_file():
            size += st.st_size
        newest = max(newest, st.st_mtime)
    return size, newest


def enforce_quota(
    studies_dir: Path, artifacts_dir: Path | None, quota_bytes: int, *, keep: Iterable[str] = ()
) -> list[str]:
    """Evict least recently used studies (with their artifacts) until the total is within quota.

    ``keep`` (the study just written or read) is never evicted, even if it alone exceeds the
    quota. Returns the evicted ids. quota_bytes <= 0 means no quota."""
    if quota_bytes <= 0:
        return []
    keep = set(keep)
    with _QUOTA_LOCK:
        groups = _groups(Path(studies_dir), Path(artifacts_dir) if artifacts_dir else None)
        stats = {sid: _stat(files) for sid, files in groups.items()}
        total = sum(size for size, _ in stats.values())
        evicted: list[str] = []
        for sid in sorted(stats, key=lambda s: stats[s][1]):  # oldest use first
            if total <= quota_bytes:
                break
            if sid in keep:
                continue
            _remove(groups[sid])
            total -= stats[sid][0]
            evicted.append(sid)
    if evicted:
        log.info("storage quota: evicted %d least recently used stud%s", len(evicted), "y" if len(evicted) == 1 else "ies")
    return evicted


def _remove(files: list[Path]) -> None:
    # the study's metadata (the store's commit marker) first, so readers stop seeing it at once
    for f in sorted(files, key=lambda p: (p.suffix != ".json", p.is_dir())):
        try:
            if f.is_dir():
                shutil.rmtree(f, ignore_errors=True)
            else:
                f.unlink(missing_ok=True)
        except OSError:
            pass


def touch(path: Path) -> None:
    """Mark a file as just used (its mtime drives eviction); silent if it cannot be touched."""
    try:
        os.utime(path)
    except OSError:
        pass
