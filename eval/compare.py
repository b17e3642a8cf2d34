"""`cxr-agent eval compare PAIRS`: per-finding change accuracy and a confusion matrix on labelled image pairs.

The documented CSV (one row per pair of one patient's films):

    current,prior,pleural_effusion,edema,...
    p1/b.png,p1/a.png,worse,stable

``current`` and ``prior`` are image paths (relative to the CSV's folder, or to ``--images``); every other
column is a vocabulary finding id whose cell is the change between the two films: new, worse, stable,
improved or resolved (an empty cell: not labelled). Two published label files are read as they come:

- MS-CXR-T ``MS_CXR_T_temporal_image_classification_v1.0.0.csv`` (PhysioNet, credentialed): ``dicom_id``,
  ``previous_dicom_id``, ``<finding>_progression`` for consolidation, edema, pleural_effusion, pneumonia and
  pneumothorax, valued improving / stable / worsening; images are ``files/<dicom_id>.jpg`` under MIMIC-CXR-JPG.
  Its three classes have no new or resolved, so predictions are scored in its classes: new counts as
  worse and resolved as improved (said in the output as ``collapsed``).
- CheXTemporal ``gold_progression_pairs.parquet`` (gated; or the same columns as CSV): one row per pair and
  finding: ``img_path_prev``, ``img_path_curr``, ``disease_name``, ``progression`` (Stable, New, Worse,
  Improved, Resolved). Disease names are mapped onto the vocabulary; rows whose name maps to none are
  counted as ``unmapped`` and left out.

A prediction is one change per labelled finding; "cannot_compare" (and no prediction at all) is scored as
wrong and shown as its own column of the confusion matrix, so a cautious system is not rewarded for it.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHANGES = ("new", "worse", "stable", "improved", "resolved")
PREDICTED = (*CHANGES, "cannot_compare", "none")
MSCXRT_FINDINGS = ("consolidation", "edema", "pleural_effusion", "pneumonia", "pneumothorax")
_MSCXRT = {"improving": "improved", "stable": "stable", "worsening": "worse"}
_THREE_CLASS = {"new": "worse", "resolved": "improved"}


class PairsError(ValueError):
    """A pairs file that cannot be read as labelled: the message names the file, row and column."""


@dataclass(frozen=True)
class ChangePair:
    """Two films of one patient and the labelled change per finding."""

    current: Path
    prior: Path
    labels: dict[str, str]
    pair_id: str = ""


@dataclass
class PairSet:
    pairs: list[ChangePair]
    format: str  # "pairs-csv" | "ms-cxr-t" | "chextemporal"
    classes: tuple[str, ...] = CHANGES
    unmapped: dict[str, int] = field(default_factory=dict)


def _rows(path: Path) -> list[dict[str, str]]:
    if path.suffix.lower() == ".parquet":
        import pandas as pd

        frame = pd.read_parquet(path)
        return [{k: "" if v is None or (isinstance(v, float) and v != v) else str(v) for k, v in row.items()}
                for row in frame.to_dict(orient="records")]
    with path.open(newline="", encoding="utf-8") as fh:
        return [{k.strip(): (v or "").strip() for k, v in row.items() if k is not None} for row in csv.DictReader(fh)]


def read_pairs(path: str | Path, images: str | Path | None = None) -> PairSet:
    """The pairs of a documented CSV, an MS-CXR-T CSV or a CheXTemporal gold file (told apart by columns)."""
    path = Path(path)
    if not path.is_file():
        raise PairsError(f"{path}: no such file")
    rows = _rows(path)
    if not rows:
        raise PairsError(f"{path}: no rows")
    root = Path(images) if images else path.parent
    cols = set(rows[0])
    if {"dicom_id", "previous_dicom_id"} <= cols:
        return _mscxrt(path, rows, root)
    if {"img_path_prev", "img_path_curr", "disease_name", "progression"} <= cols:
        return _chextemporal(path, rows, root)
    if {"current", "prior"} <= cols:
        return _documented(path, rows, root)
    raise PairsError(f"{path}: not a pairs file: needs columns current, prior and finding ids (or MS-CXR-T's "
                     f"dicom_id/previous_dicom_id, or CheXTemporal's img_path_prev/img_path_curr); found {sorted(cols)}")


def _documented(path: Path, rows: list[dict[str, str]], root: Path) -> PairSet:
    from knowledge.vocabulary import FINDING_SET

    findings = [c for c in rows[0] if c not in ("current", "prior", "pair_id")]
    unknown = [c for c in findings if c not in FINDING_SET]
    if unknown:
        raise PairsError(f"{path}: column(s) {unknown} are not finding ids (see knowledge/vocabulary.py)")
    pairs = []
    for n, row in enumerate(rows, start=2):  # row 1 is the header
        labels = {}
        for f in findings:
            v = row.get(f, "").lower()
            if v and v not in CHANGES:
                raise PairsError(f"{path}: row {n}, column {f}: {v!r} is not one of {', '.join(CHANGES)}")
            if v:
                labels[f] = v
        if not row.get("current") or not row.get("prior"):
            raise PairsError(f"{path}: row {n}: current and prior are both needed")
        pairs.append(ChangePair(root / row["current"], root / row["prior"], labels, row.get("pair_id") or f"row{n}"))
    return PairSet(pairs, "pairs-csv")


def _mscxrt(path: Path, rows: list[dict[str, str]], root: Path) -> PairSet:
    pairs = []
    for n, row in enumerate(rows, start=2):
        labels = {}
        for f in MSCXRT_FINDINGS:
            v = row.get(f"{f}_progression", "").lower()
            if v and v not in _MSCXRT:
                raise PairsError(f"{path}: row {n}, column {f}_progression: {v!r} is not improving, stable or worsening")
            if v:
                labels[f] = _MSCXRT[v]
        image = lambda dicom_id: root / "files" / f"{dicom_id}.jpg"  # noqa: E731
        pairs.append(ChangePair(image(row["dicom_id"]), image(row["previous_dicom_id"]), labels,
                                row.get("study_id") or f"row{n}"))
    return PairSet(pairs, "ms-cxr-t", classes=("worse", "stable", "improved"))


def _chextemporal(path: Path, rows: list[dict[str, str]], root: Path) -> PairSet:
    from knowledge.vocabulary import normalize

    grouped: dict[tuple[str, str], dict[str, str]] = {}
    unmapped: dict[str, int] = {}
    for n, row in enumerate(rows, start=2):
        change = row["progression"].strip().lower()
        if change not in CHANGES:
            raise PairsError(f"{path}: row {n}, column progression: {row['progression']!r} is not one of "
                             "Stable, New, Worse, Improved, Resolved")
        finding = normalize(row["disease_name"])
        if finding is None:
            unmapped[row["disease_name"]] = unmapped.get(row["disease_name"], 0) + 1
            continue
        grouped.setdefault((row["img_path_curr"], row["img_path_prev"]), {})[finding] = change
    pairs = [ChangePair(root / cur, root / prev, labels, f"{Path(cur).parent}") for (cur, prev), labels in grouped.items()]
    return PairSet(pairs, "chextemporal", unmapped=unmapped)


def score(pairs: PairSet, predictions: Sequence[Mapping[str, str]]) -> dict[str, Any]:
    """Per-finding and overall change accuracy, macro accuracy over findings, and the confusion matrix
    (gold rows x predicted columns, ``cannot_compare`` and ``none`` included)."""
    if len(predictions) != len(pairs.pairs):
        raise ValueError(f"{len(predictions)} predictions for {len(pairs.pairs)} pairs")
    collapse = pairs.classes != CHANGES
    per: dict[str, list[int]] = {}
    matrix = {g: dict.fromkeys(PREDICTED, 0) for g in pairs.classes}
    for pair, pred in zip(pairs.pairs, predictions, strict=True):
        for finding, gold in pair.labels.items():
            got = pred.get(finding) or "none"
            if collapse:
                got = _THREE_CLASS.get(got, got)
            matrix[gold][got] += 1
            per.setdefault(finding, []).append(int(got == gold))
    per_finding = {f: {"accuracy": sum(v) / len(v), "n": len(v)} for f, v in sorted(per.items())}
    n = sum(len(v) for v in per.values())
    return {
        "format": pairs.format, "n_pairs": len(pairs.pairs), "n_labels": n, "classes": list(pairs.classes),
        "collapsed": {"new": "worse", "resolved": "improved"} if collapse else None,
        "accuracy": (sum(sum(v) for v in per.values()) / n) if n else None,
        "macro_accuracy": (sum(x["accuracy"] for x in per_finding.values()) / len(per_finding)) if per_finding else None,
        "per_finding": per_finding,
        "confusion": {"rows": "gold", "columns": list(PREDICTED), "matrix": matrix},
        "unmapped": pairs.unmapped,
    }


Predictor = Callable[[ChangePair], Mapping[str, str]]


def evaluate(pairs: PairSet, predict: Predictor, on_pair: Callable[[], None] | None = None) -> dict[str, Any]:
    """Run ``predict`` on every pair (a pair whose images fail is predicted nothing, and counted) and score it."""
    preds: list[Mapping[str, str]] = []
    failed: list[dict[str, str]] = []
    for pair in pairs.pairs:
        try:
            preds.append(predict(pair))
        except (OSError, ValueError) as exc:
            failed.append({"pair": pair.pair_id, "error": f"{type(exc).__name__}: {exc}"[:200]})
            preds.append({})
        if on_pair:
            on_pair()
    return {**score(pairs, preds), "failed": failed}


def tool_predictor(tools: Iterable[Any]) -> Predictor:
    """Changes as a comparison turn decides them: each tool reads both films (a report request), each film's
    calls are reconciled, and ``agents.comparing.decide.compare`` decides every labelled finding."""
    from agents.comparing.decide import StudyRead, compare
    from agents.reconciling.decide import decide
    from knowledge.labeler import label_report
    from tools.base import ToolRequest, capabilities
    from tools.ingestion.loader import load_study

    tools = list(tools)
    caps = {t.name: capabilities(t) for t in tools}
    scorers = [n for n, c in caps.items() if c.image_source and not c.writes_report]
    writers = [n for n, c in caps.items() if c.writes_report]

    def read(image: Path) -> StudyRead:
        study = load_study(image)
        evidence = []
        for t in tools:
            ev = t.run(ToolRequest(intent="report", study=study))
            if ev.ok and ev.report and caps[t.name].writes_report:
                ev.calls.extend(label_report(ev.report, source=t.name))
            evidence.append(ev)
        calls = [c for e in evidence if e.ok for c in e.calls]
        return StudyRead(study_id=study.id, view=str(getattr(study, "view", "unknown") or "unknown"),
                         decisions=decide(calls, report_sources=writers), evidence=evidence)

    def predict(pair: ChangePair) -> dict[str, str]:
        prior, current = read(pair.prior), read(pair.current)
        out = compare(prior, current, score_sources=scorers, statement_sources=writers, findings=list(pair.labels))
        return {d.finding: d.change for d in out}

    return predict
