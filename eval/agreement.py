"""Agreement between the AI's draft and readers' signed results, per finding, from `review export` rows.

Readers saw the AI draft before they signed, so agreement is inflated (anchoring / automation bias):
these numbers describe how often readers kept the AI's call, not the AI's accuracy on independent reads.
Per finding: Cohen's kappa over present / absent / uncertain (a finding the AI did not report counts
as AI absent), and the AI's sensitivity and specificity for "present" against the signed result
(signed-uncertain rows left out of those two).
For a study compared with a prior, rows also carry the AI's change since it and the signed one: per finding
and overall, Cohen's kappa over the change taxonomy (the AI's "cannot compare" is a category of its own; a
rejected change, signed as no change claimed, is one on the reader's side), how many the reader changed and
how many the comparison flagged for review. Rows without a change count only in the status table.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from agents.review.model import CHANGE_VALUES

CAVEAT = ("Readers saw the AI draft before signing, so agreement is inflated: it measures how often the "
          "reader kept the AI's call, not the AI's accuracy on independent reads.")
STATUSES = ("present", "absent", "uncertain")
REQUIRED = ("finding", "ai_status", "signed_status")
NO_CHANGE_SIGNED = "no_change_signed"  # the reader rejected the AI's change: no change is claimed
CHANGE_REQUIRED = ("ai", "signed")
OVERALL = "all findings"


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


@dataclass(frozen=True)
class ChangeAgreement:
    finding: str  # OVERALL for the row over every finding
    n: int
    kappa: float | None
    changed: int  # rows where the signed change differs from the AI's (a rejected change included)
    flagged: int  # rows the comparison flagged for the reader's review


def _check_change(change: Any, where: str) -> None:
    """A row's ``change`` as the export writes it: the AI's and the signed category of the taxonomy."""
    if not isinstance(change, Mapping):
        raise AgreementError(f"{where}: change must be a mapping with {', '.join(CHANGE_REQUIRED)} "
                             f"(got {type(change).__name__})")
    missing = [k for k in CHANGE_REQUIRED if k not in change]
    if missing:
        raise AgreementError(f"{where}: change needs {', '.join(missing)}")
    for side in CHANGE_REQUIRED:
        value = change[side]
        if value not in CHANGE_VALUES and not (side == "signed" and value is None):
            raise AgreementError(f"{where}: change {side} {value!r} is not one of {', '.join(CHANGE_VALUES)}"
                                 + (" (or null: no change signed)" if side == "signed" else ""))
    if not isinstance(change.get("flagged", False), bool):
        raise AgreementError(f"{where}: change flagged must be true or false")


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
        if "change" in row:
            _check_change(row["change"], f"{path}:{no}")
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


def change_pairs(rows: Iterable[Mapping[str, Any]]) -> dict[str, list[tuple[str, str]]]:
    """(AI change, signed change) per finding, for the rows that carry a change; no change signed is
    NO_CHANGE_SIGNED."""
    by: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for r in rows:
        c = r.get("change")
        if c is not None:
            by[str(r["finding"])].append((c["ai"], c["signed"] or NO_CHANGE_SIGNED))
    return by


def change_agreement(rows: Iterable[Mapping[str, Any]]) -> list[ChangeAgreement]:
    """Per-finding agreement on the change since the prior (findings in name order), then the OVERALL row;
    empty when no row carries a change."""
    listed = list(rows)
    by = change_pairs(listed)
    flagged: Counter[str] = Counter(str(r["finding"]) for r in listed
                                    if r.get("change") is not None and r["change"].get("flagged"))

    def one(name: str, pairs: list[tuple[str, str]], n_flagged: int) -> ChangeAgreement:
        return ChangeAgreement(name, len(pairs), cohen_kappa(pairs), sum(a != s for a, s in pairs), n_flagged)

    out = [one(f, by[f], flagged[f]) for f in sorted(by)]
    if out:
        out.append(one(OVERALL, [p for f in sorted(by) for p in by[f]], sum(flagged.values())))
    return out


def plot(results: Sequence[FindingAgreement], path: Path) -> Path:
    """One PNG: kappa, sensitivity and specificity per finding (bars; a missing value is not drawn)."""
    series = [(label, [getattr(r, label) for r in results]) for label in ("kappa", "sensitivity", "specificity")]
    return _bars([r.finding for r in results], series, path, figsize=(6.0, 2),
                 title="AI draft vs signed result (readers saw the draft: inflated)", legend={"loc": "lower right"})


def plot_changes(results: Sequence[ChangeAgreement], path: Path) -> Path:
    """One PNG: kappa on the change, and the share of rows the reader changed and the comparison flagged."""
    series = [("kappa", [r.kappa for r in results]),
              ("changed by the reader", [r.changed / r.n for r in results]),
              ("flagged for review", [r.flagged / r.n for r in results])]
    return _bars([r.finding for r in results], series, path, figsize=(8.5, 4),
                 title="Change since the prior: AI vs signed (readers saw the draft: inflated)", title_size=10,
                 ylabel="kappa / share of rows",
                 legend={"loc": "upper left", "bbox_to_anchor": (1.0, 1.0), "fontsize": 9})


def _bars(names: Sequence[str], series: Sequence[tuple[str, Sequence[float | None]]], path: Path, *,
          figsize: tuple[float, float], title: str, legend: dict[str, Any], title_size: float | None = None,
          ylabel: str | None = None) -> Path:
    """Three bars per name, one per series (a missing value is not drawn), on the agreement plots' -0.2..1.05
    axis. ``figsize``: (least width, width added beside 0.9 per name)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    least, extra = figsize
    fig, ax = plt.subplots(figsize=(max(least, 0.9 * len(names) + extra), 4.5))
    width = 0.27
    for k, (label, values) in enumerate(series):
        xs = [i + (k - 1) * width for i, v in enumerate(values) if v is not None]
        ax.bar(xs, [v for v in values if v is not None], width, label=label)
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_ylim(-0.2, 1.05)
    ax.axhline(0, color="black", linewidth=0.5)
    ax.set_title(title, **({"fontsize": title_size} if title_size is not None else {}))
    if ylabel is not None:
        ax.set_ylabel(ylabel)
    ax.legend(**legend)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def to_json(results: Sequence[FindingAgreement]) -> dict[str, Any]:
    return {"caveat": CAVEAT, "findings": [asdict(r) for r in results]}


def changes_to_json(results: Sequence[ChangeAgreement]) -> dict[str, Any]:
    """The change table of ``change_agreement``: per finding, then its last (overall) row on its own."""
    return {"caveat": CAVEAT, "categories": {"ai": list(CHANGE_VALUES), "signed": [*CHANGE_VALUES, NO_CHANGE_SIGNED]},
            "findings": [asdict(r) for r in results[:-1]], "overall": asdict(results[-1]) if results else None}
