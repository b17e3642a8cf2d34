"""After `cxr-agent pacs pull --with-prior`, the exports carry the comparison (a real Orthanc): the FHIR
bundle one Observation per change, referencing both PACS studies; the SR `pacs push` sends references the
prior radiograph and has its change group (dciodvfy-clean)."""

from __future__ import annotations

import json

from fhir.resources.R4B.bundle import Bundle
from test_cli_pacs_prior import cli_env, history  # noqa: F401 - the same PACS films and scripted tools

from cli.main import app


def test_the_fhir_of_a_pull_with_prior_carries_the_change(cli_env, history, tmp_path):  # noqa: F811
    runner, _ = cli_env
    out = tmp_path / "fhir.json"
    res = runner.invoke(app, ["pacs", "pull", "--study", history["current"], "--with-prior", "--thread", "ppf",
                              "--fhir", str(out)])
    assert res.exit_code == 0, res.output
    doc = json.loads(out.read_text())
    Bundle.model_validate(doc)
    obs = [e["resource"] for e in doc["entry"] if e["resource"]["resourceType"] == "Observation"]
    changed = [o for o in obs if o["code"]["text"].endswith("change since the prior study")]
    assert [o["code"]["text"] for o in changed] == ["Pleural effusion: change since the prior study"]
    assert [c["code"] for c in changed[0]["interpretation"][0]["coding"]][0] == "U"  # new
    report = doc["entry"][0]["resource"]
    assert [s["identifier"]["value"] for s in report["imagingStudy"]] == [
        f"urn:oid:{history['current']}", f"urn:oid:{history['prior']}"]


def test_push_after_a_pull_with_prior_sends_an_sr_that_references_the_prior(cli_env, history, pacs, tmp_path):  # noqa: F811
    import highdicom as hd
    import requests
    from dicomweb_client import DICOMwebClient
    from orthanc_server import PASSWORD, USER

    runner, _ = cli_env
    res = runner.invoke(app, ["pacs", "pull", "--study", history["current"], "--with-prior", "--thread", "pps"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["pacs", "push", "--study", history["current"], "--thread", "pps"])
    assert res.exit_code == 0, res.output
    server, _ = pacs
    session = requests.Session()
    session.auth = (USER, PASSWORD)
    web = DICOMwebClient(server.dicomweb, session=session)
    series = web.search_for_series(history["current"], fields=["Modality"])
    sr_uid = next(s["0020000E"]["Value"][0] for s in series if s["00080060"]["Value"] == ["SR"])
    (inst,) = web.search_for_instances(history["current"], sr_uid)
    ds = web.retrieve_instance(history["current"], sr_uid, inst["00080018"]["Value"][0])
    assert ds.PertinentOtherEvidenceSequence[0].StudyInstanceUID == history["prior"]
    groups = hd.sr.Comprehensive3DSR.from_dataset(ds).content.get_image_measurement_groups()
    changed = [g for g in groups if any(i.ConceptNameCodeSequence[0].CodeValue == "INTERVALCHANGE"
                                        for i in g[0].ContentSequence if i.ValueType == "CODE")]
    assert [g.finding_type.meaning for g in changed] == ["Pleural effusion"]
    import shutil
    import subprocess

    if shutil.which("dciodvfy"):
        path = tmp_path / "pushed.dcm"
        ds.save_as(path, enforce_file_format=True)
        out = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
        assert [ln for ln in (out.stdout + out.stderr).splitlines() if ln.startswith("Error")] == []
