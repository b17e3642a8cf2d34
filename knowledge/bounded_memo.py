"""A bounded, thread-safe least-recently-used memo with hit and miss counts.

Why one: the labeler's sentence memo and the reconciler's decision memo need the same thing (a fixed
size, safe under concurrent turns, counts a benchmark and tests can read) and differ only in their keys.
Bounded in entries AND in bytes: a server lives for weeks, and an entry count alone lets the memory grow
with the size of what is kept (long reports, decisions citing many calls) until the count is reached.
"""

from __future__ import annotations

import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from enum import Enum
from typing import Generic, TypeVar

V = TypeVar("V")

MIB = 2**20
_ATOMS = frozenset((str, bytes, bytearray, int, float, complex))
_SEQUENCES = frozenset((tuple, list, set, frozenset))
_SIZEOF = sys.getsizeof


def approx_bytes(obj: object) -> int:
    """An estimate of the memory ``obj`` holds: ``sys.getsizeof`` summed over everything it reaches
    (containers, NamedTuples, pydantic models and other objects' attributes), each object once; enum
    members, classes and None are shared by every value and count nothing. Over-counts interned strings,
    which keeps a byte bound on the safe side. Exact types first: it runs on every store."""
    seen: set[int] = set()
    stack = [obj]
    total = 0
    while stack:
        o = stack.pop()
        t = type(o)
        if t in _ATOMS:
            if id(o) not in seen:
                seen.add(id(o))
                total += _SIZEOF(o)
            continue
        if o is None or t is bool or id(o) in seen:
            continue
        seen.add(id(o))
        if t in _SEQUENCES:
            total += _SIZEOF(o)
            stack.extend(o)  # type: ignore[call-overload]
        elif t is dict:
            total += _SIZEOF(o)
            stack.extend(o.keys())  # type: ignore[attr-defined]
            stack.extend(o.values())  # type: ignore[attr-defined]
        elif isinstance(o, (Enum, type)):
            continue
        else:
            total += _SIZEOF(o)
            if isinstance(o, (tuple, list, set, frozenset)):  # NamedTuples and other subclasses
                stack.extend(o)
            elif isinstance(o, dict):
                stack.extend(o.keys())
                stack.extend(o.values())
            attrs = getattr(o, "__dict__", None)
            if attrs is not None:
                stack.append(attrs)
            else:
                stack.extend(getattr(o, name, None) for name in getattr(t, "__slots__", ()))
    return total


def _settings_mib() -> float:
    from cxr_agent.settings import get_settings

    return float(get_settings().memo_max_mib)


class BoundedMemo(Generic[V]):
    """key -> value; at most ``maxsize`` entries and ``max_mib`` MiB kept (key and value as
    ``approx_bytes`` counts them), the least recently used dropped first. ``max_mib=None`` reads
    ``Settings.memo_max_mib`` (``CXR_AGENT_MEMO_MAX_MIB``) when the first entry is stored."""

    def __init__(self, maxsize: int = 4096, max_mib: float | None = None,
                 sizeof: Callable[[object], int] = approx_bytes) -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize must be at least 1 (got {maxsize})")
        if max_mib is not None and not max_mib > 0:
            raise ValueError(f"max_mib must be above 0 (got {max_mib})")
        self.maxsize = maxsize
        self.max_mib = max_mib
        self.sizeof = sizeof
        self.hits = self.misses = 0
        self.nbytes = 0  # estimated bytes of every entry kept
        self._items: OrderedDict[Hashable, tuple[V, int]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    @property
    def max_bytes(self) -> int:
        if self.max_mib is None:
            self.max_mib = _settings_mib()
        return int(self.max_mib * MIB)

    def lookup(self, key: Hashable) -> V | None:
        with self._lock:
            found = self._items.get(key)
            if found is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return found[0]

    def entry_bytes(self, key: Hashable, value: V) -> int:
        """What one entry holds, as the byte bound counts it (a subclass leaves out what entries share)."""
        return self.sizeof(key) + self.sizeof(value)

    def store(self, key: Hashable, value: V) -> None:
        size = self.entry_bytes(key, value)
        limit = self.max_bytes
        if size > limit:  # larger than the whole memo: kept nowhere, recomputed when asked again
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self.nbytes -= old[1]
            self._items[key] = (value, size)
            self.nbytes += size
            while len(self._items) > self.maxsize or self.nbytes > limit:
                _, (_, dropped) = self._items.popitem(last=False)
                self.nbytes -= dropped

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.nbytes = 0
            self.hits = self.misses = 0
