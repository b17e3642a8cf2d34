"""Graph values as the JSON LangGraph Server sends: messages as their dicts, models dumped, sets listed."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from datetime import date, datetime
from enum import Enum
from pathlib import PurePath
from typing import Any
from uuid import UUID

import orjson
from psycopg.types.json import Jsonb

_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


def _default(obj: Any) -> Any:
    if hasattr(obj, "model_dump"):  # pydantic models, LangChain messages
        return obj.model_dump(mode="json")
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    if isinstance(obj, Mapping):
        return dict(obj)
    if isinstance(obj, (datetime, date)):
        return obj.isoformat()
    if isinstance(obj, (UUID, PurePath)):
        return str(obj)
    if isinstance(obj, Enum):
        return obj.value
    if isinstance(obj, (bytes, bytearray)):
        return None  # state holds no pixels; a stray buffer is not sent
    if hasattr(obj, "_asdict"):
        return obj._asdict()
    raise TypeError(f"cannot send a {type(obj).__name__} as JSON")


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj, default=_default, option=_OPTIONS)


_NUL = re.compile(rb"(?<!\\)((?:\\\\)*)\\u0000")


def jsonb(obj: Any) -> Jsonb:
    """``obj`` for a Postgres ``jsonb`` parameter. jsonb refuses the NUL character, and its error quotes
    the document (a conversation) into the server's log: a NUL is sent as U+FFFD instead."""
    return Jsonb(obj, dumps=lambda o: _NUL.sub(rb"\1\\ufffd", dumps(o)).decode())


def plain(obj: Any) -> Any:
    """``obj`` as plain JSON types (what a client would read back)."""
    return orjson.loads(dumps(obj))


def checkpoint_ref(config: Mapping[str, Any] | None, thread_id: str) -> dict[str, Any]:
    conf = dict((config or {}).get("configurable") or {})
    return {"thread_id": str(conf.get("thread_id") or thread_id), "checkpoint_ns": conf.get("checkpoint_ns", ""),
            "checkpoint_id": conf.get("checkpoint_id"), "checkpoint_map": conf.get("checkpoint_map")}


def state_dict(snapshot: Any, thread_id: str) -> dict[str, Any]:
    """A ``StateSnapshot`` as ``GET /threads/{id}/state`` answers it (what ``RemoteGraph`` rebuilds)."""
    parent = getattr(snapshot, "parent_config", None)
    tasks = [{"id": t.id, "name": t.name, "path": list(getattr(t, "path", ()) or ()),
              "error": None if t.error is None else repr(t.error),
              "interrupts": [plain(i) for i in t.interrupts], "checkpoint": None, "state": None,
              "result": plain(getattr(t, "result", None))} for t in snapshot.tasks]
    checkpoint = checkpoint_ref(snapshot.config, thread_id)
    return {"values": plain(snapshot.values), "next": list(snapshot.next), "tasks": tasks,
            "metadata": plain(snapshot.metadata or {}), "created_at": snapshot.created_at,
            "checkpoint": checkpoint, "checkpoint_id": checkpoint["checkpoint_id"],
            "parent_checkpoint": checkpoint_ref(parent, thread_id) if parent else None,
            "interrupts": [plain(i) for i in getattr(snapshot, "interrupts", ())]}


def empty_state(thread_id: str) -> dict[str, Any]:
    """The state of a thread no turn has run on yet."""
    return {"values": {}, "next": [], "tasks": [], "metadata": {}, "created_at": None,
            "checkpoint": {"thread_id": thread_id, "checkpoint_ns": "", "checkpoint_id": None, "checkpoint_map": None},
            "checkpoint_id": None, "parent_checkpoint": None, "interrupts": []}
