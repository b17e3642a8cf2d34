"""`eval compare` on labelled pairs (the documented CSV, MS-CXR-T's and CheXTemporal's formats, synthetic
files) through the real change rule, and `eval simulate --changes` (the rule vs single sources)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from eval import compare as ev
from eval import compare_simulate as cs
from knowledge.evidence import Evidence, FindingCall
from tools.classifier.tool import status_for


class WidthClassifier:
    """Pleural effusion 0.8 on 64-px-wide films, 0.2 on others; cardiomegaly 0.2 everywhere."""

    name = "classifier"
    intents = frozenset({"report"})
    image_source = True

    def run(self, request) -> Evidence:
        scores = {"pleural_effusion": 0.8 if request.study.width == 64 else 0.2, "cardiomegaly": 0.2}
        return Evidence(tool=self.name, calls=[
            FindingCall(finding=f, status=status_for(s, 0.1), score=s, score_kind="op_norm", source=self.name)
            for f, s in scores.items()])


def _film(path: Path, width: int) -> None:
    rng = np.random.default_rng(width)
    Image.fromarray((rng.random((72, width)) * 255).astype(np.uint8), mode="L").save(path)


def _pairs_csv(tmp_path: Path) -> Path:
    _film(tmp_path / "effusion.png", 64)
    _film(tmp_path / "clear.png", 80)
    _film(tmp_path / "effusion2.png", 64)
    path = tmp_path / "pairs.csv"
    path.write_text("current,prior,pleural_effusion,cardiomegaly\n"
                    "effusion.png,clear.png,new,stable\n"
                    "clear.png,effusion.png,resolved,\n"
                    "effusion.png,effusion2.png,worse,\n", encoding="utf-8")
    return path


def test_documented_csv_scored_through_the_change_rule(tmp_path):
    pairs = ev.read_pairs(_pairs_csv(tmp_path))
    assert pairs.format == "pairs-csv" and [p.labels for p in pairs.pairs] == [
        {"pleural_effusion": "new", "cardiomegaly": "stable"}, {"pleural_effusion": "resolved"}, {"pleural_effusion": "worse"}]
    res = ev.evaluate(pairs, ev.tool_predictor([WidthClassifier()]))
    # the classifier reads each film alone: a worse effusion is "still there" to it, so the rule says stable
    assert res["per_finding"] == {"cardiomegaly": {"accuracy": 1.0, "n": 1},
                                  "pleural_effusion": {"accuracy": pytest.approx(2 / 3), "n": 3}}
    assert res["accuracy"] == pytest.approx(0.75) and res["macro_accuracy"] == pytest.approx((2 / 3 + 1) / 2)
    m = res["confusion"]["matrix"]
    assert m["worse"]["stable"] == 1 and m["new"]["new"] == 1 and m["resolved"]["resolved"] == 1
    assert sum(sum(row.values()) for row in m.values()) == 4 and res["failed"] == []


def test_a_pairs_file_that_cannot_be_read_says_where(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("current,prior,pleural_effusion\na.png,b.png,bigger\n", encoding="utf-8")
    with pytest.raises(ev.PairsError, match=r"row 2, column pleural_effusion: 'bigger' is not one of new"):
        ev.read_pairs(bad)
    bad.write_text("current,prior,effusionz\na.png,b.png,new\n", encoding="utf-8")
    with pytest.raises(ev.PairsError, match=r"\['effusionz'\] are not finding ids"):
        ev.read_pairs(bad)
    bad.write_text("image,label\na.png,new\n", encoding="utf-8")
    with pytest.raises(ev.PairsError, match="not a pairs file"):
        ev.read_pairs(bad)
    with pytest.raises(ev.PairsError, match="no such file"):
        ev.read_pairs(tmp_path / "none.csv")


def test_ms_cxr_t_label_file_is_read_in_its_three_classes(tmp_path):
    path = tmp_path / "MS_CXR_T_temporal_image_classification_v1.0.0.csv"
    cols = ["dicom_id", "previous_dicom_id", "study_id", "previous_study_id", "subject_id",
            *(f"{f}_progression" for f in ev.MSCXRT_FINDINGS), *(f"{f}_label_quality" for f in ev.MSCXRT_FINDINGS)]
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=cols)
        w.writeheader()
        w.writerow({"dicom_id": "p10/p10000001/s50000002/aaa", "previous_dicom_id": "p10/p10000001/s50000001/bbb",
                    "study_id": "50000002", "previous_study_id": "50000001", "subject_id": "10000001",
                    "pleural_effusion_progression": "worsening", "edema_progression": "improving",
                    "pleural_effusion_label_quality": "one_expert"})
        w.writerow({"dicom_id": "p10/p10000003/s50000004/ccc", "previous_dicom_id": "p10/p10000003/s50000003/ddd",
                    "study_id": "50000004", "previous_study_id": "50000003", "subject_id": "10000003",
                    "consolidation_progression": "stable"})
    pairs = ev.read_pairs(path, images=tmp_path / "mimic")
    assert pairs.format == "ms-cxr-t" and pairs.classes == ("worse", "stable", "improved")
    first = pairs.pairs[0]
    assert first.current == tmp_path / "mimic" / "files" / "p10/p10000001/s50000002/aaa.jpg"
    assert first.prior.name == "bbb.jpg" and first.labels == {"edema": "improved", "pleural_effusion": "worse"}
    res = ev.score(pairs, [{"pleural_effusion": "new", "edema": "resolved"}, {"consolidation": "cannot_compare"}])
    assert res["collapsed"] == {"new": "worse", "resolved": "improved"} and res["accuracy"] == pytest.approx(2 / 3)
    assert res["confusion"]["matrix"]["stable"]["cannot_compare"] == 1


def test_chextemporal_gold_file_groups_findings_per_pair(tmp_path):
    import pandas as pd

    rows = [("p1", "s1", "s2", "p1/s1/a.jpg", "p1/s2/b.jpg", "Pleural Effusion", "Worse", "chexpert"),
            ("p1", "s1", "s2", "p1/s1/a.jpg", "p1/s2/b.jpg", "Pneumothorax", "Resolved", "chexpert"),
            ("p1", "s1", "s2", "p1/s1/a.jpg", "p1/s2/b.jpg", "Hilar Fullness", "Stable", "chexpert"),
            ("p2", "s3", "s4", "p2/s3/c.jpg", "p2/s4/d.jpg", "Edema", "New", "mimic")]
    cols = ["patient_id", "study_id_prev", "study_id_curr", "img_path_prev", "img_path_curr", "disease_name",
            "progression", "dataset"]
    path = tmp_path / "gold_progression_pairs.parquet"
    pd.DataFrame(rows, columns=cols).to_parquet(path)
    pairs = ev.read_pairs(path)
    assert pairs.format == "chextemporal" and pairs.unmapped == {"Hilar Fullness": 1}
    assert [(p.current.name, p.prior.name, p.labels) for p in pairs.pairs] == [
        ("b.jpg", "a.jpg", {"pleural_effusion": "worse", "pneumothorax": "resolved"}), ("d.jpg", "c.jpg", {"edema": "new"})]
    bad = tmp_path / "gold.csv"
    pd.DataFrame([(*rows[0][:6], "Bigger", "mimic")], columns=cols).to_csv(bad, index=False)
    with pytest.raises(ev.PairsError, match="row 2, column progression: 'Bigger'"):
        ev.read_pairs(bad)


def test_cli_eval_compare_writes_accuracy_and_the_confusion_matrix(tmp_path, monkeypatch):
    from cli.main import app

    monkeypatch.setattr("eval.harness.make_tools", lambda settings, **kw: (WidthClassifier(), None))
    out = tmp_path / "compare.json"
    r = CliRunner().invoke(app, ["eval", "compare", str(_pairs_csv(tmp_path)), "--out", str(out)])
    assert r.exit_code == 0, r.output
    doc = json.loads(out.read_text())
    assert doc["command"] == "compare" and doc["accuracy"] == pytest.approx(0.75)
    assert doc["confusion"]["matrix"]["worse"]["stable"] == 1 and "confusion" in r.output
    bad = CliRunner().invoke(app, ["eval", "compare", str(tmp_path / "none.csv")])
    assert bad.exit_code == 1 and "no such file" in bad.output


def test_simulated_changes_the_rule_against_single_sources():
    again = cs.run_profile(cs.ChangeProfile(), n_pairs=60, seed=3)
    res = cs.run_profile(cs.ChangeProfile(), n_pairs=60, seed=3)
    assert res == again and res["n_labels"] == 60 * len(cs.FINDINGS)
    m = res["metrics"]
    assert set(m) == set(cs.VARIANTS)
    # the policy claims fewer false changes than the comparing VLM taken at its word
    assert m["policy"]["false_change_rate"] < m["comparer_raw"]["false_change_rate"]
    silent = cs.run_profile(cs.ChangeProfile(name="no_comparer", cmp_silent=1.0), n_pairs=60, seed=3)
    # without a comparing source nothing is called worse or improved: the classifier cannot grade severity
    assert silent["metrics"]["policy"] == silent["metrics"]["classifier"]
    assert silent["metrics"]["comparer"]["coverage"] == 0.0
    sim = cs.simulate_pair(cs.ChangeProfile(name="no_comparer", cmp_silent=1.0), np.random.default_rng(0))
    assert not {"worse", "improved"} & set(sim["predicted"]["policy"].values())


def test_cli_simulate_changes(tmp_path, shared_data):
    from cli.main import app

    out = tmp_path / "sim.json"
    r = CliRunner().invoke(app, ["eval", "simulate", "--iu-limit", "0", "-p", "default", "--changes", "--pairs", "20",
                                 "--nih-labels", str(shared_data / "nih_cxr14" / "labels.csv"), "--out", str(out)])
    assert r.exit_code == 0, r.output
    doc = json.loads(out.read_text())
    assert [p["profile"]["name"] for p in doc["change_profiles"]] == [p.name for p in cs.PROFILES]
    assert "simulate changes (default)" in r.output
