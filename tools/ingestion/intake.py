"""The graph's one way in for images: decode, de-identify, store, and keep a few decoded studies.

The graph's ingest node, ``graph.store_image`` / ``graph.ingest_image`` and the UI all go through
one ``Studies`` object per graph, so a study the UI stores is the study the tools read. The store
(``tools.ingestion.store.StudyStore``) is opened on first use, so building a graph touches no disk; the
in-memory cache is small (``settings.study_cache_size``) because each decoded study holds
full-resolution pixels, and the tool branches of one turn share one decode.

A served graph (``accept_images=False``) takes no image at all, only a ``study_id`` stored through the
server's upload route: whatever writes the ``image`` channel (run input, a command, a state update),
nothing on the server's disk is read. In-process, a path is read only if it names a regular file,
its size checked on the open handle and the read bounded, so a device (``/dev/zero``) or a FIFO
never reaches a decoder or holds a decode slot.
"""

from __future__ import annotations

import os
import stat
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from tools.ingestion.study import CorruptFile, ImageTooLarge, StudyError

if TYPE_CHECKING:
    from cxr_agent.settings import Settings
    from tools.ingestion.study import Study


class ImageInputRefused(StudyError):
    """A served graph was handed an image (path or bytes) instead of an uploaded study's id."""


def read_image_file(path: str | os.PathLike[str], limit: int) -> bytes:
    """The bytes of the regular file at ``path``, at most ``limit`` of them (StudyError otherwise).

    Opened non-blocking, so a FIFO cannot stall the open; the type and size come from the open
    handle (``fstat``), so the file checked is the file read; the read stops at ``limit + 1`` bytes
    whatever the file claims. Messages never quote the path (it may carry a patient's name)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
    except (OSError, ValueError):
        raise CorruptFile("The file could not be opened: it does not exist or is not readable.") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise CorruptFile("That path is not a regular file (a device, pipe or folder); give an image file.")
    with os.fdopen(fd, "rb", buffering=0) as handle:
        if info.st_size > limit:
            raise ImageTooLarge(f"The file is {info.st_size / 2**20:.0f} MB; files above {limit // 2**20} MB are not read.")
        chunks, size = [], 0
        try:
            while size <= limit and (chunk := handle.read(min(1 << 20, limit + 1 - size))):
                chunks.append(chunk)
                size += len(chunk)
        except OSError:
            raise CorruptFile("The file could not be read.") from None
    if size > limit:  # it grew after the check
        raise ImageTooLarge(f"The file is larger than {limit // 2**20} MB.")
    return b"".join(chunks)


class Studies:
    """Study ingestion and lookup for one graph: a lazily opened store plus an LRU cache.

    accept_images=False (a served graph): ``ingest`` refuses every image; studies arrive by upload."""

    def __init__(self, settings: Settings, store: Any = None, *, accept_images: bool = True) -> None:
        self.settings = settings
        self.accept_images = accept_images
        self.cache_size = max(1, int(getattr(settings, "study_cache_size", 4)))
        self._store = store
        self._store_lock = threading.Lock()
        self._cache: OrderedDict[str, Study] = OrderedDict()
        self._cache_lock = threading.Lock()

    @property
    def store(self) -> Any:
        """The StudyStore (``StudyStore.from_settings`` unless one was given), opened on first use."""
        with self._store_lock:
            if self._store is None:
                from tools.ingestion.store import StudyStore

                self._store = StudyStore.from_settings(self.settings)
            return self._store

    def remember(self, study: Study, study_id: str | None = None) -> None:
        key = study_id or study.id
        with self._cache_lock:
            self._cache[key] = study
            self._cache.move_to_end(key)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)

    @property
    def cached(self) -> list[str]:
        """Ids held in memory, least recently used first."""
        with self._cache_lock:
            return list(self._cache)

    def get(self, study_id: str) -> Study:
        """The decoded study (memory cache, then the store). Raises KeyError if unknown."""
        with self._cache_lock:
            if study_id in self._cache:
                self._cache.move_to_end(study_id)
                return self._cache[study_id]
        study = self.store.get(study_id)
        self.remember(study, study_id)
        return study

    def put(self, study: Study, *, thread_id: str | None = None) -> str:
        """Store an already decoded Study; returns its id. ``thread_id``: the conversation the upload
        is for, which holds a pending reference on the study until its checkpoint references it
        (``tools.ingestion.pending``), so forgetting another conversation on the same image keeps it."""
        study_id = self.store.put(study)
        if thread_id is not None:
            from tools.ingestion.pending import hold

            hold(self.settings, study_id, thread_id)
        self.remember(study, study_id)
        return study_id

    def ingest(self, source: Any, *, filename: str | None = None,
               thread_id: str | None = None) -> tuple[str, Study]:
        """Decode and de-identify ``source`` (path or bytes), store it (for conversation ``thread_id``,
        as ``put``); returns (study id, Study). Raises tools.ingestion.study.StudyError for a file that
        cannot be used (ImageInputRefused when this graph takes no images)."""
        from tools.ingestion.loader import MAX_FILE_BYTES, load_study

        if not self.accept_images:
            raise ImageInputRefused("this server takes images only as uploads (POST /cxr/studies); "
                                    "pass the study_id the upload returned")
        if isinstance(source, str | os.PathLike):
            filename = filename or os.path.basename(os.fspath(source))
            source = read_image_file(source, MAX_FILE_BYTES)  # before a decode slot is taken
        study = load_study(source, filename=filename, settings=self.settings)  # the graph's limits and policies
        return self.put(study, thread_id=thread_id), study
