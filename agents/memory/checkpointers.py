"""Where conversations live: a LangGraph checkpointer chosen by ``settings.resolved_checkpointer_url``.

``memory`` -> InMemorySaver (one process); ``sqlite:///path.db`` -> SqliteSaver (the default: a
file under the data dir, survives restarts); ``postgresql://...`` -> PostgresSaver (several app
instances sharing threads; optional extra ``cxr-agent[postgres]``).

Every saver gets a serializer that explicitly allows the evidence types stored in the state,
so a restarted process loads them without LangGraph's "unregistered type" warning (and still
loads them under ``LANGGRAPH_STRICT_MSGPACK=true``). It also encodes those types on a fast path
(see ``CheckpointSerializer``): the bytes are exactly JsonPlusSerializer's, so checkpoints written
before or after load the same way.

Every saver is also made a *scrubbing* saver (``scrubbing``): LangGraph records a run's raw input
in its first checkpoint (``source: input``), and that input may carry the uploaded bytes
(``image``: a DICOM whose header names the patient) or a path/file name (``image_name``). The
scrubbing subclass drops those keys before anything is written, for every backend alike. The
SQLite file is created owner-only (0600) with ``secure_delete`` on, so deleted conversations are
overwritten rather than left in free pages (see agents/memory/retention.py).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ormsgpack
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.serde import jsonplus
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

from agents.memory.ledger import Ask, EarlierStudy, LedgerEntry, LedgerKey, StudyLedger
from agents.routing.rules import Clarify, Reading, Route
from knowledge.bounded_memo import BoundedMemo
from knowledge.evidence import Artifact, Box, Decision, Evidence, FindingCall, Reason, RetrievedReport, Status

if TYPE_CHECKING:
    from cxr_agent.settings import Settings

# Every type the state holds (``agents.state.CxrState``), so strict deserialization
# (``LANGGRAPH_STRICT_MSGPACK=true``) loads them all; tests/graph/test_graph_memory.py checks the list.
CHECKPOINT_TYPES: tuple[type, ...] = (Status, Box, FindingCall, RetrievedReport, Artifact, Evidence, Reason, Decision,
                                      Ask, LedgerKey, LedgerEntry, StudyLedger, EarlierStudy, Reading, Clarify, Route)


class CheckpointerError(RuntimeError):
    """The configured checkpointer URL cannot be used; the message names the fix."""


_MODELS = {t: (t.__module__, t.__name__) for t in CHECKPOINT_TYPES if t is not Status}
# Status members as JsonPlusSerializer encodes an Enum (module, name, value), packed once.
_STATUS_EXT = {
    s: ormsgpack.Ext(jsonplus.EXT_CONSTRUCTOR_SINGLE_ARG, ormsgpack.packb((Status.__module__, Status.__name__, s.value)))
    for s in Status
}


class _DecisionEncodings(BoundedMemo[tuple[Decision, bytes]]):
    """The packed encoding of each Decision recently written, by identity (``get``/``put``); bounded.

    Why: the ``decisions`` channel is written whole by every reconciling turn, yet the reconciler's memo
    hands back the very same Decision objects for every finding whose calls did not change (Decision is
    frozen), so a turn encodes only the decisions it changed. Each entry keeps its Decision alive, so an id is
    never another object's while its entry exists."""

    def __init__(self, maxsize: int = 512) -> None:
        super().__init__(maxsize)

    def entry_bytes(self, key: Hashable, value: tuple[Decision, bytes]) -> int:
        return len(value[1])  # the Decision itself is the state's and the reconciler's memo's, held there anyway

    def get(self, decision: Decision) -> bytes | None:
        hit = self.lookup(id(decision))
        return hit[1] if hit is not None and hit[0] is decision else None

    def put(self, decision: Decision, packed: bytes) -> None:
        self.store(id(decision), (decision, packed))


DECISION_ENCODINGS = _DecisionEncodings()


def _packed(obj: Any, key: tuple[str, str]) -> bytes:
    return ormsgpack.packb((*key, obj.model_dump(), "model_validate_json"), default=_default, option=jsonplus._option)


def _encode(obj: Any, key: tuple[str, str]) -> ormsgpack.Ext:
    return ormsgpack.Ext(jsonplus.EXT_PYDANTIC_V2, _packed(obj, key))


def _default(obj: Any) -> Any:
    """JsonPlusSerializer's msgpack hook with our types dispatched first (same bytes, less work)."""
    cls = type(obj)
    if cls is Decision:
        packed = DECISION_ENCODINGS.get(obj)
        if packed is None:
            packed = _packed(obj, _MODELS[Decision])
            DECISION_ENCODINGS.put(obj, packed)
        return ormsgpack.Ext(jsonplus.EXT_PYDANTIC_V2, packed)
    key = _MODELS.get(cls)
    if key is not None:
        return _encode(obj, key)
    if cls is Status:
        return _STATUS_EXT[obj]
    return jsonplus._msgpack_default(obj)


class CheckpointSerializer(JsonPlusSerializer):
    """JsonPlusSerializer whose msgpack encoder handles the evidence types first.

    Every checkpoint of a turn re-encodes the updated channels (evidence, decisions, last_result,
    messages), i.e. about a hundred FindingCalls and Status values. The stock hook walks a chain of
    ``hasattr`` tests and packs every Status member anew; dispatching on the exact type and packing
    Status once roughly halves that cost, and a Decision already encoded is not encoded again
    (``DECISION_ENCODINGS``). Output is byte-identical to JsonPlusSerializer's, and loading is
    JsonPlusSerializer's own.
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


# --- keeping the raw input out of storage ----------------------------------------------------------
SCRUBBED_KEYS = frozenset({"image", "image_name"})
"""Input keys never persisted: raw image bytes or a path, and the uploaded file's name (PHI)."""


def scrub_input(value: Any) -> Any:
    """``value`` without the SCRUBBED_KEYS: a mapping or a pydantic/dataclass input, copied, never
    mutated (the running graph still reads the original). Anything else is returned unchanged."""
    if isinstance(value, dict):
        if SCRUBBED_KEYS.isdisjoint(value):
            return value
        return {k: v for k, v in value.items() if k not in SCRUBBED_KEYS}
    if hasattr(value, "model_dump") and hasattr(value, "model_copy"):  # a typed (pydantic) input
        present = [k for k in SCRUBBED_KEYS if getattr(value, k, None) is not None]
        return value.model_copy(update=dict.fromkeys(present)) if present else value
    return value


def _scrub_checkpoint(checkpoint: Any) -> Any:
    values = checkpoint.get("channel_values") if isinstance(checkpoint, dict) else None
    if not values or not (SCRUBBED_KEYS.intersection(values) or "__start__" in values):
        return checkpoint
    clean = {k: v for k, v in values.items() if k not in SCRUBBED_KEYS}
    if "__start__" in clean:
        clean["__start__"] = scrub_input(clean["__start__"])
    return {**checkpoint, "channel_values": clean}


def _scrub_writes(writes: Sequence[tuple[str, Any]]) -> list[tuple[str, Any]]:
    return [(ch, scrub_input(v) if ch == "__start__" else v) for ch, v in writes if ch not in SCRUBBED_KEYS]


_SCRUBBING_CLASSES: dict[type, type] = {}


def scrubbing_class(base: type) -> type:
    """The subclass of checkpointer class ``base`` that drops ``image``/``image_name`` on write.

    Where the raw input lands: the ``__start__`` channel of the run's first checkpoint, and the
    writes of the ``__start__`` task (``image``/``image_name`` are untracked channels, so nodes
    never write them). Both are filtered in ``put``/``put_writes`` and their async twins. The
    subclass adds no instance layout, so an existing saver can be switched to it (``scrubbing``).
    """
    if getattr(base, "_cxr_scrubbing", False):
        return base
    sub = _SCRUBBING_CLASSES.get(base)
    if sub is not None:
        return sub

    def put(self, config, checkpoint, metadata, new_versions):
        return base.put(self, config, _scrub_checkpoint(checkpoint), metadata, new_versions)

    def put_writes(self, config, writes, task_id, task_path=""):
        return base.put_writes(self, config, _scrub_writes(writes), task_id, task_path)

    async def aput(self, config, checkpoint, metadata, new_versions):
        return await base.aput(self, config, _scrub_checkpoint(checkpoint), metadata, new_versions)

    async def aput_writes(self, config, writes, task_id, task_path=""):
        return await base.aput_writes(self, config, _scrub_writes(writes), task_id, task_path)

    namespace = {"put": put, "put_writes": put_writes, "aput": aput, "aput_writes": aput_writes,
                 "_cxr_scrubbing": True, "__module__": __name__, "__doc__": scrubbing_class.__doc__}
    if "__slots__" in vars(base):
        namespace["__slots__"] = ()
    sub = _SCRUBBING_CLASSES[base] = type(f"Scrubbing{base.__name__}", (base,), namespace)
    return sub


def scrubbing(saver: BaseCheckpointSaver) -> BaseCheckpointSaver:
    """Make ``saver`` (any BaseCheckpointSaver, e.g. one a caller passes to build_graph) drop the
    raw image input before writing. Idempotent; the saver keeps its class's API (it becomes an
    instance of a subclass), so ``isinstance(saver, SqliteSaver)`` still holds."""
    saver.__class__ = scrubbing_class(type(saver))
    return saver


def private_file(path: Path) -> None:
    """Create ``path`` owner-only (0600) if absent, or tighten it if it exists."""
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    os.close(fd)
    os.chmod(path, 0o600)


def private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) and make the leaf owner-only (0700)."""
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


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

        return scrubbing(InMemorySaver(serde=serializer()))
    if url.startswith("sqlite:"):
        from langgraph.checkpoint.sqlite import SqliteSaver

        path = sqlite_path(url)
        if path != ":memory:":
            file = Path(path).expanduser()
            if settings is not None and file.parent == settings.data_dir:
                private_dir(file.parent)  # our data dir: owner-only
            else:
                file.parent.mkdir(parents=True, exist_ok=True)
            private_file(file)  # 0600 before SQLite opens it; its -wal/-shm/-journal inherit the mode
            path = str(file)
        # The graph runs nodes in worker threads; SqliteSaver serialises access with its own lock.
        conn = sqlite3.connect(path, check_same_thread=False)
        conn.execute("PRAGMA secure_delete=ON")  # deleted rows are zeroed, not left in free pages
        saver = SqliteSaver(conn, serde=serializer())
        saver.setup()
        return scrubbing(saver)
    if url.startswith(("postgresql://", "postgres://")):
        return scrubbing(postgres_saver(url, settings))
    raise CheckpointerError(
        f"unsupported checkpointer URL {url!r}: use 'memory', 'sqlite:///path.db' or 'postgresql://...' "
        "(CXR_AGENT_CHECKPOINTER_URL)"
    )


def postgres_saver(url: str, settings: Settings | None = None) -> BaseCheckpointSaver:
    """A PostgresSaver over a psycopg_pool ``ConnectionPool`` (several app processes share threads).

    The pool is sized by ``checkpointer_pool_min_size`` / ``_max_size`` (a turn's nodes write
    checkpoints from worker threads, so size it to the concurrent turns of one process) and
    ``checkpointer_pool_timeout_s`` (how long a write waits for a connection, and how long startup
    waits for the server). Each connection is checked before use, so after a server restart
    the broken ones are replaced and the next turn simply continues.
    """
    where = url.split("@")[-1]  # never echo the password
    try:
        import psycopg
        from langgraph.checkpoint.postgres import PostgresSaver
        from psycopg.rows import dict_row
        from psycopg_pool import ConnectionPool, PoolTimeout
    except ImportError as exc:
        raise CheckpointerError(
            f"checkpointer URL {where!r} needs the Postgres saver, which is not installed: "
            "run `pip install cxr-agent[postgres]`"
        ) from exc
    if settings is None:
        from cxr_agent.settings import get_settings

        settings = get_settings()
    pool = ConnectionPool(
        url,
        min_size=settings.checkpointer_pool_min_size,
        max_size=max(settings.checkpointer_pool_max_size, settings.checkpointer_pool_min_size),
        timeout=settings.checkpointer_pool_timeout_s,
        kwargs={"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row},
        check=ConnectionPool.check_connection,
        name="cxr-agent-checkpoints",
        open=False,
    )
    try:
        pool.open(wait=True, timeout=settings.checkpointer_pool_timeout_s)
        saver = PostgresSaver(pool, serde=serializer())
        saver.setup()
    except (PoolTimeout, psycopg.Error, OSError) as exc:
        pool.close()
        raise CheckpointerError(f"cannot use the Postgres checkpointer at {where!r}: {exc}") from exc
    return saver
