"""Agreement between the AI's draft and readers' signed results, per finding, from `review export` rows.

Readers saw the AI draft before they signed, so agreement is inflated (anchoring / automation bias):
these numbers describe how often readers kept the AI's call, not the AI's accuracy on independent reads.
Per finding: Cohen's kappa over present / absent / uncertain (a finding the AI did not report counts
as AI absent), and the AI's sensitivity and specificity for "present" against the signed result
(signed-uncertain rows left out of those two).
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

CAVEAT = ("Readers saw the AI draft before signing, so agreement is inflated: it measures how often the "
          "reader kept the AI's call, not the AI's accuracy on independent reads.")
STATUSES = ("present", "absent", "uncertain")
REQUIRED = ("finding", "ai_status", "signed_status")


class AgreementError(ValueError):
    """The export file cannot be read; the message names the line and the problem."""


@dataclass(frozen=True)
class FindingAgreement:
    finding: str
    n: int
    kappa: float | None
    sensitivity: float | None
    specificity: float | None
    changed: int  # rows where the signed status differs from the AI's


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The export's rows, each checked for the keys and values agreement needs."""
    out = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise AgreementError(f"{path}: {exc.strerror or exc}") from None
    for no, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise AgreementError(f"{path}:{no}: not JSON ({exc.msg})") from None
        if not isinstance(row, dict) or any(k not in row for k in REQUIRED):
            raise AgreementError(f"{path}:{no}: a row needs {', '.join(REQUIRED)} (is this a `review export` file?)")
        if row["signed_status"] not in STATUSES or row["ai_status"] not in (*STATUSES, None):
            raise AgreementError(f"{path}:{no}: status must be one of {', '.join(STATUSES)}")
        out.append(row)
    if not out:
        raise AgreementError(f"{path}: no rows")
    return out


def cohen_kappa(pairs: Sequence[tuple[str, str]]) -> float | None:
    """Cohen's kappa of two raters over the pairs; None when chance agreement is total (one category)."""
    n = len(pairs)
    if n == 0:
        return None
    observed = sum(a == b for a, b in pairs) / n
    left, right = Counter(a for a, _ in pairs), Counter(b for _, b in pairs)
    expected = sum(left[c] * right[c] for c in set(left) | set(right)) / (n * n)
    if expected >= 1.0:
        return None
    return (observed - expected) / (1.0 - expected)


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def agreement(rows: Iterable[Mapping[str, Any]]) -> list[FindingAgreement]:
    """Per-finding agreement, findings in name order."""
    by: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for r in rows:
        by[str(r["finding"])].append((r["ai_status"] or "absent", r["signed_status"]))
    out = []
    for finding in sorted(by):
        pairs = by[finding]
        tp = sum(a == "present" and s == "present" for a, s in pairs)
        pos = sum(s == "present" for _, s in pairs)
        tn = sum(a != "present" and s == "absent" for a, s in pairs)
        neg = sum(s == "absent" for _, s in pairs)
        out.append(FindingAgreement(finding, len(pairs), cohen_kappa(pairs), _ratio(tp, pos), _ratio(tn, neg),
                                    sum(a != s for a, s in pairs)))
    return out


def plot(results: Sequence[FindingAgreement], path: Path) -> Path:
    """One PNG: kappa, sensitivity and specificity per finding (bars; a missing value is not drawn)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r.finding for r in results]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(names) + 2), 4.5))
    width = 0.27
    for k, (label, key) in enumerate((("kappa", "kappa"), ("sensitivity", "sensitivity"),
                                       ("specificity", "specificity"))):
        xs = [i + (k - 1) * width for i, r in enumerate(results) if getattr(r, key) is not None]
        ys = [getattr(r, key) for r in results if getattr(r, key) is not None]
        ax.bar(xs, ys, width, label=label)
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_ylim(-0.2, 1.05)
    ax.axhline(0, color="black", linewidth=0.5)
    ax.set_title("AI draft vs signed result (readers saw the draft: inflated)")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def to_json(results: Sequence[FindingAgreement]) -> dict[str, Any]:
    return {"caveat": CAVEAT, "findings": [asdict(r) for r in results]}
