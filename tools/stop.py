"""The reader's Stop, as the tools of the running turn see it.

A tool call runs on a pool worker that Python cannot kill, so a turn the reader stopped only ends its
tools if they look. Whoever runs the graph may put a ``threading.Event`` under ``STOP_KEY`` in the run's
``configurable``; the tool runner copies the run's context into every call, so ``turn_stop()`` finds it
from inside a tool (and None outside a run, or when no one can stop the turn). LangGraph keeps such an
object out of checkpoint metadata (only plain values are copied there) and a remote graph client drops
it before the config goes over the wire.
"""

from __future__ import annotations

import threading

STOP_KEY = "cxr_stop"


def turn_stop() -> threading.Event | None:
    """The running turn's stop event, when its caller gave one."""
    try:
        from langgraph.config import get_config

        config = get_config()
    except (ImportError, RuntimeError):  # outside a graph run
        return None
    found = (config.get("configurable") or {}).get(STOP_KEY)
    return found if isinstance(found, threading.Event) else None


class EitherEvent(threading.Event):
    """Set when it is set itself or any of ``others`` is: a call's own cancel joined to the turn's stop.
    Only ``is_set`` looks at the others (what the backends poll between tokens); ``wait`` does not."""

    def __init__(self, *others: threading.Event) -> None:
        super().__init__()
        self._others = others

    def is_set(self) -> bool:
        return super().is_set() or any(e.is_set() for e in self._others)


def with_turn_stop(cancel: threading.Event | None) -> threading.Event | None:
    """``cancel`` (a call's timeout), also set by the reader's Stop of the running turn when there is one."""
    stop = turn_stop()
    if stop is None:
        return cancel
    if cancel is None:
        return stop
    return EitherEvent(cancel, stop)
