"""Where conversations live: a LangGraph checkpointer chosen by ``settings.resolved_checkpointer_url``.

``memory`` -> InMemorySaver (one process); ``sqlite:///path.db`` -> SqliteSaver (the default: a
file under the data dir, survives restarts); ``postgresql://...`` -> PostgresSaver (several app
instances sharing threads; optional extra ``cxr-agent[postgres]``).

Every saver gets a serializer that explicitly allows the evidence types stored in the state,
so a restarted process loads them without LangGraph's "unregistered type" warning (and still
loads them under ``LANGGRAPH_STRICT_MSGPACK=true``).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

from knowledge.evidence import Artifact, Box, Decision, Evidence, FindingCall, RetrievedReport, Status

if TYPE_CHECKING:
    from cxr_agent.settings import Settings

CHECKPOINT_TYPES: tuple[type, ...] = (Status, Box, FindingCall, RetrievedReport, Artifact, Evidence, Decision)


class CheckpointerError(RuntimeError):
    """The configured checkpointer URL cannot be used; the message names the fix."""


def serializer() -> JsonPlusSerializer:
    """JsonPlusSerializer with the evidence types on the msgpack allowlist."""
    return JsonPlusSerializer(allowed_msgpack_modules=[(t.__module__, t.__name__) for t in CHECKPOINT_TYPES])


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
