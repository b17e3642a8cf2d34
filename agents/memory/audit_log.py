"""The audit log: one JSON line per reply, without PHI, under ``<data_dir>/audit/``.

Why: a deployment must be able to say which models, weights, prompts and reconciliation
policy produced a given reply, without keeping what was said. A line therefore holds ids and
versions only: time, thread id, study id (a hash of the de-identified pixels), intent, the tools
that answered, model ids, weight hashes where a tool reports them (``Evidence.meta["weights_sha256"]``),
prompt ids (hashes of the prompt templates) and the policy version (a hash of the frozen
``reconciler.Policy``). Never the user's text, the reply, a file name or header values.

Files are per UTC day (``YYYY-MM-DD.jsonl``, owner-only) so retention (agents/memory/retention.py) drops
whole days; forgetting a conversation, or retention dropping it, rewrites the days without its lines
(``forget_thread_lines``, ``forget_threads_lines``). Writing never raises: a full disk must not cost the user their answer.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib
import json
import logging
import os
import threading
from collections.abc import Iterable, Mapping
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cxr_agent.settings import Settings

log = logging.getLogger(__name__)
_LOCK = threading.Lock()
SCHEMA = 1


def audit_dir(settings: Settings) -> Path:
    return _audit_folder(str(settings.data_dir))


def _audit_folder(data_dir: str) -> Path:
    return Path(data_dir) / "audit"


def policy_version(policy: Any) -> str | None:
    """A short, stable id of a (frozen dataclass) policy: equal policies give equal ids."""
    if policy is None:
        return None
    try:
        return _policy_version(policy)  # a frozen Policy is hashable: computed once per policy
    except TypeError:
        return hashlib.sha256(repr(policy).encode()).hexdigest()[:12]


@lru_cache(maxsize=16)
def _policy_version(policy: Any) -> str:
    return hashlib.sha256(repr(policy).encode()).hexdigest()[:12]


@lru_cache(maxsize=1)
def prompt_ids() -> dict[str, str]:
    """Hashes of the prompt sources in use: each VLM adapter (its trained instructions), the neutral
    conversation module, and the optional LLM router's system prompt."""
    out: dict[str, str] = {}
    modules = {"vlm_conversation": "tools.vlm.prompts", "vlm_radvlm": "tools.vlm.adapters.radvlm",
               "vlm_medgemma": "tools.vlm.adapters.medgemma"}
    for key, name in modules.items():
        try:
            module = importlib.import_module(name)
            out[key] = hashlib.sha256(Path(module.__file__).read_bytes()).hexdigest()[:12]
        except Exception:  # noqa: BLE001 - an id we cannot compute is left out, never invented
            pass
    try:
        from agents.routing import llm as router_llm

        out["router_llm"] = hashlib.sha256(router_llm._LLM_SYSTEM.encode()).hexdigest()[:12]
    except Exception:  # noqa: BLE001
        pass
    return out


def model_ids(settings: Settings) -> dict[str, str]:
    """The configured model ids (``tiny`` marks the random-weight demo models)."""
    if settings.is_demo:
        return {"profile": "tiny"}
    vlm = settings.openai_model if settings.vlm_backend == "openai" else settings.vlm_model_id
    out = {"vlm": vlm, "classifier": settings.classifier_model, "embedder": settings.embedder}
    if settings.router_llm:
        out["router_llm"] = settings.router_llm
    return out


def reply_record(
    settings: Settings,
    *,
    thread_id: str | None,
    study_id: str | None,
    intent: str | None,
    evidence: Iterable[Any] = (),
    policy: Any = None,
    now: dt.datetime | None = None,
) -> dict[str, Any]:
    """The audit line for one reply (a plain dict; ids and versions only)."""
    now = now or dt.datetime.now(dt.UTC)
    tools: dict[str, bool] = {}
    weights: dict[str, str] = {}
    for ev in evidence:
        name = str(getattr(ev, "tool", "?"))
        tools[name] = bool(getattr(ev, "ok", False))
        meta = getattr(ev, "meta", None)
        sha = meta.get("weights_sha256") if isinstance(meta, Mapping) else None
        if isinstance(sha, str):
            weights[name] = sha
    return {
        "schema": SCHEMA,
        "time": now.isoformat(timespec="seconds"),
        "thread": thread_id,
        "study": study_id,
        "intent": intent,
        "tools": tools,
        "models": model_ids(settings),
        "weights_sha256": weights,
        "prompts": prompt_ids(),
        "policy": policy_version(policy),
    }


_READY: set[Path] = set()  # audit folders already created owner-only in this process


@lru_cache(maxsize=64)
def _day_file(data_dir: str, day: str) -> Path:
    """The file of one day under ``data_dir`` (its folder created owner-only once per process):
    a reply pays neither a mkdir + chmod nor the path's construction each time."""
    folder = _audit_folder(data_dir)
    if folder not in _READY:
        folder.mkdir(parents=True, exist_ok=True)
        os.chmod(folder, 0o700)
        _READY.add(folder)
    return folder / f"{day}.jsonl"


def append(settings: Settings, record: Mapping[str, Any]) -> Path | None:
    """Append one line to today's file (created 0600 in a 0700 directory). None if it failed."""
    try:
        day = str(record.get("time", ""))[:10] or dt.datetime.now(dt.UTC).date().isoformat()
        path = _day_file(str(settings.data_dir), day)
        line = json.dumps(record, sort_keys=True, default=str) + "\n"
        with _LOCK:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line.encode())
            finally:
                os.close(fd)
        return path
    except OSError as exc:
        log.warning("audit line not written (%s)", type(exc).__name__)
        return None


def record_reply(settings: Settings, state: Mapping[str, Any], *, evidence: Iterable[Any] = (), policy: Any = None) -> None:
    """Audit the reply being written (call from the respond node; the thread id comes from the run's config)."""
    if not getattr(settings, "audit_log", False):
        return
    try:
        thread_id = None
        try:
            from langgraph.config import get_config

            thread_id = (get_config().get("configurable") or {}).get("thread_id")
        except Exception:  # noqa: BLE001 - called outside a run (unit tests)
            pass
        route = state.get("route") or {}
        record = reply_record(settings, thread_id=thread_id, study_id=state.get("study_id"),
                              intent=route.get("intent") if isinstance(route, Mapping) else getattr(route, "intent", None),
                              evidence=evidence, policy=policy)
        append(settings, record)
    except Exception:  # noqa: BLE001 - auditing must never cost the user the reply
        log.exception("audit record failed")


def forget_thread_lines(settings: Settings, thread_id: str) -> int:
    """Rewrite every audit day without the lines of ``thread_id``; the number of lines removed."""
    return forget_threads_lines(settings, [thread_id])


def forget_threads_lines(settings: Settings, thread_ids: Iterable[str]) -> int:
    """Rewrite every audit day without the lines of these threads (one pass for a retention's many);
    the number of lines removed.

    Each day is rewritten to a private temporary file and renamed over the old one, under the
    writers' lock, so a reply audited meanwhile is neither lost nor interleaved."""
    folder = audit_dir(settings)
    gone = {str(t) for t in thread_ids}
    if not gone or not folder.is_dir():
        return 0
    removed = 0
    with _LOCK:
        for path in sorted(folder.glob("*.jsonl")):
            try:
                lines = path.read_bytes().splitlines(keepends=True)
            except OSError as exc:
                log.warning("audit day not rewritten (%s)", type(exc).__name__)
                continue
            kept = [line for line in lines if _thread_of(line) not in gone]
            if len(kept) == len(lines):
                continue
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, b"".join(kept))
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
            removed += len(lines) - len(kept)
    return removed


def _thread_of(line: bytes) -> str | None:
    try:
        record = json.loads(line)
    except ValueError:
        return None
    thread = record.get("thread") if isinstance(record, dict) else None
    return str(thread) if thread is not None else None
