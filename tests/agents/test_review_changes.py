"""The review of a study compared with a prior holds its change decisions: each accepted, rejected or set to
another change value, a flagged one acted on before signing; the signed SR and FHIR carry them; reviews
signed before change rows existed still pass their digest check."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from fhir.resources.R4B.bundle import Bundle
from graph_scripted import classifier
from langchain_core.messages import HumanMessage
from scripted_comparer import Comparer

from agents.review import (
    Reviewer,
    ReviewError,
    ReviewIncomplete,
    ReviewStore,
    SignedReview,
    apply_edits,
    open_review,
)
from agents.review.model import CHANGE_VALUES, Review
from agents.review.outputs import fhir_bundle, sr_pair
from graph import runtime
from knowledge.evidence import Decision, Status
from tools.ingestion.study import Study
from tools.interop.change import ChangeKind
from tools.interop.sr import SRSourceError, deidentified_source

READER = Reviewer.from_identity(type("Identity", (), {"id": "dr-lee", "name": "Ann Lee", "org": "Radiology Dept"})())
LEGACY = Path(__file__).parent / "data" / "signed_review_v030.json"  # written by the review code before changes


@pytest.fixture
def compared(make_graph, thread, settings):
    """A thread that read a prior and a current study, then compared them."""
    scores = {}
    clf = classifier({})
    clf.result = lambda request: classifier(scores[request.study.id]).run(request)
    g = make_graph(clf, Comparer(), router_semantic=False)
    cfg = thread()
    studies = [Study.from_array(np.random.default_rng(s).random((64, 64)).astype(np.float32), view="PA")
               for s in (21, 22)]
    for study, s in zip(studies, [{"pleural_effusion": 0.85}, {"pleural_effusion": 0.8}], strict=True):
        sid = runtime(g).studies.put(study)
        scores[sid] = s
        g.invoke({"messages": [HumanMessage("Read this study.")], "study_id": sid}, cfg)
    out = g.invoke({"messages": [HumanMessage("Is it worse than before?")]}, cfg)
    rows = {d["finding"]: d for d in out["messages"][-1].additional_kwargs["cxr"]["comparison"]["changes"]}
    assert rows["pleural_effusion"]["needs_review"] and rows["pleural_effusion"]["change"] == "cannot_compare"
    return g, cfg["configurable"]["thread_id"], studies


def test_the_review_holds_the_change_decisions_and_a_flagged_one_blocks_signing(compared, settings):
    g, tid, (prior, current) = compared
    review = open_review(g, tid, reviewer=READER, settings=settings)
    assert review.study_id == current.id and review.prior_study_id == prior.id
    rows = {r.finding: r for r in review.changes}
    assert set(rows) >= {"pleural_effusion", "cardiomegaly"}
    eff = rows["pleural_effusion"]
    assert (eff.ai_change, eff.flagged, eff.before, eff.now) == ("cannot_compare", True, Status.present,
                                                                 Status.present)
    assert "cmp" in eff.disagreeing or "cmp" in eff.agreeing
    assert review.pending_changes() == ["pleural_effusion"]
    with pytest.raises(ReviewIncomplete, match="flagged change.*Pleural effusion"):
        review.sign()
    with pytest.raises(ReviewError, match="change must be one of new, worse"):
        review.set_change("pleural_effusion", "bigger")
    with pytest.raises(ReviewError, match="action must be one of accept, reject, new"):
        apply_edits(review, [], change_rows=[{"id": "pleural_effusion", "action": "present"}])
    with pytest.raises(ReviewError, match="'atelectasis' has no change since the prior"):
        review.accept_change("atelectasis")
    apply_edits(review, [], change_rows=[{"id": "pleural_effusion", "action": "stable", "note": "same meniscus"},
                                         {"id": "cardiomegaly", "action": "reject"}])
    apply_edits(review, [], change_rows=[{"id": "pleural_effusion", "action": "stable", "note": "same meniscus"}])
    assert [e.what for e in review.events].count("change_changed") == 1  # resent unchanged: no audit line
    for f in review.pending():
        review.accept(f)
    signed = review.sign()
    store = ReviewStore.for_settings(settings)
    store.save_signed(signed)
    back = store.current(tid, current.id)
    assert back is not None and back.prior_study_id == prior.id
    final = {r.finding: (r.action, r.final_change) for r in back.changes}
    assert final["pleural_effusion"] == ("changed", "stable") and final["cardiomegaly"] == ("rejected", None)
    moved = [e for e in back.events if e.what.startswith("change_")]
    assert [(e.finding, e.before, e.after) for e in moved] == [("pleural_effusion", "cannot_compare", "stable"),
                                                              ("cardiomegaly", "improved", "no change")]
    from agents.review.export import rows as export_rows

    exported = {r["finding"]: r for r in export_rows(back)}
    assert exported["pleural_effusion"]["change"] == {"ai": "cannot_compare", "signed": "stable",
                                                      "action": "changed", "flagged": True}
    assert prior.id not in json.dumps(exported) and exported["pleural_effusion"]["prior_study"]
    correction = back.correction(READER)  # a correction keeps the signed change rows
    assert {r.finding: r.final_change for r in correction.changes}["pleural_effusion"] == "stable"


def test_the_signed_sr_and_fhir_carry_the_signed_changes(compared, settings, tmp_path):
    g, tid, (prior, current) = compared
    review = open_review(g, tid, reviewer=READER, settings=settings)
    for f in review.pending():
        review.accept(f)
    review.set_change("pleural_effusion", "improved", note="smaller")
    review.reject_change("cardiomegaly")
    signed = review.sign()
    with pytest.raises(SRSourceError, match="change.*since prior study.*prior="):
        sr_pair(signed, deidentified_source(current))
    ai, ver = sr_pair(signed, deidentified_source(current), prior=deidentified_source(prior))
    prior_sop = deidentified_source(prior).SOPInstanceUID
    for sr in (ai, ver):  # both reference the prior image as evidence
        refs = {s.ReferencedSOPInstanceUID for seq in ("CurrentRequestedProcedureEvidenceSequence",
                                                       "PertinentOtherEvidenceSequence")
                for st in sr.get(seq) or [] for se in st.ReferencedSeriesSequence for s in se.ReferencedSOPSequence}
        assert prior_sop in refs
    assert ver.VerificationFlag == "VERIFIED"
    pertinent = {s.ReferencedSOPInstanceUID for st in ver.PertinentOtherEvidenceSequence
                 for se in st.ReferencedSeriesSequence for s in se.ReferencedSOPSequence}
    assert ai.SOPInstanceUID in pertinent  # the AI's SR is still referenced beside the prior

    def change_groups(sr):
        out = {}
        for group in sr.ContentSequence:
            for item in getattr(group, "ContentSequence", []):
                ident = [x.TextValue for x in getattr(item, "ContentSequence", [])
                         if getattr(x, "TextValue", "").startswith("change: ")]
                if ident:
                    out[ident[0]] = item
        return out

    def texts(item):
        return [x.TextValue for x in item.ContentSequence if hasattr(x, "TextValue")]

    def value(item, meaning):
        return next(x.ConceptCodeSequence[0].CodeMeaning for x in item.ContentSequence
                    if x.ValueType == "CODE" and x.ConceptNameCodeSequence[0].CodeMeaning == meaning)

    drafted, verified = change_groups(ai), change_groups(ver)
    assert {"change: Pleural effusion", "change: Cardiomegaly"} <= set(drafted)  # the AI's draft, both rows
    assert set(verified) == {"change: Pleural effusion"}  # the rejected change signs none
    eff = verified["change: Pleural effusion"]
    assert value(eff, "Change since the prior study") == "Improved since the prior study"
    assert value(drafted["change: Pleural effusion"], "Change since the prior study").startswith("Cannot be")
    assert {"cannot compare", "changed", "smaller"} <= {t.split(" (")[0] for t in texts(eff)}
    summary = " ".join(x.TextValue for x in ver.ContentSequence if hasattr(x, "TextValue"))
    assert "Pleural effusion since the prior: AI cannot compare, reader improved." in summary
    assert "Cardiomegaly since the prior: AI improved, rejected, no change signed." in summary
    path = tmp_path / "verified.dcm"
    ver.save_as(path, enforce_file_format=True)
    assert pydicom.dcmread(path).SOPInstanceUID == ver.SOPInstanceUID
    out = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    assert shutil.which("dciodvfy") and not [ln for ln in (out.stdout + out.stderr).splitlines()
                                              if ln.startswith("Error")]

    bundle = fhir_bundle(signed, study_uid="1.2.3", prior_study_uid="1.2.2")
    Bundle.model_validate(bundle.model_dump(mode="json"))  # valid as the models read it back
    obs = [e.resource for e in bundle.entry if e.resource.__resource_type__ == "Observation"
           and e.resource.status == "final" and "change since the prior" in (e.resource.code.text or "")]
    assert [o.code.text for o in obs] == ["Pleural effusion: change since the prior study"]
    interp = {c.code for c in obs[0].interpretation[0].coding}
    assert "B" in interp and "IMPROVED" in interp  # HL7 'Better' and the local change code
    final = next(e.resource for e in bundle.entry if e.resource.__resource_type__ == "DiagnosticReport"
                 and e.resource.status == "final")
    assert obs and {r.display for r in final.result} >= {"Pleural effusion (change)"}
    assert {s.identifier.value for s in final.imagingStudy} == {"urn:oid:1.2.3", "urn:oid:1.2.2"}
    draft = [e.resource for e in bundle.entry if e.resource.__resource_type__ == "Observation"
             and e.resource.status == "preliminary" and "change since the prior" in (e.resource.code.text or "")]
    assert len(draft) == len(signed.changes)  # the AI's draft changes stay in the bundle beside the signed ones


def test_a_review_signed_before_change_rows_existed_still_checks(settings):
    data = json.loads(LEGACY.read_text(encoding="utf-8"))
    assert "changes" not in data and "prior_study_id" not in data
    store = ReviewStore(settings.data_dir / "reviews")
    legacy = SignedReview.model_validate(data)
    store.save_signed(legacy)
    back = store.current(legacy.thread_id, legacy.study_id)
    assert back is not None and back.digest == data["digest"] and back.changes == []
    # a review without changes signed now hashes exactly as the review code did before change rows
    d = [Decision(finding="cardiomegaly", status=Status.present, confidence=0.8, needs_review=True)]
    review = Review.draft(thread_id="t", study_id="b" * 64, reviewer=READER, decisions=d)
    review.accept("cardiomegaly")
    signed = review.sign()
    body = {k: v for k, v in signed.model_dump(mode="json").items()
            if k not in ("digest", "changes", "prior_study_id")}
    old = hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    assert signed.digest == old
    altered = {**json.loads(signed.model_dump_json()), "changes": [
        {"finding": "cardiomegaly", "ai_change": "worse", "action": "accepted", "change": "worse"}],
        "prior_study_id": "c" * 64}
    with pytest.raises(ReviewError, match="digest mismatch"):  # a change row slipped in afterwards is refused
        SignedReview.model_validate(altered).check()


def test_the_review_s_change_values_are_the_exports_taxonomy():
    from typing import get_args

    assert CHANGE_VALUES == get_args(ChangeKind)
    with pytest.raises(ReviewError, match="need the prior study"):
        Review.draft(thread_id="t", study_id="b" * 64, reviewer=READER,
                     decisions=[Decision(finding="cardiomegaly", status=Status.present, confidence=0.8)],
                     changes=[{"finding": "cardiomegaly", "change": "worse", "confidence": 0.7}])


def test_a_draft_saved_before_the_comparison_gets_its_change_rows(make_graph, thread, settings):
    scores = {}
    clf = classifier({})
    clf.result = lambda request: classifier(scores[request.study.id]).run(request)
    g = make_graph(clf, Comparer(), router_semantic=False)
    cfg = thread()
    tid = cfg["configurable"]["thread_id"]
    for seed, s in ((61, {"pleural_effusion": 0.85}), (62, {"pleural_effusion": 0.8})):
        sid = runtime(g).studies.put(Study.from_array(np.random.default_rng(seed).random((64, 64)).astype(np.float32),
                                                      view="PA"))
        scores[sid] = s
        g.invoke({"messages": [HumanMessage("Read this study.")], "study_id": sid}, cfg)
    store = ReviewStore.for_settings(settings)
    early = open_review(g, tid, reviewer=READER, settings=settings)
    assert early.changes == [] and early.prior_study_id is None
    early.edit_report("Effusion.")
    store.save_draft(early)
    g.invoke({"messages": [HumanMessage("Is it worse than before?")]}, cfg)
    later = open_review(g, tid, reviewer=READER, settings=settings)
    assert later.report_text == "Effusion." and later.prior_study_id is not None
    assert "pleural_effusion" in later.pending_changes()  # the flagged change now blocks signing
