"""`cxr-agent pacs pull` / `pacs push` against a real Orthanc, with scripted tools for speed."""

from __future__ import annotations

import json

import highdicom as hd
import pytest
from graph_scripted import ScriptedVLM, classifier
from orthanc_server import PASSWORD, USER
from typer.testing import CliRunner

import graph as graph_module
from cli.main import app
from cxr_agent import settings as settings_module
from knowledge.evidence import Box


@pytest.fixture
def cli_env(pacs, settings, monkeypatch):
    """The CLI reads get_settings(): point it at this Orthanc and at the graph fixture's data dir."""
    server, _ = pacs
    for key, value in {"PACS_URL": server.dicomweb, "PACS_USERNAME": USER, "PACS_PASSWORD": PASSWORD,
                       "PACS_TIMEOUT_S": "5", "DATA_DIR": str(settings.data_dir)}.items():
        monkeypatch.setenv(f"CXR_AGENT_{key}", value)
    settings_module.get_settings.cache_clear()
    from agents.memory.checkpointers import make_checkpointer

    saver = make_checkpointer(url="memory")
    vlm = ScriptedVLM(report="Right pneumothorax.")
    clf = classifier({"pneumothorax": 0.85}, boxes={"pneumothorax": Box(x1=0.6, y1=0.1, x2=0.9, y2=0.5)})
    real_build = graph_module.build_graph

    def fake_build(_settings=None, **_kw):
        return real_build(settings, tools=[vlm, clf], builtin_tools=False, plugins=False, checkpointer=saver)

    monkeypatch.setattr(graph_module, "build_graph", fake_build)
    yield CliRunner(env={"COLUMNS": "300"})
    settings_module.get_settings.cache_clear()


def test_pull_then_push_puts_the_sr_in_the_same_study(pacs, cli_env, tmp_path):
    server, samples = pacs
    fhir_path = tmp_path / "report.json"
    res = cli_env.invoke(app, ["pacs", "pull", "--study", samples.chest_uid, "--thread", "p1", "--fhir", str(fhir_path)])
    assert res.exit_code == 0, res.output
    assert "pneumothorax" in res.output and "Reconciled findings" in res.output
    assert str(samples.chest.PatientName) not in res.output
    bundle = json.loads(fhir_path.read_text())
    assert bundle["resourceType"] == "Bundle" and bundle["entry"][0]["resource"]["resourceType"] == "DiagnosticReport"

    import requests
    from dicomweb_client import DICOMwebClient

    session = requests.Session()
    session.auth = (USER, PASSWORD)
    web = DICOMwebClient(server.dicomweb, session=session)
    before = web.search_for_series(samples.chest_uid)
    res = cli_env.invoke(app, ["pacs", "push", "--study", samples.chest_uid, "--thread", "p1"])
    assert res.exit_code == 0, res.output
    assert "Stored a DICOM SR with" in res.output and "UNVERIFIED" in res.output
    series = web.search_for_series(samples.chest_uid, fields=["Modality"])
    assert len(series) == len(before) + 1
    sr_series = [s for s in series if s["00080060"]["Value"] == ["SR"]]
    (inst,) = web.search_for_instances(samples.chest_uid, sr_series[0]["0020000E"]["Value"][0])
    ds = web.retrieve_instance(samples.chest_uid, inst["0020000E"]["Value"][0], inst["00080018"]["Value"][0])
    sr = hd.sr.Comprehensive3DSR.from_dataset(ds)
    found = {g.finding_type.meaning: g.get_qualitative_evaluations()[0].value.meaning
             for g in sr.content.get_image_measurement_groups()}
    assert found["Pneumothorax"] == "Present"
    assert sr.content.get_planar_roi_measurement_groups()  # the classifier's box went along


def test_a_pulled_study_is_held_for_its_conversation(pacs, cli_env, settings):
    """Like an upload, a pulled study carries a pending reference of its conversation: forgetting another
    conversation on the same image never deletes it from under this one."""
    from tools.ingestion.pending import held_by

    _, samples = pacs
    res = cli_env.invoke(app, ["pacs", "pull", "--study", samples.chest_uid, "--thread", "held1"])
    assert res.exit_code == 0, res.output
    held = held_by(settings, "held1")
    assert len(held) == 1 and next(iter(held))[:12] in res.output  # the id the pull printed


def test_push_refuses_a_thread_without_findings_and_a_foreign_study(pacs, cli_env):
    _, samples = pacs
    res = cli_env.invoke(app, ["pacs", "push", "--study", samples.chest_uid, "--thread", "empty"])
    assert res.exit_code == 2 and "no findings" in res.output
    assert cli_env.invoke(app, ["pacs", "pull", "--study", samples.chest_uid, "--thread", "p2"]).exit_code == 0
    res = cli_env.invoke(app, ["pacs", "push", "--study", samples.siim_uid, "--thread", "p2"])
    assert res.exit_code == 2 and "not in that PACS study" in res.output


def test_pull_errors_are_messages_not_tracebacks(pacs, cli_env):
    _, samples = pacs
    res = cli_env.invoke(app, ["pacs", "pull", "--study", samples.no_radiograph_uid])
    assert res.exit_code == 2 and "no single-frame CR/DX radiograph" in res.output
    res = cli_env.invoke(app, ["pacs", "pull", "--study", "1.2.826.0.1.3680043.8.498.7"])
    assert res.exit_code == 2 and "no study" in res.output and "Traceback" not in res.output
