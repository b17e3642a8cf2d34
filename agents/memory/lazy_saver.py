"""A checkpointer that opens its database on first use, so ``import graph`` touches no disk.

The module-level ``graph`` (``from graph import graph``, langgraph.json) is compiled at import;
compiling with a real SqliteSaver/PostgresSaver would create and lock the database file at once,
in every process that merely imports the module (the CLI's other commands, the test collector,
the UI's import of ``graph.store_image``). ``LazySaver`` is a BaseCheckpointSaver whose every method
first builds the real saver with the given factory (once, thread-safe) and then delegates to it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver

_DELEGATED = (
    "get", "get_tuple", "list", "put", "put_writes", "delete_thread", "delete_for_runs", "copy_thread", "prune",
    "aget", "aget_tuple", "alist", "aput", "aput_writes", "adelete_thread", "adelete_for_runs", "acopy_thread",
    "aprune", "get_delta_channel_history", "aget_delta_channel_history", "get_next_version",
)


class LazySaver(BaseCheckpointSaver):
    """Delegates to ``factory()``'s saver, created on the first checkpoint operation."""

    def __init__(self, factory: Callable[[], BaseCheckpointSaver]) -> None:
        # BaseCheckpointSaver.__init__ would set self.serde, which here means opening the saver.
        self._factory = factory
        self._saver: BaseCheckpointSaver | None = None
        self._lock = threading.Lock()
        self._allowlist: list[Collection[tuple[str, ...]]] = []

    @property
    def opened(self) -> bool:
        """Whether the real saver (and its database) exists yet."""
        return self._saver is not None

    @property
    def saver(self) -> BaseCheckpointSaver:
        """The real saver, created on first access."""
        if self._saver is None:
            with self._lock:
                if self._saver is None:
                    saver = self._factory()
                    for extra in self._allowlist:
                        saver = saver.with_allowlist(extra)
                    self._saver = saver
        return self._saver

    @property  # type: ignore[override]
    def serde(self) -> Any:
        return self.saver.serde

    @serde.setter
    def serde(self, value: Any) -> None:
        self.saver.serde = value

    def with_allowlist(self, extra_allowlist: Collection[tuple[str, ...]]) -> LazySaver:
        """LangGraph's strict-msgpack compile step: applied to the real saver when it is made."""
        if self._saver is not None:
            clone = LazySaver(lambda: self._saver.with_allowlist(extra_allowlist))  # type: ignore[union-attr]
            return clone
        clone = LazySaver(self._factory)
        clone._allowlist = [*self._allowlist, extra_allowlist]
        return clone

    def __getattr__(self, item: str) -> Any:  # anything a concrete saver adds (conn, setup, ...)
        if item.startswith("_"):
            raise AttributeError(item)
        return getattr(self.saver, item)

    def __repr__(self) -> str:
        return f"LazySaver({'open: ' + type(self._saver).__name__ if self._saver is not None else 'not opened'})"


def _delegate(name: str) -> Callable[..., Any]:
    def method(self: LazySaver, *args: Any, **kwargs: Any) -> Any:
        return getattr(self.saver, name)(*args, **kwargs)

    method.__name__ = name
    method.__doc__ = f"BaseCheckpointSaver.{name} of the real saver (opened on first use)."
    return method


for _name in _DELEGATED:
    setattr(LazySaver, _name, _delegate(_name))
