"""Agreement of the AI draft with signed results: kappa, sensitivity, specificity, and bad files."""

from __future__ import annotations

import json

import pytest
from sklearn.metrics import cohen_kappa_score

from eval.agreement import AgreementError, agreement, cohen_kappa, plot, read_rows


def test_kappa_matches_sklearn_and_is_none_without_chance_variation():
    ai = ["present", "present", "absent", "absent", "uncertain", "absent", "present", "absent"]
    reader = ["present", "absent", "absent", "absent", "present", "absent", "present", "present"]
    assert cohen_kappa(list(zip(ai, reader, strict=True))) == pytest.approx(cohen_kappa_score(ai, reader))
    assert cohen_kappa([("absent", "absent")] * 3) is None
    assert cohen_kappa([]) is None


def test_sensitivity_specificity_and_missed_findings():
    rows = [{"finding": "pneumothorax", "ai_status": a, "signed_status": s} for a, s in
            [("present", "present"), ("absent", "present"), ("present", "absent"), ("absent", "absent"),
             ("absent", "absent"), ("uncertain", "uncertain")]]
    rows.append({"finding": "fracture", "ai_status": None, "signed_status": "present"})  # added by the reader
    res = {r.finding: r for r in agreement(rows)}
    ptx = res["pneumothorax"]
    assert (ptx.n, ptx.sensitivity, ptx.specificity, ptx.changed) == (6, 0.5, pytest.approx(2 / 3), 2)
    assert res["fracture"].sensitivity == 0.0 and res["fracture"].specificity is None  # the AI missed it


def test_read_rows_names_the_bad_line(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text(json.dumps({"finding": "a", "ai_status": "present", "signed_status": "absent"}) + "\n{oops\n")
    with pytest.raises(AgreementError, match=r"x.jsonl:2: not JSON"):
        read_rows(p)
    p.write_text(json.dumps({"finding": "a", "ai_status": "present"}) + "\n")
    with pytest.raises(AgreementError, match=r":1: a row needs finding, ai_status, signed_status"):
        read_rows(p)
    p.write_text(json.dumps({"finding": "a", "ai_status": "yes", "signed_status": "absent"}) + "\n")
    with pytest.raises(AgreementError, match=r":1: status must be one of"):
        read_rows(p)
    p.write_text("\n")
    with pytest.raises(AgreementError, match="no rows"):
        read_rows(p)


def test_plot_writes_a_png(tmp_path):
    rows = [{"finding": "effusion", "ai_status": "present", "signed_status": "present"},
            {"finding": "effusion", "ai_status": "absent", "signed_status": "absent"}]
    path = plot(agreement(rows), tmp_path / "a.png")
    assert path.read_bytes()[:4] == b"\x89PNG"
