"""Report metrics (label F1, BLEU-4, ROUGE-L) and router evaluation."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from eval.reports import compute_metrics, load_reports
from eval.route_eval import evaluate_cases


def test_report_metrics_hand_case():
    refs = {"1": "Large right pleural effusion.", "2": "Cardiomegaly.", "3": "No pneumothorax."}
    gen = {"1": "Right pleural effusion.", "2": "No acute disease."}
    m = compute_metrics(refs, gen)
    assert (m["n_pairs"], m["missing"]) == (2, 1)
    micro = m["label_micro"]  # effusion found (TP), cardiomegaly missed (FN), nothing invented
    assert (micro["tp"], micro["fp"], micro["fn"]) == (1, 0, 1)
    assert micro["f1"] == pytest.approx(2 / 3)
    assert 0.0 < m["bleu4"] < 100.0 and 0.0 < m["rouge_l"] < 1.0


def test_load_reports_csv_jsonl_and_cli(tmp_path):
    from cli.main import app

    (tmp_path / "refs.csv").write_text('id,text\na,"Small left pleural effusion."\nb,Cardiomegaly.\n')
    (tmp_path / "gen.jsonl").write_text(json.dumps({"id": "a", "text": "Small left pleural effusion."}) + "\n"
                                        + json.dumps({"id": "b", "text": "Normal heart size."}) + "\n")
    assert load_reports(tmp_path / "refs.csv") == {"a": "Small left pleural effusion.", "b": "Cardiomegaly."}
    out = tmp_path / "m.json"
    r = CliRunner().invoke(app, ["eval", "report", str(tmp_path / "refs.csv"), "--generated", str(tmp_path / "gen.jsonl"),
                                 "--out", str(out)])
    assert r.exit_code == 0, r.output
    m = json.loads(out.read_text())["metrics"]
    assert m["n_pairs"] == 2 and m["label_micro"]["recall"] == pytest.approx(0.5)
    r = CliRunner().invoke(app, ["eval", "report", str(tmp_path / "refs.csv")])
    assert r.exit_code == 1 and "exactly one of" in r.output


def test_route_eval_on_tiny_jsonl(tmp_path):
    cases = tmp_path / "cases.jsonl"
    cases.write_text("\n".join(json.dumps(c) for c in [
        {"text": "Write a report", "has_image": True, "intent": "report", "finding": None},
        {"text": "Is there a pleural effusion?", "has_image": True, "intent": "finding_question", "finding": "pleural_effusion"},
        {"text": "Write a report", "has_image": True, "intent": "chat"},  # deliberately mislabelled
    ]) + "\n")
    res = evaluate_cases(cases)
    assert res["n"] == 3 and res["accuracy"] == pytest.approx(2 / 3)
    i, j = res["labels"].index("chat"), res["labels"].index("report")
    assert res["matrix"][i][j] == 1  # gold chat routed as report
    assert res["matrix"][j][j] == 1
    assert sum(map(sum, res["matrix"])) == 3


def test_cli_route_default_cases(tmp_path):
    from cli.main import app

    out = tmp_path / "r.json"
    r = CliRunner().invoke(app, ["eval", "route", "--out", str(out)])
    assert r.exit_code == 0, r.output
    payload = json.loads(out.read_text())
    assert payload["n"] >= 100 and "confusion" in r.output
    assert sum(map(sum, payload["matrix"])) == payload["n"]


def test_cli_report_generates_with_the_vlm_and_resumes(tmp_path, monkeypatch):
    from eval_helpers import ScriptedVLM, write_folder

    from cli.main import app

    folder = write_folder(tmp_path / "data", n=2)  # im0: effusion report, im1: normal report
    (tmp_path / "refs.csv").write_text('id,text\nim0,"Left pleural effusion."\nim1,"Normal chest."\nim9,"Cardiomegaly."\n')
    vlm = ScriptedVLM()
    monkeypatch.setattr("eval.harness.make_tools", lambda settings, **kw: (None, vlm))
    args = ["eval", "report", str(tmp_path / "refs.csv"), "--images", str(folder), "--cache", str(tmp_path / "r.jsonl"),
            "--out", str(tmp_path / "r.json")]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    payload = json.loads((tmp_path / "r.json").read_text())
    assert sorted(payload["generated"]) == ["im0", "im1"] and payload["metrics"]["missing"] == 1
    assert payload["metrics"]["label_micro"]["tp"] == 1
    assert vlm.calls == 2
    assert CliRunner().invoke(app, args).exit_code == 0 and vlm.calls == 2  # resumed from the cache
