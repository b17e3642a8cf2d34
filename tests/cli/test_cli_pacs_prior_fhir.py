"""`cxr-agent pacs pull --with-prior --fhir FILE`: the bundle written after the comparison carries one
Observation per change and references both PACS studies (a real Orthanc)."""

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
