"""Shared plumbing of the eval commands: tools from Settings, study loading, JSON output, the demo caption."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

TINY_CAPTION = ("DEMO (tiny profile): random-weight models - these numbers are meaningless; "
                "they only show the harness runs end to end.")


def make_tools(settings: Any, *, use_vlm: bool = True, use_classifier: bool = True) -> tuple[Any, Any]:
    """(classifier, vlm) built from Settings; None for a source turned off. Tests replace this function."""
    classifier = vlm = None
    if use_classifier:
        from tools.classifier.tool import ClassifierTool

        classifier = ClassifierTool(settings)
    if use_vlm:
        from tools.vlm.tool import VLMTool

        vlm = VLMTool(settings)
    return classifier, vlm


def load_image(path: Path) -> Any:
    from tools.ingestion.loader import load_study

    return load_study(path)


def caption(settings: Any) -> str | None:
    return TINY_CAPTION if getattr(settings, "is_demo", False) else None


def default_cache(settings: Any, task: str) -> Path:
    return Path(settings.data_dir) / "eval" / f"{task}-cache.jsonl"


def write_json(path: Path | None, payload: dict[str, Any]) -> None:
    if path is None:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str), encoding="utf-8")
