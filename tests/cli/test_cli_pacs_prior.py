"""`cxr-agent pacs pull --study UID --with-prior` against a real Orthanc: the same patient's latest earlier
CR/DX study is found by QIDO, both are read, and the comparison gives the interval from the headers, while
neither the patient id nor a date reaches the thread or the shared studies."""

from __future__ import annotations

import functools
import json

import pytest
from dated_dicom import dated_film
from graph_scripted import ScriptedVLM, classifier
from orthanc_server import PASSWORD, USER
from pydantic import SecretStr
from typer.testing import CliRunner

import graph as graph_module
from agents.comparing.patient import patient_key
from cli.main import app
from cxr_agent import settings as settings_module
from knowledge.evidence import Evidence
from tools.base import ToolRequest
from tools.interop.dicomweb import PacsClient

PATIENT = "PRIOR-TEST-0042"
ISSUER = "HOSP-A"


@pytest.fixture(scope="module")
def history(pacs, shared_data):
    """One patient's films on the PACS (prior, current, a later one, an earlier non-radiograph), and another
    patient's film between them; returns their study UIDs by role."""
    server, _ = pacs
    source = shared_data / "dicom" / "CR-MONO1-10-chest.dcm"
    films = {"prior": dated_film(source, patient=PATIENT, day="20260110", seed=1),
             "older": dated_film(source, patient=PATIENT, day="20251201", seed=2),
             "current": dated_film(source, patient=PATIENT, day="20260301", seed=3),
             "later": dated_film(source, patient=PATIENT, day="20260501", seed=4),
             "other_patient": dated_film(source, patient="SOMEONE-ELSE", day="20260201", seed=5),
             "other_issuer": dated_film(source, patient=PATIENT, day="20260215", seed=6, issuer="HOSP-B"),
             "not_radiograph": dated_film(source, patient=PATIENT, day="20260220", seed=7, modality="OT")}
    for ds in films.values():
        server.upload(ds)
    return {role: ds.StudyInstanceUID for role, ds in films.items()}


@pytest.fixture
def client(pacs, settings):
    server, _ = pacs
    s = settings.model_copy(update={"pacs_url": server.dicomweb, "pacs_username": USER, "pacs_password": SecretStr(PASSWORD),
                                    "pacs_timeout_s": 5})
    return PacsClient(s)


def test_find_prior_is_the_patients_latest_earlier_radiograph(client, history):
    assert client.find_prior(history["current"]) == history["prior"]
    assert client.find_prior(history["later"]) == history["current"]
    assert client.find_prior(history["older"]) is None  # nothing earlier of this patient
    assert client.find_prior(history["other_patient"]) is None


def test_pull_with_prior_gives_dates_and_comparable_patient_keys(client, history):
    key = functools.partial(patient_key, salt=b"s" * 32)
    pair = client.pull_with_prior(history["current"], key=key)
    assert pair.prior is not None and pair.prior.source.study_uid == history["prior"]
    prior_taken, current_taken = pair.taken
    assert (current_taken - prior_taken).days == 50
    assert pair.keys[0] == pair.keys[1] == key(PATIENT, ISSUER)
    assert PATIENT not in json.dumps(pair.keys) and key(PATIENT, "HOSP-B") != pair.keys[0]
    for study in (pair.current.study, pair.prior.study):  # the shared studies keep no id and no date
        kept = json.dumps(study.metadata, default=str)
        assert PATIENT not in kept and "2026" not in kept and "Doe" not in kept


@pytest.fixture
def cli_env(pacs, settings, monkeypatch):
    """The CLI pointed at this Orthanc, with tools that read an effusion on the current film only."""
    server, _ = pacs
    for key, value in {"PACS_URL": server.dicomweb, "PACS_USERNAME": USER, "PACS_PASSWORD": PASSWORD,
                       "PACS_TIMEOUT_S": "5", "DATA_DIR": str(settings.data_dir)}.items():
        monkeypatch.setenv(f"CXR_AGENT_{key}", value)
    settings_module.get_settings.cache_clear()
    from agents.memory.checkpointers import make_checkpointer

    saver = make_checkpointer(url="memory")
    seen: list[str] = []  # study ids in the order the tools first read them: prior first

    def score(request: ToolRequest) -> Evidence:
        if request.study.id not in seen:
            seen.append(request.study.id)
        return classifier({"pleural_effusion": 0.9 if seen.index(request.study.id) else 0.1}).run(request)

    vlm, clf = ScriptedVLM(report="The lungs are clear."), classifier({})
    clf.result = score
    real_build = graph_module.build_graph

    def fake_build(_settings=None, **_kw):
        return real_build(settings.model_copy(update={"router_semantic": False}), tools=[vlm, clf],
                          builtin_tools=False, plugins=False, checkpointer=saver)

    monkeypatch.setattr(graph_module, "build_graph", fake_build)
    yield CliRunner(env={"COLUMNS": "300"}), fake_build
    settings_module.get_settings.cache_clear()


def test_pacs_pull_with_prior_compares_and_keeps_only_the_interval(cli_env, history):
    runner, build = cli_env
    res = runner.invoke(app, ["pacs", "pull", "--study", history["current"], "--with-prior", "--thread", "pp1"])
    assert res.exit_code == 0, res.output
    assert "50 days earlier" in res.output and "Compared with the prior study" in res.output
    assert PATIENT not in res.output and "Doe" not in res.output
    state = build().get_state({"configurable": {"thread_id": "pp1"}}).values
    cmp = state["messages"][-1].additional_kwargs["cxr"]["comparison"]
    assert cmp["compared"] and cmp["order"] == "headers" and cmp["interval_days"] == 50
    assert cmp["patient"] == "consistent" and not cmp["named_by_reader"]
    assert {c["finding"]: c["change"] for c in cmp["changes"]}["pleural_effusion"] == "new"
    kept = str(state)
    assert PATIENT not in kept and "20260110" not in kept and "20260301" not in kept
    assert state["pairs"][state["study_id"]]["interval_days"] == 50
    from cxr_agent.settings import get_settings
    from tools.ingestion.pending import held_by

    prior_id = state["pairs"][state["study_id"]]["prior_study_id"]
    assert held_by(get_settings(), "pp1") == {state["study_id"], prior_id}  # both held for the conversation


def test_pacs_pull_with_prior_without_one_reads_the_study_alone(cli_env, history):
    runner, _ = cli_env
    res = runner.invoke(app, ["pacs", "pull", "--study", history["older"], "--with-prior", "--thread", "pp2"])
    assert res.exit_code == 0, res.output
    assert "no earlier CR/DX study" in res.output and "Compared with the prior study" not in res.output


def test_pulls_in_one_thread_share_its_salt_and_another_thread_has_its_own(cli_env, history):
    runner, build = cli_env
    for study, thread in (("current", "pp3"), ("later", "pp3"), ("current", "pp4")):
        res = runner.invoke(app, ["pacs", "pull", "--study", history[study], "--with-prior", "--thread", thread])
        assert res.exit_code == 0, res.output
    one, other = (build().get_state({"configurable": {"thread_id": t}}).values for t in ("pp3", "pp4"))
    first, second = (p for p in one["pairs"].values())  # current with its prior, then later with current
    assert first["study_id"] == second["prior_study_id"] and first["thread_keys"] and second["thread_keys"]
    assert first["prior_key"] == first["current_key"] == second["current_key"]  # one salt: one key per patient
    assert one["patient_salt"] != other["patient_salt"]
    assert next(iter(other["pairs"].values()))["current_key"] != first["current_key"]  # unlinkable across threads
    assert PATIENT not in str(one) and PATIENT not in res.output
