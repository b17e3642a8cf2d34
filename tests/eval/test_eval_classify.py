"""classify / ground over a folder with scripted tools: metrics, resume (no recompute), CLI output."""

from __future__ import annotations

import json

import pytest
from eval_helpers import ScriptedClassifier, ScriptedVLM, write_folder
from typer.testing import CliRunner

from agents.reconciling.decide import Policy
from eval import classify, ground
from eval.cache import ResultCache, fingerprint
from eval.data import load_labels
from eval.harness import TINY_CAPTION, load_image

FINDINGS = ["cardiomegaly", "nodule", "pneumothorax", "pleural_effusion"]


def test_classify_records_and_resume(tmp_path):
    images = load_labels(write_folder(tmp_path / "data"))
    clf, vlm = ScriptedClassifier(), ScriptedVLM()
    cache = ResultCache(tmp_path / "cache.jsonl", "k1")
    res = classify.run_images(images, classifier=clf, vlm=vlm, policy=Policy(), cache=cache,
                              findings=FINDINGS, load=load_image)
    rec = res["images/im0.png"]
    assert rec["errors"] == []
    assert rec["classifier"]["pleural_effusion"] == ["present", 0.8]
    assert rec["vlm_yesno"] == {"cardiomegaly": "absent", "nodule": "absent", "pneumothorax": "absent",
                                "pleural_effusion": "present"}
    assert rec["vlm_report"] == {"no_finding": "absent", "pleural_effusion": "present", "pneumothorax": "absent"}
    assert res["images/im1.png"]["vlm_report"]["no_finding"] == "present"
    assert rec["reconciled"]["pleural_effusion"][0] == "present"
    n_clf, n_vlm = clf.calls, vlm.calls
    assert n_clf == 2 and n_vlm == 2 * (len(FINDINGS) + 1)

    # a rerun with the same key reads the cache: no tool is called again
    again = classify.run_images(images, classifier=clf, vlm=vlm, policy=Policy(),
                                cache=ResultCache(tmp_path / "cache.jsonl", "k1"), findings=FINDINGS, load=load_image)
    assert (clf.calls, vlm.calls) == (n_clf, n_vlm)
    assert again == res | {k: v for k, v in again.items()}  # same filenames
    assert again["images/im0.png"]["reconciled"] == rec["reconciled"]
    # another settings fingerprint recomputes
    classify.run_images(images[:1], classifier=clf, vlm=vlm, policy=Policy(),
                        cache=ResultCache(tmp_path / "cache.jsonl", "k2"), findings=FINDINGS, load=load_image)
    assert clf.calls == n_clf + 1

    m = classify.compute_metrics(images, res, FINDINGS)
    eff = m["sources"]["classifier"]["per_finding"]["pleural_effusion"]
    assert (eff["n"], eff["positives"], eff["auroc"], eff["f1"]) == (2, 1, 1.0, 1.0)
    assert m["sources"]["vlm_yesno"]["summary"]["micro"]["f1"] == 1.0
    assert "review_fraction" in m["sources"]["reconciled"]["summary"]


def test_unreadable_image_is_an_error_row_not_cached(tmp_path):
    folder = write_folder(tmp_path / "data", n=1)
    (folder / "images" / "im0.png").write_bytes(b"not a png")
    images = load_labels(folder)
    cache = ResultCache(tmp_path / "c.jsonl", "k")
    res = classify.run_images(images, classifier=ScriptedClassifier(), vlm=None, policy=Policy(), cache=cache,
                              findings=FINDINGS, load=load_image)
    assert res["images/im0.png"]["errors"][0].startswith("load:")
    assert "images/im0.png" not in ResultCache(tmp_path / "c.jsonl", "k")


def test_fingerprint_tracks_result_settings():
    from cxr_agent.settings import Settings

    a = Settings(model_profile="tiny")
    assert fingerprint("classify", a, x=1) == fingerprint("classify", a, x=1)
    assert fingerprint("classify", a, x=1) != fingerprint("classify", a, x=2)
    assert fingerprint("classify", a) != fingerprint("classify", a.model_copy(update={"classifier_margin": 0.2}))


def test_ground_metrics_with_scripted_boxes(tmp_path):
    images = [im for im in load_labels(write_folder(tmp_path / "data")) if im.boxes]
    clf, vlm = ScriptedClassifier(), ScriptedVLM()
    res = ground.run_images(images, vlm=vlm, classifier=clf, cache=ResultCache(tmp_path / "g.jsonl", "k"), load=load_image)
    m = ground.compute_metrics(images, res)
    ref = images[0].boxes[0]  # (32,32,26,26) of 64 px -> (0.5, 0.5, 0.906, 0.906)
    scripted = (0.5, 0.5, 0.9, 0.9)
    expected = (0.4 * 0.4) / ((ref.x2 - ref.x1) * (ref.y2 - ref.y1))
    assert scripted == (ref.x1, ref.y1, 0.9, 0.9)
    assert m["sources"]["vlm"]["mean_iou"] == pytest.approx(expected)
    assert m["sources"]["vlm"]["map50"] == 1.0 and m["sources"]["classifier"]["map50"] == 1.0
    calls = vlm.calls
    ground.run_images(images, vlm=vlm, classifier=clf, cache=ResultCache(tmp_path / "g.jsonl", "k"), load=load_image)
    assert vlm.calls == calls


def test_cli_classify_progress_json_resume_and_demo_caption(tmp_path, monkeypatch):
    from cli.main import app

    folder = write_folder(tmp_path / "data", n=3)
    clf, vlm = ScriptedClassifier(), ScriptedVLM()
    monkeypatch.setattr("eval.harness.make_tools", lambda settings, **kw: (clf, vlm))
    out = tmp_path / "out.json"
    args = ["eval", "classify", str(folder), "--limit", "2", "--out", str(out), "--cache", str(tmp_path / "c.jsonl"),
            "--findings", "pleural_effusion,cardiomegaly"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "classify (2 images)" in r.output and "reconciled" in r.output
    assert "DEMO (tiny profile)" in r.output  # tests run the tiny profile
    payload = json.loads(out.read_text())
    assert payload["demo"] is True and sorted(payload["per_image"]) == ["images/im0.png", "images/im1.png"]
    assert payload["metrics"]["sources"]["classifier"]["per_finding"]["pleural_effusion"]["auroc"] == 1.0
    before = (clf.calls, vlm.calls)
    r2 = CliRunner().invoke(app, args)
    assert r2.exit_code == 0, r2.output
    assert (clf.calls, vlm.calls) == before
    assert json.loads(out.read_text())["metrics"] == payload["metrics"]
    assert TINY_CAPTION.startswith("DEMO")


def test_cli_ground_and_missing_folder(tmp_path, monkeypatch):
    from cli.main import app

    folder = write_folder(tmp_path / "data", n=2)
    monkeypatch.setattr("eval.harness.make_tools", lambda settings, **kw: (ScriptedClassifier(), ScriptedVLM()))
    out = tmp_path / "g.json"
    r = CliRunner().invoke(app, ["eval", "ground", str(folder), "--out", str(out), "--cache", str(tmp_path / "g.jsonl")])
    assert r.exit_code == 0, r.output
    assert json.loads(out.read_text())["metrics"]["n_reference_boxes"] == 1
    r = CliRunner().invoke(app, ["eval", "classify", str(tmp_path / "nowhere")])
    assert r.exit_code == 1 and "labels.csv" in r.output
