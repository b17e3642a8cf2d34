"""After a comparison turn, the SR and FHIR downloads carry the study's change since its prior: NIH patient
5567's two films (ordered by follow-up) read through graph.invoke, then exported as the sidebar does."""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import threading
from pathlib import Path

import pydicom
from fhir.resources.R4B.bundle import Bundle
from graph_scripted import classifier
from langchain_core.messages import HumanMessage

from agents.memory.ledger import study_decisions
from agents.turn.comparison import thread_changes
from graph import runtime
from knowledge.evidence import Evidence
from tools.interop.sr import deidentified_source
from ui.exports import dicom_sr_bytes, fhir_report_json
from ui.turn import TurnResult, read_record

WORSE = "The pleural effusion has increased."


class Comparer:
    """A tool that reads both films together; it states one change."""

    name, intents, compares_priors, label = "cmp", frozenset(), True, "the comparer"

    def __init__(self) -> None:
        self.asked: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def run(self, request):
        raise AssertionError("only asked to compare")

    def compare(self, prior, current, *, finding=None, thread_id=None, cancel=None) -> Evidence:
        with self.lock:
            self.asked.append((prior.id, current.id))
        return Evidence(tool=self.name, answer=WORSE,
                        meta={"changes": [{"finding": "pleural_effusion", "change": "worse", "text": WORSE}]})


def _patient_5567(shared_data: Path) -> list[Path]:
    root = shared_data / "nih_cxr14"
    films = []
    with (root / "labels.csv").open() as fh:
        for row in csv.DictReader(fh):
            notes = dict(kv.split("=", 1) for kv in row["notes"].split("; ") if "=" in kv)
            if notes.get("patient_id") == "5567":
                films.append((int(notes["follow_up"]), root / row["filename"]))
    return [p for _, p in sorted(films)]


def _turn(out, text: str) -> TurnResult:
    result = TurnResult(user_text=text)
    read_record(result, out["record"], out["messages"][-1])
    return result


def _dciodvfy_errors(data: bytes, tmp_path: Path) -> list[str]:
    if not shutil.which("dciodvfy"):
        return []
    path = tmp_path / "sr.dcm"
    path.write_bytes(data)
    out = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    return [ln for ln in (out.stdout + out.stderr).splitlines() if ln.startswith("Error")]


def test_the_exports_after_a_comparison_reference_the_prior_and_carry_each_change(make_graph, thread, shared_data,
                                                                                  tmp_path):
    prior_file, current_file = _patient_5567(shared_data)
    assert (prior_file.name, current_file.name) == ("00005567_025.png", "00005567_000.png")  # by follow-up
    seen: list[str] = []
    scores = [{"pleural_effusion": 0.7, "cardiomegaly": 0.2}, {"pleural_effusion": 0.9, "cardiomegaly": 0.8}]

    def read(request):
        if request.study.id not in seen:
            seen.append(request.study.id)
        return classifier(scores[seen.index(request.study.id)]).run(request)

    clf = classifier({})
    clf.result, clf.cacheable = read, True
    comparer = Comparer()
    g = make_graph(clf, comparer, router_semantic=False)
    cfg = thread()
    turns = []
    for path in (prior_file, current_file):
        out = g.invoke({"messages": [HumanMessage("Read this study.")], "image": str(path)}, cfg)
        turns.append(_turn(out, "Read this study."))
    prior_id, current_id = seen
    before = runtime(g).studies.get(current_id)
    lookup = runtime(g).studies.get
    plain = pydicom.dcmread(io.BytesIO(dicom_sr_bytes(turns, before, demo=True, studies=lookup)))
    assert "PertinentOtherEvidenceSequence" not in plain  # no comparison yet: nothing about a prior

    out = g.invoke({"messages": [HumanMessage("Is it worse than before?")]}, cfg)
    turns.append(_turn(out, "Is it worse than before?"))
    assert comparer.asked == [(prior_id, current_id)]
    values = g.get_state(cfg).values
    recorded = thread_changes(values["messages"], current_id)
    assert recorded is not None and recorded.prior_study_id == prior_id
    changes = {c.finding: c.change for c in recorded.changes}
    assert changes == {"pleural_effusion": "worse", "cardiomegaly": "new"}

    current = runtime(g).studies.get(current_id)
    data = dicom_sr_bytes(turns, current, demo=True, decisions=study_decisions(values), studies=lookup)
    sr = pydicom.dcmread(io.BytesIO(data))
    prior_uid = deidentified_source(runtime(g).studies.get(prior_id)).StudyInstanceUID
    assert sr.PertinentOtherEvidenceSequence[0].StudyInstanceUID == prior_uid != sr.StudyInstanceUID
    text = str(sr)
    assert "INTERVALCHANGE" in text and "WORSE" in text and text.count("Change since the prior study") >= 2
    assert _dciodvfy_errors(data, tmp_path) == []

    fhir = json.loads(fhir_report_json(turns, current, demo=True, decisions=study_decisions(values), studies=lookup))
    Bundle.model_validate(fhir)
    obs = [e["resource"] for e in fhir["entry"] if e["resource"]["resourceType"] == "Observation"]
    changed = [o for o in obs if o["code"]["text"].endswith("change since the prior study")]
    assert sorted(c["code"] for o in changed for c in o["interpretation"][0]["coding"]
                  if c["code"] in ("W", "U")) == ["U", "W"]
    report = fhir["entry"][0]["resource"]
    assert len(report["imagingStudy"]) == 2 and report["imagingStudy"][1]["identifier"]["value"] == f"urn:oid:{prior_uid}"

    # the prior gone from the store: the FHIR still carries the changes, the SR references no prior
    gone = pydicom.dcmread(io.BytesIO(dicom_sr_bytes(turns, current, demo=True, studies=lambda sid: None)))
    assert "PertinentOtherEvidenceSequence" not in gone
    alone = json.loads(fhir_report_json(turns, current, demo=True, studies=None))
    assert len([e for e in alone["entry"] if "change since the prior study" in json.dumps(e)]) == 2
    # the prior's own export is about the prior: no change since itself
    assert "PertinentOtherEvidenceSequence" not in pydicom.dcmread(io.BytesIO(
        dicom_sr_bytes(turns, runtime(g).studies.get(prior_id), demo=True, studies=lookup)))


def test_the_srs_text_keeps_characters_outside_ascii(tmp_path):
    import numpy as np

    from knowledge.evidence import Decision, Status
    from tools.ingestion.study import Study
    from tools.interop.sr import build_sr

    study = Study.from_array(np.zeros((16, 16), dtype=np.float32), view="PA")
    text = "Pleural effusion: classifier 0.70 → 0.90 — still there; Ødem: none."
    sr = build_sr(deidentified_source(study), decisions=[Decision(finding="edema", status=Status.absent,
                                                                  confidence=0.8)], report_text=text, demo=True)
    buf = io.BytesIO()
    sr.save_as(buf, enforce_file_format=True)
    back = pydicom.dcmread(io.BytesIO(buf.getvalue()))
    texts = [e.value for e in back.iterall() if e.keyword == "TextValue"]
    assert text in texts and back.SpecificCharacterSet == "ISO_IR 192"
    assert _dciodvfy_errors(buf.getvalue(), tmp_path) == []
