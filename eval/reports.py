"""`cxr-agent eval report`: generated reports vs reference reports.

Metrics: label-based F1 (knowledge.labeler.label_report on both sides; a finding is positive when
stated present; micro over all (report, finding) pairs and macro over findings with reference
support), BLEU-4 (sacrebleu) and ROUGE-L (rouge-score). Reports are paired by id; a reference
without a generated report is counted as missing, never as empty.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from eval.metrics import bleu4, prf, rouge_l


def load_reports(spec: str | Path, *, limit: int | None = None) -> dict[str, str]:
    """id -> text from a CSV/JSONL (columns id,text or MIMIC/CheXpert Plus names) or a folder of .txt reports
    (tools.retrieval.corpus.load_corpus). Ids from a folder are the file stems."""
    from tools.retrieval.corpus import load_corpus

    out: dict[str, str] = {}
    for r in load_corpus(spec, limit=limit):
        rid = Path(r.id).stem if Path(spec).is_dir() else r.id
        out[rid] = r.text
    return out


def present_labels(text: str) -> set[str]:
    from knowledge.evidence import Status
    from knowledge.labeler import label_report

    return {c.finding for c in label_report(text) if c.status is Status.present}


def compute_metrics(references: dict[str, str], generated: dict[str, str]) -> dict[str, Any]:
    from knowledge.vocabulary import FINDINGS

    ids = [i for i in references if i in generated]
    hyps = [generated[i] for i in ids]
    refs = [references[i] for i in ids]
    out: dict[str, Any] = {"n_pairs": len(ids), "missing": len(references) - len(ids)}
    if not ids:
        return out
    ref_l = [present_labels(t) for t in refs]
    hyp_l = [present_labels(t) for t in hyps]
    findings = [f for f in FINDINGS if f != "no_finding"]
    y, p = [], []
    per: dict[str, Any] = {}
    for f in findings:
        yf = [int(f in r) for r in ref_l]
        pf = [int(f in h) for h in hyp_l]
        y += yf
        p += pf
        if sum(yf):
            per[f] = prf(yf, pf)
    out["label_micro"] = prf(y, p)
    out["label_macro_f1"] = sum(v["f1"] for v in per.values()) / len(per) if per else None
    out["label_per_finding"] = per
    out["bleu4"] = bleu4(hyps, refs)
    out["rouge_l"] = rouge_l(hyps, refs)
    return out
