"""A verified review of a study compared with its PACS prior, pushed to a real Orthanc: the verified SR read
back references the prior radiograph (found again by pixel hash) and carries the signed change."""

from __future__ import annotations

import functools
import shutil
import subprocess
import threading

import pydicom
from dated_dicom import dated_film
from graph_scripted import classifier
from langchain_core.messages import HumanMessage
from orthanc_server import PASSWORD, USER
from pydantic import SecretStr

from agents.comparing.patient import patient_key
from agents.review import Reviewer, ReviewStore, open_review
from agents.review.outputs import push_verified
from graph import runtime
from knowledge.evidence import Evidence
from tools.interop.dicomweb import PacsClient
from tools.interop.signed import sr_uids

READER = Reviewer.from_identity(type("Identity", (), {"id": "dr-lee", "name": "Ann Lee", "org": "Radiology Dept"})())


class Comparer:
    name, intents, compares_priors, label = "cmp", frozenset(), True, "the comparer"

    def run(self, request):
        raise AssertionError("asked only to compare")

    def compare(self, prior, current, *, finding=None, thread_id=None, cancel: threading.Event | None = None):
        item = {"finding": "pleural_effusion", "change": "new", "text": "There is a new effusion."}
        return Evidence(tool="cmp", answer=item["text"], meta={"changes": [item]})


def test_a_signed_change_is_pushed_with_the_prior_referenced(pacs, shared_data, settings, make_graph, thread, tmp_path):
    server, _ = pacs
    source = shared_data / "dicom" / "CR-MONO1-10-chest.dcm"
    prior_ds = dated_film(source, patient="REVIEW-CHG-7", day="20260105", seed=71)
    current_ds = dated_film(source, patient="REVIEW-CHG-7", day="20260305", seed=72)
    for ds in (prior_ds, current_ds):
        server.upload(ds)
    s = settings.model_copy(update={"pacs_username": USER, "pacs_password": SecretStr(PASSWORD), "pacs_timeout_s": 5})
    client = PacsClient(s, url=server.dicomweb)
    pair = client.pull_with_prior(current_ds.StudyInstanceUID, key=functools.partial(patient_key, salt=b"k" * 32))
    assert pair.prior is not None
    scores: dict = {}
    clf = classifier({})
    clf.result = lambda request: classifier(scores[request.study.id]).run(request)
    g = make_graph(clf, Comparer(), router_semantic=False)
    cfg = thread()
    for pulled, score in ((pair.prior, 0.1), (pair.current, 0.9)):
        sid = runtime(g).studies.put(pulled.study)
        scores[sid] = {"pleural_effusion": score}
        g.invoke({"messages": [HumanMessage("Read this study.")], "study_id": sid}, cfg)
    g.invoke({"messages": [HumanMessage("Anything new since the prior?")]}, cfg)
    review = open_review(g, cfg["configurable"]["thread_id"], reviewer=READER, settings=settings)
    assert review.prior_study_id == pair.prior.study.id
    for f in review.pending():
        review.accept(f)
    for f in review.pending_changes():
        review.accept_change(f)
    review.accept_change("pleural_effusion", note="confirmed")
    signed = review.sign()
    ReviewStore.for_settings(settings).save_signed(signed)
    pushed = push_verified(signed, client, current_ds.StudyInstanceUID, demo=True)
    sop = client._client.retrieve_instance(current_ds.StudyInstanceUID, sr_uids(signed.review_id)[0],
                                           pushed.verified_sop_uid)
    path = tmp_path / "verified.dcm"
    sop.save_as(path, enforce_file_format=True)
    sr = pydicom.dcmread(path)
    assert sr.VerificationFlag == "VERIFIED"
    pertinent = {x.ReferencedSOPInstanceUID for st in sr.PertinentOtherEvidenceSequence
                 for se in st.ReferencedSeriesSequence for x in se.ReferencedSOPSequence}
    assert prior_ds.SOPInstanceUID in pertinent and pushed.ai_sop_uid in pertinent
    words: list[str] = []

    def walk(items):
        for it in items:
            words.append(str(getattr(it, "TextValue", "")))
            words.extend(c.CodeMeaning for c in getattr(it, "ConceptCodeSequence", []))
            walk(getattr(it, "ContentSequence", []))

    walk(sr.ContentSequence)
    text = " | ".join(words)
    assert "change: Pleural effusion" in text and "New finding" in text and "confirmed" in text
    out = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    assert shutil.which("dciodvfy") and not [ln for ln in (out.stdout + out.stderr).splitlines()
                                              if ln.startswith("Error")]
