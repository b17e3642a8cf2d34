"""Where conversations live: a LangGraph checkpointer chosen by ``settings.resolved_checkpointer_url``.

``memory`` -> InMemorySaver (one process); ``sqlite:///path.db`` -> SqliteSaver (the default: a
file under the data dir, survives restarts); ``postgresql://...`` -> PostgresSaver (several app
instances sharing threads; optional extra ``cxr-agent[postgres]``).

Every saver gets a serializer that explicitly allows the evidence types stored in the state,
so a restarted process loads them without LangGraph's "unregistered type" warning (and still
loads them under ``LANGGRAPH_STRICT_MSGPACK=true``). It also encodes those types on a fast path
(see ``CheckpointSerializer``): the bytes are exactly JsonPlusSerializer's, so checkpoints written
before or after load the same way.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ormsgpack
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.serde import jsonplus
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

from knowledge.evidence import Artifact, Box, Decision, Evidence, FindingCall, RetrievedReport, Status

if TYPE_CHECKING:
    from cxr_agent.settings import Settings

CHECKPOINT_TYPES: tuple[type, ...] = (Status, Box, FindingCall, RetrievedReport, Artifact, Evidence, Decision)


class CheckpointerError(RuntimeError):
    """The configured checkpointer URL cannot be used; the message names the fix."""


_MODELS = {t: (t.__module__, t.__name__) for t in CHECKPOINT_TYPES if t is not Status}
# Status members as JsonPlusSerializer encodes an Enum (module, name, value), packed once.
_STATUS_EXT = {
    s: ormsgpack.Ext(jsonplus.EXT_CONSTRUCTOR_SINGLE_ARG, ormsgpack.packb((Status.__module__, Status.__name__, s.value)))
    for s in Status
}


def _default(obj: Any) -> Any:
    """JsonPlusSerializer's msgpack hook with our types dispatched first (same bytes, less work)."""
    cls = type(obj)
    key = _MODELS.get(cls)
    if key is not None:
        payload = (*key, obj.model_dump(), "model_validate_json")
        return ormsgpack.Ext(jsonplus.EXT_PYDANTIC_V2, ormsgpack.packb(payload, default=_default, option=jsonplus._option))
    if cls is Status:
        return _STATUS_EXT[obj]
    return jsonplus._msgpack_default(obj)


class CheckpointSerializer(JsonPlusSerializer):
    """JsonPlusSerializer whose msgpack encoder handles the evidence types first.

    Every checkpoint of a turn re-encodes the updated channels (evidence, decisions, last_result,
    messages), i.e. about a hundred FindingCalls and Status values. The stock hook walks a chain of
    ``hasattr`` tests and packs every Status member anew; dispatching on the exact type and packing
    Status once roughly halves that cost. Output is byte-identical to JsonPlusSerializer's, and
    loading is JsonPlusSerializer's own.
    """

    def dumps_typed(self, obj: Any) -> tuple[str, bytes]:
        if obj is None or isinstance(obj, bytes | bytearray):
            return super().dumps_typed(obj)
        try:
            return "msgpack", ormsgpack.packb(obj, default=_default, option=jsonplus._option)
        except ormsgpack.MsgpackEncodeError:
            return super().dumps_typed(obj)  # its own error / pickle fallback


def serializer() -> JsonPlusSerializer:
    """The checkpoint serializer: evidence types on the msgpack allowlist, encoded on a fast path."""
    return CheckpointSerializer(allowed_msgpack_modules=[(t.__module__, t.__name__) for t in CHECKPOINT_TYPES])


def sqlite_path(url: str) -> str:
    """``sqlite:///rel.db`` -> ``rel.db``; ``sqlite:////abs/x.db`` -> ``/abs/x.db``; ``sqlite:///:memory:``."""
    if not url.startswith("sqlite:///"):
        raise CheckpointerError(f"not a sqlite URL: {url!r} (expected sqlite:///path/to/file.db)")
    path = url[len("sqlite:///") :]
    if not path:
        raise CheckpointerError("sqlite URL has no path: use sqlite:///path/to/checkpoints.sqlite")
    return path


def make_checkpointer(settings: Settings | None = None, *, url: str | None = None) -> BaseCheckpointSaver:
    """Build the checkpointer for ``url`` (default: ``settings.resolved_checkpointer_url``)."""
    if url is None:
        if settings is None:
            from cxr_agent.settings import get_settings

            settings = get_settings()
        url = settings.resolved_checkpointer_url
    url = url.strip()
    if url == "memory":
        from langgraph.checkpoint.memory import InMemorySaver

        return InMemorySaver(serde=serializer())
    if url.startswith("sqlite:"):
        from langgraph.checkpoint.sqlite import SqliteSaver

        path = sqlite_path(url)
        if path != ":memory:":
            Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)
            path = str(Path(path).expanduser())
        # The graph runs nodes in worker threads; SqliteSaver serialises access with its own lock.
        conn = sqlite3.connect(path, check_same_thread=False)
        saver = SqliteSaver(conn, serde=serializer())
        saver.setup()
        return saver
    if url.startswith(("postgresql://", "postgres://")):
        try:
            from langgraph.checkpoint.postgres import PostgresSaver
            from psycopg import Connection
            from psycopg.rows import dict_row
        except ImportError as exc:
            raise CheckpointerError(
                f"checkpointer URL {url.split('@')[-1]!r} needs the Postgres saver, which is not installed: "
                "run `pip install cxr-agent[postgres]`"
            ) from exc
        try:
            conn = Connection.connect(url, autocommit=True, prepare_threshold=0, row_factory=dict_row)
        except Exception as exc:
            raise CheckpointerError(f"cannot connect to the Postgres checkpointer: {exc}") from exc
        saver = PostgresSaver(conn, serde=serializer())
        saver.setup()
        return saver
    raise CheckpointerError(
        f"unsupported checkpointer URL {url!r}: use 'memory', 'sqlite:///path.db' or 'postgresql://...' "
        "(CXR_AGENT_CHECKPOINTER_URL)"
    )
