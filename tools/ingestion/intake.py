"""The graph's one way in for images: decode, de-identify, store, and keep a few decoded studies.

The graph's ingest node, ``graph.store_image`` / ``graph.ingest_image`` and the UI all go through
one ``Studies`` object per graph, so a study the UI stores is the study the tools read. The store
(``tools.ingestion.store.StudyStore``) is opened on first use, so building a graph touches no disk; the
in-memory cache is small (``settings.study_cache_size``) because each decoded study holds
full-resolution pixels, and the tool branches of one turn share one decode.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cxr_agent.settings import Settings
    from tools.ingestion.study import Study


class Studies:
    """Study ingestion and lookup for one graph: a lazily opened store plus an LRU cache."""

    def __init__(self, settings: Settings, store: Any = None) -> None:
        self.settings = settings
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

    def put(self, study: Study) -> str:
        """Store an already decoded Study; returns its id."""
        study_id = self.store.put(study)
        self.remember(study, study_id)
        return study_id

    def ingest(self, source: Any, *, filename: str | None = None) -> tuple[str, Study]:
        """Decode and de-identify ``source`` (path or bytes), store it; returns (study id, Study).
        Raises tools.ingestion.study.StudyError for a file that cannot be used."""
        from tools.ingestion.loader import load_study

        study = load_study(source, filename=filename, settings=self.settings)  # the graph's limits and policies
        return self.put(study), study
