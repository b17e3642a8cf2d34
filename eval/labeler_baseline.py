"""The keyword + negation-window baseline for the report labeler, and the held-out split of the IU reports.

Baseline: a finding is present when one of its lexicon mention patterns occurs in a sentence and
none of a few negation words occurs in the 5 words before it; nothing else (no uncertainty, no scopes,
no pseudo-negation, no normal statements). It uses the labeler's own mention patterns, so the comparison
in bench/labeler.py measures only what the context handling adds.

Held-out split: eval/iu_heldout_ids.txt (half the IU report ids, sha256(id) even, written before any
labeler tuning). Score there; tune only on the other half (`split="tune"`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path

HELDOUT_IDS_PATH = Path(__file__).resolve().with_name("iu_heldout_ids.txt")
_NEG_WINDOW = re.compile(r"\b(?:no|not|without|negative for|free of)\b(?:\W+\w+){0,5}\W*$")
_SENT = re.compile(r"[^.!?\n]+")


@cache
def _mention_res() -> dict[str, re.Pattern[str]]:
    from knowledge.lexicon import lexicon

    return {f: re.compile(r"\b(?:" + "|".join(e.labeler_mentions) + r")\b")
            for f, e in lexicon().findings.items() if e.labeler_mentions}


def keyword_negation_baseline(text: str) -> set[str]:
    """Findings present by keyword, unless a negation word is within 5 words before the mention."""
    out = set()
    for sent in _SENT.findall(text.lower()):
        for finding, rx in _mention_res().items():
            if any(not _NEG_WINDOW.search(sent[: m.start()]) for m in rx.finditer(sent)):
                out.add(finding)
    return out


@cache
def heldout_ids() -> frozenset[str]:
    """The held-out IU report ids (never tuned on)."""
    lines = HELDOUT_IDS_PATH.read_text(encoding="utf-8").splitlines()
    return frozenset(s.strip() for s in lines if s.strip() and not s.startswith("#"))


def iu_split(split: str, limit: int | None = None) -> Iterator:
    """IU X-ray reports of one half: "heldout" (score) or "tune" (the rest), in report order."""
    if split not in ("heldout", "tune"):
        raise ValueError(f"split must be 'heldout' or 'tune', not {split!r}")
    from tools.retrieval.corpus import iu_xray_reports

    ids, n = heldout_ids(), 0
    for r in iu_xray_reports():
        if (r.id in ids) == (split == "heldout"):
            yield r
            n += 1
            if limit is not None and n >= limit:
                return
