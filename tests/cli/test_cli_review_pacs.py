"""`cxr-agent pacs pull` -> `pacs push` (the AI's SR) -> `review sign` (token) -> `review push` against a real
Orthanc: the verified SR references the AI SR pushed earlier as pertinent other evidence."""

from __future__ import annotations

import subprocess

import highdicom as hd
import pytest
from cli_graph import cli_graph, reader_env
from graph_scripted import ScriptedVLM, classifier
from orthanc_server import PASSWORD, USER
from typer.testing import CliRunner

from cli.main import app
from cxr_agent import settings as settings_module
from knowledge.evidence import Box


@pytest.fixture
def cli_env(pacs, settings, monkeypatch, tmp_path):
    server, _ = pacs
    token = reader_env(monkeypatch, tmp_path, PACS_URL=server.dicomweb, PACS_USERNAME=USER, PACS_PASSWORD=PASSWORD,
                       PACS_TIMEOUT_S="5", DATA_DIR=str(settings.data_dir))
    vlm = ScriptedVLM(report="Right pneumothorax.")
    clf = classifier({"pneumothorax": 0.85, "cardiomegaly": 0.9},
                     boxes={"pneumothorax": Box(x1=0.6, y1=0.1, x2=0.9, y2=0.5)})
    cli_graph(monkeypatch, settings, [vlm, clf])
    yield CliRunner(env={"COLUMNS": "300"}), token
    settings_module.get_settings.cache_clear()


def _sr_series(web, study_uid):
    return {s["0020000E"]["Value"][0] for s in web.search_for_series(study_uid, fields=["Modality"])
            if s["00080060"]["Value"] == ["SR"]}


def test_the_verified_sr_references_the_ai_sr_pushed_before(pacs, cli_env, tmp_path):
    server, samples = pacs
    runner, token = cli_env
    import requests
    from dicomweb_client import DICOMwebClient

    session = requests.Session()
    session.auth = (USER, PASSWORD)
    web = DICOMwebClient(server.dicomweb, session=session)
    assert runner.invoke(app, ["pacs", "pull", "--study", samples.chest_uid, "--thread", "lk1"]).exit_code == 0
    before = _sr_series(web, samples.chest_uid)
    res = runner.invoke(app, ["pacs", "push", "--study", samples.chest_uid, "--thread", "lk1"])
    assert res.exit_code == 0, res.output
    (ai_series,) = _sr_series(web, samples.chest_uid) - before
    (ai_inst,) = web.search_for_instances(samples.chest_uid, ai_series)
    ai_sop = ai_inst["00080018"]["Value"][0]
    assert ai_sop in res.output

    res = runner.invoke(app, ["review", "edit", "lk1", "--name", "Ann", "--accept", "cardiomegaly",
                              "--reject", "pneumothorax"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["review", "sign", "lk1"], env={"CXR_AGENT_REVIEW_TOKEN": token})
    assert res.exit_code == 0 and "verified" in res.output, res.output
    pushed_before = _sr_series(web, samples.chest_uid)
    res = runner.invoke(app, ["review", "push", "lk1", "--study", samples.chest_uid])
    assert res.exit_code == 0, res.output
    new = _sr_series(web, samples.chest_uid) - pushed_before
    verified = None
    for series_uid in new:
        for inst in web.search_for_instances(samples.chest_uid, series_uid):
            ds = web.retrieve_instance(samples.chest_uid, series_uid, inst["00080018"]["Value"][0])
            if ds.VerificationFlag == "VERIFIED":
                verified = hd.sr.Comprehensive3DSR.from_dataset(ds)
                ds.save_as(tmp_path / "verified.dcm", enforce_file_format=True)
    assert verified is not None
    out = subprocess.run(["dciodvfy", str(tmp_path / "verified.dcm")], capture_output=True, text=True, timeout=60)
    assert not [ln for ln in (out.stdout + out.stderr).splitlines() if ln.startswith("Error")]
    assert str(verified.VerifyingObserverSequence[0].VerifyingObserverName) == "Lee^Ann"
    referenced = {(series.SeriesInstanceUID, sop.ReferencedSOPInstanceUID)
                  for study in verified.PertinentOtherEvidenceSequence if study.StudyInstanceUID == samples.chest_uid
                  for series in study.ReferencedSeriesSequence for sop in series.ReferencedSOPSequence}
    assert (ai_series, ai_sop) in referenced  # the AI SR `pacs push` sent earlier
    assert len(referenced) == 2  # and the review's own AI draft SR, pushed beside the verified one
