"""`cxr-agent ask CURRENT --prior PRIOR`: the prior is read first in the thread, then the current film is
compared with it (NIH patient 5567's two films, ordered by follow_up, with scripted tools)."""

from __future__ import annotations

from pathlib import Path

from cli_graph import cli_graph
from graph_scripted import ScriptedVLM, classifier
from typer.testing import CliRunner

from cli.main import app
from knowledge.evidence import Evidence
from tools.base import ToolRequest
from tools.ingestion.loader import load_study


def _scripted(prior: Path, current: Path, settings):
    """A classifier and a VLM that read an effusion on the current film only (keyed by study id)."""
    ids = {load_study(str(prior), settings=settings).id: "prior", load_study(str(current), settings=settings).id: "now"}
    scores = {"prior": {"pleural_effusion": 0.15}, "now": {"pleural_effusion": 0.9}}
    reports = {"prior": "The lungs are clear. No pleural effusion.", "now": "There is a left pleural effusion."}
    clf, vlm = classifier({}), ScriptedVLM()

    def score(request: ToolRequest) -> Evidence:
        return classifier(scores[ids[request.study.id]]).run(request)

    def report(request: ToolRequest) -> Evidence:
        if request.intent == "report":
            return Evidence(tool="vlm", report=reports[ids[request.study.id]])
        return ScriptedVLM._answer(vlm, request)

    clf.result, vlm.result = score, report
    return clf, vlm


def test_ask_with_a_prior_compares_the_two_films(monkeypatch, settings, shared_data):
    root = shared_data / "nih_cxr14" / "images"
    prior, current = root / "00005567_025.png", root / "00005567_000.png"  # follow_up 15, then 16
    clf, vlm = _scripted(prior, current, settings)
    fake_build = cli_graph(monkeypatch, settings.model_copy(update={"router_semantic": False}), [vlm, clf])
    runner = CliRunner(env={"COLUMNS": "400"})
    res = runner.invoke(app, ["ask", str(current), "--prior", str(prior), "--thread", "cmp1"])
    assert res.exit_code == 0, res.output
    assert all(word in res.output for word in ("finding", "before", "now", "change", "sources"))  # the table
    assert "Compared with the prior study" in res.output
    assert "new" in res.output and "Not confirmed to be the same patient" in res.output  # PNGs: no headers
    state = fake_build().get_state({"configurable": {"thread_id": "cmp1"}}).values
    cmp = state["messages"][-1].additional_kwargs["cxr"]["comparison"]
    assert cmp["compared"] and cmp["named_by_reader"]
    assert {c["finding"]: c["change"] for c in cmp["changes"]}["pleural_effusion"] == "new"
    assert load_study(str(prior), settings=settings).id == cmp["prior_study_id"]
    assert str(prior) not in str(state) and prior.name not in str(state)  # only ids reach the thread


def test_ask_with_a_prior_refuses_bad_arguments(settings, shared_data):
    image = shared_data / "nih_cxr14" / "images" / "00005567_000.png"
    runner = CliRunner(env={"COLUMNS": "400"})
    res = runner.invoke(app, ["ask", "-", "--prior", str(image)])
    assert res.exit_code != 0 and "--prior needs the current film" in res.output
    res = runner.invoke(app, ["ask", str(image), "--prior", "/no/such/prior.png"])
    assert res.exit_code != 0 and "no such file" in res.output


def test_ask_with_a_dated_dicom_prior_gives_the_interval_and_checks_the_order(monkeypatch, settings, shared_data,
                                                                              tmp_path):
    from dated_dicom import dated_film, film_bytes

    source = shared_data / "dicom" / "CR-MONO1-10-chest.dcm"
    prior, current = tmp_path / "a.dcm", tmp_path / "b.dcm"
    prior.write_bytes(film_bytes(dated_film(source, patient="ASK-9", day="20260110", seed=1)))
    current.write_bytes(film_bytes(dated_film(source, patient="ASK-9", day="20260301", seed=2)))
    clf, vlm = _scripted(prior, current, settings)
    fake_build = cli_graph(monkeypatch, settings.model_copy(update={"router_semantic": False}), [vlm, clf])
    runner = CliRunner(env={"COLUMNS": "400"})
    res = runner.invoke(app, ["ask", str(current), "--prior", str(prior), "--thread", "cmp2"])
    assert res.exit_code == 0, res.output
    assert "taken 50 days earlier" in res.output and "ASK-9" not in res.output
    state = fake_build().get_state({"configurable": {"thread_id": "cmp2"}}).values
    cmp = state["messages"][-1].additional_kwargs["cxr"]["comparison"]
    assert cmp["order"] == "headers" and cmp["interval_days"] == 50 and cmp["patient"] == "consistent"
    assert "ASK-9" not in str(state) and "20260110" not in str(state)
    swapped = runner.invoke(app, ["ask", str(prior), "--prior", str(current), "--thread", "cmp3"])
    assert swapped.exit_code != 0 and "taken after IMAGE" in swapped.output
