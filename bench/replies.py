"""How long a report reply is outside the report it quotes, on real radiographs (demo profile).

A radiologist reads the reply between two studies: what needs their eyes, the report as written,
the rest at a glance. Over the shared NIH images, one report turn each through the real graph
(tiny random models, the default tools), this measures:

- the characters of the reply outside the quoted report, against the budget 1,200 + 200 per
  finding flagged for review (every image must fit);
- how many times a finding is named there (target: once). A short quote of a tool's own words
  (between curly quotes) is the tool speaking, not the reply naming the finding, so it is not counted.
"""

from __future__ import annotations

import re
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

# Before replies were compact (same 92 images, demo profile, one run): a report reply told each disputed
# finding three times with its full rationale and long quotes.
BEFORE = {"outside_mean": 12032, "worst_ratio": 6.64, "over_budget": 92, "max_named": 38}
BASE_CHARS = 1200
PER_FLAG_CHARS = 200
QUICK_IMAGES = 5
_QUOTED = re.compile(r"\u201c[^\u201d]*\u201d")


def images() -> list[Path]:
    """The shared NIH images (same lookup as bench/imaging.py)."""
    from bench.imaging import shared_data_dir

    data = shared_data_dir()
    return sorted((data / "nih_cxr14" / "images").glob("*.png")) if data is not None else []


def outside_text(reply: str, report: str | None) -> str:
    """The reply with the report it shows as written taken out."""
    return reply.replace(report.strip(), "", 1) if report else reply


def namings(text: str) -> dict[str, int]:
    """How often each finding's display name occurs in ``text`` (quotes of a tool's words left out)."""
    from knowledge.vocabulary import FINDINGS, display_name

    plain = _QUOTED.sub("", text).lower()
    counts = {}
    for f in FINDINGS:
        if f == "no_finding":
            continue
        n = len(re.findall(rf"(?<![a-z]){re.escape(display_name(f).lower())}(?![a-z])", plain))
        if n:
            counts[f] = n
    return counts


def measure(paths: list[Path]) -> list[dict[str, Any]]:
    """One report turn per image on a fresh thread; per image: outside chars, flagged, budget, namings."""
    from cxr_agent.settings import Settings
    from graph import build_graph

    out: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        s = Settings(model_profile="tiny", offline=True, data_dir=root, checkpointer_url="memory", vlm_device="cpu",
                     classifier_device="cpu", index_dir=root / "index", tool_timeout_s=900, turn_timeout_s=1800)
        g = build_graph(s)
        for i, path in enumerate(paths):
            t0 = time.perf_counter()
            values = g.invoke({"messages": [("user", "Write a report")], "image": str(path)},
                              {"configurable": {"thread_id": f"replies-{i}"}})
            seconds = time.perf_counter() - t0
            reply = values["messages"][-1].content
            writer = next((e for e in values.get("evidence") or [] if e.ok and e.report), None)
            rest = outside_text(reply, writer.report if writer else None)
            flagged = sum(1 for d in values.get("decisions") or [] if d.needs_review)
            named = namings(rest)
            out.append({"image": path.name, "chars": len(reply), "outside": len(rest), "flagged": flagged,
                        "budget": BASE_CHARS + PER_FLAG_CHARS * flagged, "max_named": max(named.values(), default=0),
                        "seconds": seconds})
    return out


def rows(per_image: list[dict[str, Any]]) -> list[dict[str, Any]]:
    n = len(per_image)
    over = [r for r in per_image if r["outside"] > r["budget"]]
    note = f"{n} NIH images, demo profile; budget = {BASE_CHARS} + {PER_FLAG_CHARS} per flagged finding"
    ratio = max(r["outside"] / r["budget"] for r in per_image)
    return [
        {"metric": "reply chars outside the report (mean)", "value": statistics.mean(r["outside"] for r in per_image),
         "unit": "chars", "baseline": BEFORE["outside_mean"],
         "note": f"{note}; whole reply mean {statistics.mean(r['chars'] for r in per_image):.0f}; baseline: before"},
        {"metric": "worst reply / its budget", "value": ratio, "unit": "x", "target": "<= 1",
         "baseline": BEFORE["worst_ratio"],
         "note": f"mean flagged {statistics.mean(r['flagged'] for r in per_image):.1f} per image"},
        {"metric": "images over budget", "value": len(over), "unit": "images", "target": "<= 0",
         "baseline": BEFORE["over_budget"], "note": note},
        {"metric": "most times one finding is named", "value": max(r["max_named"] for r in per_image),
         "unit": "times", "target": "<= 1", "baseline": BEFORE["max_named"],
         "note": "outside the quoted report; quotes of a tool's words excluded"},
    ]


def run(quick: bool = False) -> list[dict[str, Any]]:
    paths = images()
    if not paths:
        return [{"metric": "SKIPPED", "value": None, "unit": "", "note": "no NIH images in the shared data"}]
    per_image = measure(paths[:QUICK_IMAGES] if quick else paths)
    return rows(per_image)


if __name__ == "__main__":
    import json
    import sys

    per = measure(images()[: int(sys.argv[1])] if len(sys.argv) > 1 else images())
    print(json.dumps(rows(per), indent=1))
    print(json.dumps(per[:3], indent=1))
