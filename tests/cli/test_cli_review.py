"""`cxr-agent review` show / edit / sign / files / export and `cxr-agent eval agreement`, on a scripted thread."""

from __future__ import annotations

import json

import pydicom
import pytest
from cli_graph import cli_graph, reader_env
from graph_scripted import ScriptedVLM, classifier
from typer.testing import CliRunner

from cli.main import app
from cxr_agent import settings as settings_module
from knowledge.evidence import Box


@pytest.fixture
def cli_env(settings, monkeypatch, cxr_image, tmp_path):
    """The CLI's graph is this test's scripted graph; a thread whose report turn flags cardiomegaly."""
    token = reader_env(monkeypatch, tmp_path, DATA_DIR=str(settings.data_dir))
    vlm = ScriptedVLM(report="Small right pneumothorax. No pleural effusion.")
    clf = classifier({"pneumothorax": 0.82, "cardiomegaly": 0.9},
                     boxes={"pneumothorax": Box(x1=0.55, y1=0.1, x2=0.9, y2=0.45)})
    build = cli_graph(monkeypatch, settings, [vlm, clf])
    build().invoke({"messages": [("user", "Write a report")], "image": str(cxr_image)},
                   {"configurable": {"thread_id": "rv1"}})
    yield CliRunner(env={"COLUMNS": "300"}), token
    settings_module.get_settings.cache_clear()


def test_review_edit_sign_files_export_and_agreement(cli_env, tmp_path):
    runner, token = cli_env
    res = runner.invoke(app, ["review", "show", "rv1"])
    assert res.exit_code == 0, res.output
    assert "NEEDED" in res.output and "needs an action before signing: cardiomegaly" in res.output

    res = runner.invoke(app, ["review", "sign", "rv1", "--name", "Ann"])
    assert res.exit_code == 2 and "Cardiomegaly" in res.output  # no accept-all: the flagged finding blocks

    report = tmp_path / "report.txt"
    report.write_text("No pneumothorax (skin fold). Cardiomegaly. Right rib fracture.")
    res = runner.invoke(app, ["review", "edit", "rv1", "--name", "Ann", "--accept", "cardiomegaly",
                              "--reject", "pneumothorax", "--note", "pneumothorax=skin fold", "--add", "rib fracture",
                              "--report-file", str(report)])
    assert res.exit_code == 0 and "ready to sign" in res.output, res.output
    res = runner.invoke(app, ["review", "sign", "rv1"], env={"CXR_AGENT_REVIEW_TOKEN": token})
    assert res.exit_code == 0 and "by Ann Lee: verified" in res.output, res.output

    res = runner.invoke(app, ["review", "log", "rv1"])
    assert res.exit_code == 0, res.output
    assert "rejected" in res.output and "pneumothorax" in res.output and "dr-lee" in res.output
    assert any("rejected" in ln and "present" in ln and "absent" in ln for ln in res.output.splitlines())

    res = runner.invoke(app, ["review", "files", "rv1", "--out", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    sr = pydicom.dcmread(tmp_path / "out" / "signed-sr.dcm")
    assert sr.VerificationFlag == "VERIFIED" and sr.VerifyingObserverSequence[0].VerifyingOrganization == "Radiology Dept"
    assert pydicom.dcmread(tmp_path / "out" / "ai-draft-sr.dcm").VerificationFlag == "UNVERIFIED"
    bundle = json.loads((tmp_path / "out" / "signed-fhir.json").read_text())
    assert "final" in {e["resource"].get("status") for e in bundle["entry"]}

    rows_path = tmp_path / "reviews.jsonl"
    res = runner.invoke(app, ["review", "export", "--out", str(rows_path)])
    assert res.exit_code == 0 and "row(s)" in res.output, res.output
    text = rows_path.read_text()
    rows = [json.loads(line) for line in text.splitlines()]
    ptx = next(r for r in rows if r["finding"] == "pneumothorax")
    assert (ptx["ai_status"], ptx["signed_status"], ptx["action"]) == ("present", "absent", "rejected")
    assert ptx["scores"]["classifier"] == pytest.approx(0.82) and "classifier" in ptx["agreeing"]
    assert next(r for r in rows if r["finding"] == "fracture")["ai_status"] is None
    for private in ("skin fold", "Right rib fracture", "dr-lee", "Ann Lee", "rv1"):  # no free text, no identity
        assert private not in text

    res = runner.invoke(app, ["eval", "agreement", str(rows_path), "--out", str(tmp_path / "agr")])
    assert res.exit_code == 0, res.output
    assert "saw the AI draft" in res.output and "inflated" in res.output
    result = json.loads((tmp_path / "agr" / "agreement.json").read_text())
    by = {f["finding"]: f for f in result["findings"]}
    assert by["pneumothorax"]["changed"] == 1 and by["fracture"]["changed"] == 1  # AI missed it
    assert by["cardiomegaly"]["changed"] == 0  # accepted as drafted
    assert (tmp_path / "agr" / "agreement.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_typed_name_signs_unverified_and_a_stranger_token_is_refused(cli_env, tmp_path):
    runner, _ = cli_env
    res = runner.invoke(app, ["review", "sign", "rv1"], env={"CXR_AGENT_REVIEW_TOKEN": "not-a-user"})
    assert res.exit_code == 2 and "belongs to no user" in res.output
    res = runner.invoke(app, ["review", "sign", "rv1"])
    assert res.exit_code == 2 and "--name" in res.output
    assert runner.invoke(app, ["review", "edit", "rv1", "--name", "Ann", "--change", "cardiomegaly=absent"]).exit_code == 0
    res = runner.invoke(app, ["review", "sign", "rv1", "--name", "Ann"])
    assert res.exit_code == 0 and "(unauthenticated) Ann: NOT verified" in res.output, res.output
    res = runner.invoke(app, ["review", "files", "rv1", "--out", str(tmp_path / "o")])
    sr = pydicom.dcmread(tmp_path / "o" / "signed-sr.dcm")
    assert sr.VerificationFlag == "UNVERIFIED" and "VerifyingObserverSequence" not in sr
    res = runner.invoke(app, ["review", "push", "rv1", "--study", "1.2.3"])
    assert res.exit_code == 2
    rows_path = tmp_path / "r.jsonl"
    runner.invoke(app, ["review", "export", "--out", str(rows_path)])
    assert rows_path.read_text() == ""  # unverified reviews are left out unless asked
