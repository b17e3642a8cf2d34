"""Resumable per-image results: a JSONL file of {"key", "filename", "result"} lines.

`key` is a fingerprint of everything that changes a result (task, model ids, profile, thresholds,
options). A rerun with the same key skips the filenames already present; a different key (another
model, another margin) recomputes, so stale numbers are never mixed in.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

# Settings fields that change what a tool outputs (paths, ports and UI knobs do not).
RESULT_SETTINGS = ("model_profile", "vlm_model_id", "vlm_backend", "openai_model", "vlm_max_new_tokens",
                   "classifier_model", "classifier_margin")


def fingerprint(task: str, settings: Any = None, **options: Any) -> str:
    """Short sha256 of the task, the result-relevant settings and the options."""
    payload: dict[str, Any] = {"task": task, "options": options}
    if settings is not None:
        payload["settings"] = {k: str(getattr(settings, k, None)) for k in RESULT_SETTINGS}
        for name in ("reconciler_policy",):
            if hasattr(settings, name):
                payload["settings"][name] = str(getattr(settings, name))
    blob = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class ResultCache:
    """Append-only JSONL of per-image results for one fingerprint."""

    def __init__(self, path: str | Path, key: str) -> None:
        self.path = Path(path)
        self.key = key
        self._done: dict[str, Any] = {}
        if self.path.exists():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut short by an interrupted run: that image is simply redone
                if isinstance(rec, dict) and rec.get("key") == key and "filename" in rec:
                    self._done[rec["filename"]] = rec.get("result")

    def __contains__(self, filename: str) -> bool:
        return filename in self._done

    def get(self, filename: str) -> Any:
        return self._done.get(filename)

    @property
    def results(self) -> dict[str, Any]:
        return dict(self._done)

    def add(self, filename: str, result: Any) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps({"key": self.key, "filename": filename, "result": result}, default=str) + "\n")
        self._done[filename] = result
