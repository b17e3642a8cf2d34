"""`cxr-agent review` on a study compared with a prior: the change rows are shown, acted on (accept, reject,
set to another value), a flagged one blocks signing, and `files` writes SRs that reference the prior."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from cli_graph import cli_graph, reader_env
from graph_scripted import classifier
from langchain_core.messages import HumanMessage
from scripted_comparer import Comparer
from typer.testing import CliRunner

import graph as graph_module
from cli.main import app
from cxr_agent import settings as settings_module
from tools.ingestion.study import Study
from tools.interop.sr import deidentified_source


@pytest.fixture
def compared_cli(settings, monkeypatch, tmp_path):
    token = reader_env(monkeypatch, tmp_path, DATA_DIR=str(settings.data_dir))
    scores: dict[str, dict[str, float]] = {}
    clf = classifier({})
    clf.result = lambda request: classifier(scores[request.study.id]).run(request)
    build = cli_graph(monkeypatch, settings.model_copy(update={"router_semantic": False}), [clf, Comparer()])
    g = build()
    cfg = {"configurable": {"thread_id": "cmp1"}}
    studies = [Study.from_array(np.random.default_rng(s).random((64, 64)).astype(np.float32), view="PA")
               for s in (41, 42)]
    for study, s in zip(studies, [{"pleural_effusion": 0.85}, {"pleural_effusion": 0.8}], strict=True):
        sid = graph_module.runtime(g).studies.put(study)
        scores[sid] = s
        g.invoke({"messages": [HumanMessage("Read this study.")], "study_id": sid}, cfg)
    g.invoke({"messages": [HumanMessage("Is it worse than before?")]}, cfg)
    yield CliRunner(env={"COLUMNS": "300"}), token, studies
    settings_module.get_settings.cache_clear()


def test_change_rows_are_shown_acted_on_signed_and_written(compared_cli, tmp_path):
    runner, token, (prior, _current) = compared_cli
    res = runner.invoke(app, ["review", "show", "cmp1"])
    assert res.exit_code == 0, res.output
    assert "Change since prior study" in res.output and "cannot compare" in res.output
    assert "pleural_effusion (change)" in res.output  # the flagged change needs an action
    res = runner.invoke(app, ["review", "sign", "cmp1"], env={"CXR_AGENT_REVIEW_TOKEN": token})
    assert res.exit_code == 2 and "flagged change" in res.output
    res = runner.invoke(app, ["review", "edit", "cmp1", "--set-change", "pleural_effusion=bigger"],
                        env={"CXR_AGENT_REVIEW_TOKEN": token})
    assert res.exit_code == 2 and "change must be one of" in res.output
    res = runner.invoke(app, ["review", "edit", "cmp1", "--set-change", "pleural_effusion=improved",
                              "--change-note", "pleural_effusion=smaller meniscus",
                              "--reject-change", "cardiomegaly", "--accept", "pleural_effusion"],
                        env={"CXR_AGENT_REVIEW_TOKEN": token})
    assert res.exit_code == 0 and "ready to sign" in res.output, res.output
    res = runner.invoke(app, ["review", "sign", "cmp1"], env={"CXR_AGENT_REVIEW_TOKEN": token})
    assert res.exit_code == 0 and "verified" in res.output, res.output
    res = runner.invoke(app, ["review", "files", "cmp1", "--out", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    ver = pydicom.dcmread(tmp_path / "out" / "signed-sr.dcm")
    prior_sop = deidentified_source(prior).SOPInstanceUID
    pertinent = {s.ReferencedSOPInstanceUID for st in ver.PertinentOtherEvidenceSequence
                 for se in st.ReferencedSeriesSequence for s in se.ReferencedSOPSequence}
    assert prior_sop in pertinent and ver.VerificationFlag == "VERIFIED"
    fhir = (tmp_path / "out" / "signed-fhir.json").read_text()
    assert "Pleural effusion: change since the prior study" in fhir and "smaller meniscus" in fhir
