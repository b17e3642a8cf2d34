"""Corrections as data: signed reviews as JSONL rows, one per finding (AI decision vs signed decision;
for a study compared with a prior, also the AI's change since it vs the signed one).

No free text (notes, report text) and no identifiers: the thread, study and reader appear only as
short one-way digests, so rows from one reading can be grouped without saying whose it was."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from agents.review.model import SignedReview

EXPORT_VERSION = 1


def _digest(value: str) -> str:
    return hashlib.sha256(f"cxr-agent-review:{value}".encode()).hexdigest()[:12]


def current_versions(signed: Sequence[SignedReview]) -> list[SignedReview]:
    """The signed versions no later version supersedes."""
    superseded = {s.supersedes for s in signed if s.supersedes}
    return [s for s in signed if s.review_id not in superseded]


def rows(signed: SignedReview) -> list[dict[str, Any]]:
    """One row per finding of a signed review."""
    base = {"export_version": EXPORT_VERSION, "review": _digest(signed.review_id), "study": _digest(signed.study_id),
            "reader": _digest(signed.reviewer.id or signed.reviewer.name), "verified": signed.verified,
            "version": signed.version}
    if signed.prior_study_id:
        base["prior_study"] = _digest(signed.prior_study_id)
    changes = {c.finding: {"ai": c.ai_change, "signed": c.final_change, "action": c.action or "kept",
                           "flagged": c.flagged} for c in signed.changes}
    out = []
    for it in signed.items:
        extra = {"change": changes[it.finding]} if it.finding in changes else {}
        out.append({**base, **extra, "finding": it.finding, "ai_status": None if it.ai_status is None else it.ai_status.value,
                    "ai_confidence": it.ai_confidence, "flagged": it.flagged, "agreeing": list(it.agreeing),
                    "disagreeing": list(it.disagreeing), "scores": dict(it.scores), "action": it.action or "kept",
                    "signed_status": it.final_status.value})
    return out


def write_jsonl(signed: Iterable[SignedReview], path: Path, *, include_unverified: bool = False) -> int:
    """Write the current versions' rows to ``path``; returns the number of rows."""
    chosen = [s for s in current_versions(list(signed)) if include_unverified or s.verified]
    n = 0
    with Path(path).open("w", encoding="utf-8") as f:
        for s in chosen:
            for row in rows(s):
                f.write(json.dumps(row, sort_keys=True) + "\n")
                n += 1
    return n
