"""Which model, weights, prompt and index produced a piece of evidence, as short stable ids.

Every built-in tool writes these into ``Evidence.meta`` (``model_id``, ``weights``, ``prompt_id``, and
retrieval's ``index_id``), so evidence can be told apart, reused only when the same model read the same
study the same way, and audited. Pure functions: no model is loaded, no file is rehashed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

ID_CHARS = 12  # hex characters of a sha256 kept in an id: short enough to read, far from colliding here

# Manifest fields that say when an index was written, not what it holds: left out of its id.
_MANIFEST_CLOCK = frozenset({"created_at", "updated_at", "build_seconds"})


def text_hash(parts: Iterable[str]) -> str:
    """A short sha256 of text parts (joined with a separator no prompt holds, so parts cannot run together)."""
    return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()[:ID_CHARS]


def prompt_id(family: str, parts: Iterable[str]) -> str:
    """``<adapter family>:<hash of the prompt text>``: equal only when the same family got the same words."""
    return f"{family}:{text_hash(parts)}"


def index_id(manifest: Mapping[str, Any]) -> str:
    """A report index's id: a hash of its manifest (embedder, corpus fingerprint, count, additions,
    labeler version, index type), without the build clock, so a rebuild of the same corpus keeps it."""
    content = {k: v for k, v in manifest.items() if k not in _MANIFEST_CLOCK}
    digest = hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode("utf-8")).hexdigest()
    return digest[:ID_CHARS]


def snapshot_revision(path: Any) -> str | None:
    """``revision:<commit>`` for a directory inside a Hugging Face cache snapshot (``.../snapshots/<commit>``),
    else None (a plain local directory has no revision we can name)."""
    from pathlib import Path

    p = Path(str(path))
    if p.parent.name == "snapshots" and p.name:
        return f"revision:{p.name}"
    return None
