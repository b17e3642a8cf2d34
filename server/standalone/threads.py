"""Threads and runs as Postgres rows: who owns them, their status, and the values a search extracts.

Checkpoints live in LangGraph's own Postgres tables (the saver); these two tables hold what the
HTTP API lists and filters: a thread's metadata (``owner``, server/auth.py), status, timestamps and
its latest values (so ``POST /threads/search`` can ``extract`` a study id without reading
checkpoints), and each run's status (``run_rows.py`` creates both tables and keeps the run queue in
them). Access is synchronous (psycopg pool); callers run it off the
event loop.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from uuid import UUID

from psycopg_pool import ConnectionPool

from server.standalone.wire import jsonb

SCHEMA = """
CREATE TABLE IF NOT EXISTS cxr_threads (
    thread_id uuid PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    metadata jsonb NOT NULL DEFAULT '{}',
    status text NOT NULL DEFAULT 'idle',
    "values" jsonb
);
CREATE INDEX IF NOT EXISTS cxr_threads_owner ON cxr_threads ((metadata->>'owner'));
CREATE TABLE IF NOT EXISTS cxr_runs (
    run_id uuid PRIMARY KEY,
    thread_id uuid NOT NULL REFERENCES cxr_threads(thread_id) ON DELETE CASCADE,
    assistant_id text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    status text NOT NULL DEFAULT 'pending',
    metadata jsonb NOT NULL DEFAULT '{}',
    multitask_strategy text NOT NULL DEFAULT 'enqueue',
    error text
);
CREATE INDEX IF NOT EXISTS cxr_runs_thread ON cxr_runs (thread_id, created_at);
"""
THREAD_FIELDS = ("thread_id", "created_at", "updated_at", "metadata", "status", "values")
RUN_FIELDS = ("run_id", "thread_id", "assistant_id", "created_at", "updated_at", "status", "metadata",
              "multitask_strategy", "error")
SORTS = ("thread_id", "status", "created_at", "updated_at")
STATUSES = ("idle", "busy", "interrupted", "error")
_PATH = re.compile(r"^[A-Za-z0-9_]{1,64}(\.[A-Za-z0-9_]{1,64}){0,7}$")


class BadQuery(ValueError):
    """A search the API cannot answer; the message names the field."""


def parse_id(value: Any) -> UUID | None:
    try:
        return UUID(str(value))
    except ValueError:
        return None


def _thread(row: Mapping[str, Any], fields: tuple[str, ...] = THREAD_FIELDS) -> dict[str, Any]:
    out = {k: row[k] for k in fields if k in row}
    for k in ("thread_id",):
        if k in out:
            out[k] = str(out[k])
    for k in ("created_at", "updated_at"):
        if out.get(k) is not None:
            out[k] = out[k].isoformat()
    if "values" in fields:
        out["values"] = out.get("values") or {}
        out.setdefault("interrupts", {})
    return out


def run_dict(row: Mapping[str, Any]) -> dict[str, Any]:
    """A run's row as LangGraph Server answers it (its input is not sent back)."""
    out = {k: row[k] for k in RUN_FIELDS}
    out["run_id"], out["thread_id"] = str(out["run_id"]), str(out["thread_id"])
    out["created_at"], out["updated_at"] = out["created_at"].isoformat(), out["updated_at"].isoformat()
    out["kwargs"] = {}
    return out


def _owner_clause(filters: Mapping[str, Any] | None, alias: str = "") -> tuple[str, list[Any]]:
    """The auth handler's filter (``{"owner": id}``, or None for the service) as SQL."""
    if not filters:
        return "TRUE", []
    return f"{alias}metadata @> %s", [jsonb(dict(filters))]


class ThreadTable:
    """The threads and runs tables over a connection pool."""

    def __init__(self, pool: ConnectionPool) -> None:
        self.pool = pool

    # --- threads ---------------------------------------------------------------------------------
    def create(self, thread_id: UUID, metadata: dict[str, Any], *, if_exists: str = "raise") -> dict[str, Any] | None:
        """The new thread, the existing one (``if_exists="do_nothing"``), or None when it exists."""
        with self.pool.connection() as conn:
            row = conn.execute("INSERT INTO cxr_threads (thread_id, metadata) VALUES (%s, %s) "
                               "ON CONFLICT (thread_id) DO NOTHING RETURNING *", (thread_id, jsonb(metadata))).fetchone()
            if row is None and if_exists == "do_nothing":
                row = conn.execute("SELECT * FROM cxr_threads WHERE thread_id = %s AND metadata @> %s",
                                   (thread_id, jsonb({k: v for k, v in metadata.items() if k == "owner"}))).fetchone()
        return _thread(row) if row else None

    def get(self, thread_id: UUID, filters: Mapping[str, Any] | None) -> dict[str, Any] | None:
        clause, args = _owner_clause(filters)
        with self.pool.connection() as conn:
            row = conn.execute(f"SELECT * FROM cxr_threads WHERE thread_id = %s AND {clause}",
                               (thread_id, *args)).fetchone()
        return _thread(row) if row else None

    def exists(self, thread_id: UUID) -> bool:
        with self.pool.connection() as conn:
            return conn.execute("SELECT 1 FROM cxr_threads WHERE thread_id = %s", (thread_id,)).fetchone() is not None

    def delete(self, thread_id: UUID, filters: Mapping[str, Any] | None) -> bool:
        clause, args = _owner_clause(filters)
        with self.pool.connection() as conn:
            return conn.execute(f"DELETE FROM cxr_threads WHERE thread_id = %s AND {clause} RETURNING 1",
                                (thread_id, *args)).fetchone() is not None

    def patch_metadata(self, thread_id: UUID, metadata: dict[str, Any]) -> None:
        with self.pool.connection() as conn:
            conn.execute("UPDATE cxr_threads SET metadata = metadata || %s, updated_at = now() WHERE thread_id = %s",
                         (jsonb(metadata), thread_id))

    def set_status(self, thread_id: UUID, status: str, values: Any = None) -> None:
        """A thread's status, and its latest values when a turn has written them (JSON, already plain)."""
        with self.pool.connection() as conn:
            write_status(conn, thread_id, status, values)

    def search(self, filters: Mapping[str, Any] | None, body: Mapping[str, Any]) -> list[dict[str, Any]]:
        """``POST /threads/search``: metadata/status/ids filters, sort, page, ``select`` and ``extract``."""
        where, args = [], []
        clause, owner_args = _owner_clause(filters)
        where.append(clause)
        args += owner_args
        metadata = body.get("metadata")
        if metadata:
            if not isinstance(metadata, dict):
                raise BadQuery("metadata must be an object")
            where.append("metadata @> %s")
            args.append(jsonb(metadata))
        status = body.get("status")
        if status is not None:
            if status not in STATUSES:
                raise BadQuery(f"status must be one of {', '.join(STATUSES)}")
            where.append("status = %s")
            args.append(status)
        ids = body.get("ids")
        if ids is not None:
            parsed = [parse_id(i) for i in ids] if isinstance(ids, list) else [None]
            if any(p is None for p in parsed):
                raise BadQuery("ids must be a list of thread UUIDs")
            where.append("thread_id = ANY(%s)")
            args.append(parsed)
        sort_by = body.get("sort_by") or "created_at"
        if sort_by not in SORTS:
            raise BadQuery(f"sort_by must be one of {', '.join(SORTS)}")
        order = str(body.get("sort_order") or "desc").lower()
        if order not in ("asc", "desc"):
            raise BadQuery("sort_order must be 'asc' or 'desc'")
        limit, offset = body.get("limit", 10), body.get("offset", 0)
        if not isinstance(limit, int) or not 1 <= limit <= 1000 or not isinstance(offset, int) or offset < 0:
            raise BadQuery("limit must be 1-1000 and offset a whole number >= 0")
        select = tuple(body.get("select") or THREAD_FIELDS)
        unknown = [f for f in select if f not in THREAD_FIELDS]
        if unknown:
            raise BadQuery(f"select may name only {', '.join(THREAD_FIELDS)} (got {unknown[0]!r})")
        extract = body.get("extract") or {}
        if not isinstance(extract, dict) or len(extract) > 10:
            raise BadQuery("extract must map at most 10 names to paths")
        columns = ", ".join(f'"{f}"' if f == "values" else f for f in dict.fromkeys(("thread_id", *select)))
        pieces: list[str] = []
        extract_args: list[Any] = []
        for name, path in extract.items():
            if not isinstance(path, str) or not _PATH.match(path) or path.split(".")[0] not in ("values", "metadata"):
                raise BadQuery(f"extract path {path!r} must be values.<key>[.<key>...] or metadata.<key>...")
            root, *keys = path.split(".")
            pieces.append(f'%s::text, "{root}" #> %s::text[]')
            extract_args += [str(name), keys]
        extract_sql = f", jsonb_build_object({', '.join(pieces)}) AS extracted" if pieces else ""
        sql = (f"SELECT {columns}{extract_sql} FROM cxr_threads WHERE {' AND '.join(where)} "
               f"ORDER BY {sort_by} {order}, thread_id LIMIT %s OFFSET %s")
        with self.pool.connection() as conn:
            rows = conn.execute(sql, (*extract_args, *args, limit, offset)).fetchall()
        out = []
        for row in rows:
            item = _thread(row, select)
            if pieces:
                item["extracted"] = row["extracted"]
            out.append(item)
        return out

    # --- runs ------------------------------------------------------------------------------------
    def get_run(self, thread_id: UUID, run_id: UUID) -> dict[str, Any] | None:
        with self.pool.connection() as conn:
            row = conn.execute("SELECT * FROM cxr_runs WHERE thread_id = %s AND run_id = %s",
                               (thread_id, run_id)).fetchone()
        return run_dict(row) if row else None

    def list_runs(self, thread_id: UUID, limit: int, offset: int) -> list[dict[str, Any]]:
        with self.pool.connection() as conn:
            rows = conn.execute("SELECT * FROM cxr_runs WHERE thread_id = %s ORDER BY created_at DESC, seq DESC "
                                "LIMIT %s OFFSET %s", (thread_id, limit, offset)).fetchall()
        return [run_dict(r) for r in rows]


def write_status(conn: Any, thread_id: UUID, status: str, values: Any = None) -> None:
    """Set a thread's status (and its latest values, when given) on ``conn``, inside the caller's transaction."""
    if values is None:
        conn.execute("UPDATE cxr_threads SET status = %s, updated_at = now() WHERE thread_id = %s",
                     (status, thread_id))
    else:
        conn.execute('UPDATE cxr_threads SET status = %s, "values" = %s, updated_at = now() '
                     "WHERE thread_id = %s", (status, jsonb(values), thread_id))
