"""Clinician sign-off through the Python API: review a thread's study, act on each finding, sign, store."""

from __future__ import annotations

import json
import os
import stat

import pytest
from graph_scripted import ScriptedVLM, classifier

from agents.review import (
    Review,
    Reviewer,
    ReviewError,
    ReviewIncomplete,
    ReviewSigned,
    ReviewStore,
    open_review,
)
from knowledge.evidence import Box, Status

READER = Reviewer.from_oidc({"is_logged_in": True, "sub": "u-123", "name": "Ann Lee", "org": "St Elsewhere Radiology",
                             "iss": "https://login.example.org"})


@pytest.fixture
def reviewed(settings, make_graph, thread, cxr_image):
    """A thread whose report turn leaves cardiomegaly flagged (classifier present, the report silent)."""
    vlm = ScriptedVLM(report="Small right pneumothorax. No pleural effusion.")
    clf = classifier({"pneumothorax": 0.82, "cardiomegaly": 0.9, "pleural_effusion": 0.1},
                     boxes={"pneumothorax": Box(x1=0.55, y1=0.1, x2=0.9, y2=0.45)})
    g = make_graph(vlm, clf)
    cfg = thread()
    g.invoke({"messages": [("user", "Write a report")], "image": str(cxr_image)}, cfg)
    return g, cfg["configurable"]["thread_id"]


def test_oidc_claims_make_the_reviewer_and_a_typed_name_is_unauthenticated():
    assert (READER.name, READER.id, READER.org, READER.authenticated) == ("Ann Lee", "u-123", "St Elsewhere Radiology",
                                                                          True)
    google = Reviewer.from_oidc({"sub": "9", "given_name": "Bo", "family_name": "Chen", "iss": "https://accounts.google.com"})
    assert google.name == "Bo Chen" and google.org == "accounts.google.com"  # no org claim: the issuer's host
    with pytest.raises(ReviewError, match="not.*logged in|no user is logged in"):
        Reviewer.from_oidc({"is_logged_in": False})
    with pytest.raises(ReviewError, match="'sub'"):
        Reviewer.from_oidc({"is_logged_in": True, "name": "X"})
    typed = Reviewer.typed("  Dr Who ")
    assert not typed.authenticated and typed.label == "(unauthenticated) Dr Who"
    with pytest.raises(ReviewError, match="name is required"):
        Reviewer.typed(" ")

    class Identity:  # server/identities.py's shape
        id, name, org = "dr-lee", "Dr Lee", "radiology"

    served = Reviewer.from_identity(Identity())
    assert served.authenticated and served.id == "dr-lee" and served.org == "radiology"


def test_review_edit_sign_and_store(reviewed, settings):
    g, tid = reviewed
    review = open_review(g, tid, reviewer=READER, settings=settings)
    assert review.ai_report == "Small right pneumothorax. No pleural effusion."
    assert {it.finding for it in review.items} >= {"pneumothorax", "cardiomegaly", "pleural_effusion"}
    assert review.pending() == ["cardiomegaly"]
    with pytest.raises(ReviewIncomplete, match="Cardiomegaly"):  # no "accept all": the flagged one needs an action
        review.sign()
    review.reject("pneumothorax", note="skin fold")
    assert review.item("pneumothorax").final_status == Status.absent
    review.change("cardiomegaly", "present")
    review.add("rib fracture")  # a synonym the vocabulary knows
    with pytest.raises(ReviewError, match="not a finding of the vocabulary"):
        review.add("spleen tumour")
    with pytest.raises(ReviewError, match="already in the review"):
        review.add("pneumothorax")
    with pytest.raises(ReviewError, match="present, absent or uncertain"):
        review.change("pleural_effusion", "maybe")
    review.edit_report("No pneumothorax (skin fold). Cardiomegaly. Right rib fracture.")
    signed = review.sign()
    assert signed.verified and signed.signed_at and len(signed.digest) == 64
    trail = [(c.what, c.finding, c.before, c.after, c.by) for c in signed.events]
    assert ("rejected", "pneumothorax", "present", "absent", "u-123") in trail
    assert ("changed", "cardiomegaly", "uncertain", "present", "u-123") in trail
    assert ("added", "fracture", None, "present", "u-123") in trail
    assert trail[-1][0] == "signed" and any(t[0] == "report_edited" for t in trail)

    with pytest.raises(ReviewSigned):  # frozen: the review object refuses every change once signed
        review.accept("pleural_effusion")
    with pytest.raises(ReviewSigned):
        review.edit_report("changed after signing")
    with pytest.raises(Exception, match="frozen"):
        signed.report_text = "x"

    store = ReviewStore.for_settings(settings)
    path = store.save_signed(signed)
    assert stat.S_IMODE(path.stat().st_mode) == 0o400 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    with pytest.raises(ReviewSigned, match="never rewritten"):
        store.save_signed(signed)
    assert store.current(tid, signed.study_id) == signed

    # a correction is a new version referencing the old one; the old one stays as signed
    fix = open_review(g, tid, reviewer=READER, settings=settings)
    assert fix.version == 2 and fix.supersedes == signed.review_id and fix.lineage == signed.review_id
    assert fix.item("pneumothorax").action == "rejected"  # starts from the signed result
    fix.accept("pneumothorax")
    v2 = fix.sign()
    store.save_signed(v2)
    assert store.current(tid, signed.study_id).review_id == v2.review_id
    assert [s.version for s in store.signed(tid)] == [1, 2]
    assert store.get(tid, signed.review_id).item("pneumothorax").final_status == Status.absent


def test_an_altered_signed_file_is_refused(reviewed, settings):
    g, tid = reviewed
    review = open_review(g, tid, reviewer=READER, settings=settings)
    review.accept("cardiomegaly")
    signed = review.sign()
    path = ReviewStore.for_settings(settings).save_signed(signed)
    data = json.loads(path.read_text())
    data["items"][0]["status"] = "absent"
    os.chmod(path, 0o600)
    path.write_text(json.dumps(data))
    with pytest.raises(ReviewError, match="altered after signing"):
        ReviewStore.for_settings(settings).signed(tid)


def test_a_draft_is_saved_and_resumed_and_a_typed_name_signs_unverified(reviewed, settings):
    g, tid = reviewed
    store = ReviewStore.for_settings(settings)
    review = open_review(g, tid, reviewer=Reviewer.typed("Ann"), settings=settings)
    review.accept("cardiomegaly", note="large heart")
    store.save_draft(review)
    again = open_review(g, tid, reviewer=Reviewer.typed("Ann"), settings=settings)
    assert again.item("cardiomegaly").action == "accepted" and again.review_id == review.review_id
    signed = again.sign()
    assert not signed.verified and signed.reviewer.label == "(unauthenticated) Ann"
    store.save_signed(signed)
    assert store.load_draft(tid, signed.study_id) is None  # the draft went with the signature


def test_a_thread_without_a_study_has_nothing_to_review(make_graph, settings, thread):
    g = make_graph(ScriptedVLM())
    cfg = thread()
    g.invoke({"messages": [("user", "hello")]}, cfg)
    with pytest.raises(ReviewError, match="no study yet"):
        open_review(g, cfg["configurable"]["thread_id"], reviewer=READER, settings=settings)
    with pytest.raises(ReviewError, match="no AI result"):
        Review.draft(thread_id="x", study_id="abc", reviewer=READER, decisions=[])


def test_forgetting_a_thread_deletes_its_reviews(reviewed, settings):
    from agents.memory.retention import forget_thread
    from tools.ingestion.store import StudyStore

    g, tid = reviewed
    review = open_review(g, tid, reviewer=READER, settings=settings)
    review.accept("cardiomegaly")
    store = ReviewStore.for_settings(settings)
    store.save_signed(review.sign())
    assert store.signed(tid)
    forget_thread(tid, saver=g.checkpointer, store=StudyStore.from_settings(settings),
                  artifacts_dir=settings.artifacts_dir, settings=settings)
    assert store.signed(tid) == [] and not any(store.root.iterdir())


def test_retention_deletes_the_reviews_of_expired_threads_only(settings, make_graph, thread, cxr_images):
    import time

    from agents.memory.retention import apply_retention
    from tools.ingestion.store import StudyStore

    g = make_graph(ScriptedVLM(report="Small right pneumothorax."), classifier({"cardiomegaly": 0.9}))
    store = ReviewStore.for_settings(settings)

    def signed_thread(image) -> str:
        cfg = thread()
        g.invoke({"messages": [("user", "Write a report")], "image": str(image)}, cfg)
        review = open_review(g, cfg["configurable"]["thread_id"], reviewer=READER, settings=settings)
        review.accept("cardiomegaly")
        store.save_signed(review.sign())
        return cfg["configurable"]["thread_id"]

    old = signed_thread(cxr_images[0])
    time.sleep(0.05)
    boundary = time.time()
    time.sleep(0.05)
    new = signed_thread(cxr_images[1])
    now = time.time()
    out = apply_retention(settings.model_copy(update={"retention_days": (now - boundary) / 86400}),
                          saver=g.checkpointer, store=StudyStore.from_settings(settings), now=now)
    assert out.threads == [old]
    assert store.signed(old) == [] and len(store.signed(new)) == 1


def test_a_remote_graphs_json_state_is_reviewed_too(reviewed, settings):
    """LangGraph Server returns the state as JSON: the ledger and decisions are read back into models."""
    import json
    from types import SimpleNamespace

    from langchain_core.load import dumpd

    g, tid = reviewed
    values = g.get_state({"configurable": {"thread_id": tid}}).values
    as_json = json.loads(json.dumps({k: v.model_dump(mode="json") if hasattr(v, "model_dump") else
                                     [d.model_dump(mode="json") for d in v] if k == "decisions" else dumpd(v)
                                     for k, v in values.items()}, default=str))

    class Remote:
        def get_state(self, config):
            return SimpleNamespace(values=as_json)

    review = open_review(Remote(), tid, reviewer=READER, settings=settings)
    assert review.pending() == ["cardiomegaly"] and review.ai_report.startswith("Small right pneumothorax")
