"""The reader's edits as rows (UI table and graph server alike), the sweep of reviews whose thread is gone,
and the record of AI SRs pushed for a conversation's study."""

from __future__ import annotations

import os
import time

import pytest
from graph_scripted import ScriptedVLM, classifier

from agents.review import Reviewer, ReviewError, ReviewStore, apply_edits, open_review
from agents.review.store import thread_key
from tools.interop.signed import SRRef

READER = Reviewer.typed("Ann")


@pytest.fixture
def review(settings, make_graph, thread, cxr_image):
    vlm = ScriptedVLM(report="Small right pneumothorax.")
    g = make_graph(vlm, classifier({"pneumothorax": 0.82, "cardiomegaly": 0.9}))
    cfg = thread()
    g.invoke({"messages": [("user", "Write a report")], "image": str(cxr_image)}, cfg)
    return open_review(g, cfg["configurable"]["thread_id"], reviewer=READER, settings=settings)


def test_rows_apply_once_and_bad_rows_are_named(review):
    rows = [{"id": "cardiomegaly", "action": "present", "note": " seen "}, {"id": "pneumothorax", "action": "—"}]
    apply_edits(review, rows, ["Fracture"], "Edited.")
    assert review.item("cardiomegaly").status.value == "present" and review.item("cardiomegaly").note == "seen"
    assert review.item("fracture").action == "added" and review.report_text == "Edited."
    events = len(review.events)
    apply_edits(review, rows, ["Fracture"], "Edited.")  # the same table again: nothing new in the audit trail
    assert len(review.events) == events
    with pytest.raises(ReviewError, match="action must be one of"):
        apply_edits(review, [{"id": "cardiomegaly", "action": "approve"}])
    with pytest.raises(ReviewError, match="not a finding of this review"):
        apply_edits(review, [{"id": "situs_inversus", "action": "accept"}])
    with pytest.raises(ReviewError, match="'id'"):
        apply_edits(review, [{"finding": "cardiomegaly"}])
    with pytest.raises(ReviewError, match="not a finding of the vocabulary"):
        apply_edits(review, [], ["banana"])


def test_the_sweep_deletes_reviews_of_gone_threads_but_not_one_saved_meanwhile(tmp_path):
    store = ReviewStore(tmp_path / "reviews")
    for tid in ("kept", "gone", "new"):
        store.record_pushed_sr(tid, "s1", SRRef("1.2", "1.2.3", "1.2.3.4"))
    past = time.time() - 60
    for tid in ("kept", "gone"):
        os.utime(store.root / thread_key(tid), (past, past))
    started = time.time() - 30  # "new" was written after the thread list was read: it stays
    assert store.sweep(["kept"], started) == 1
    assert not (store.root / thread_key("gone")).exists()
    assert store.pushed_srs("kept", "s1") == [SRRef("1.2", "1.2.3", "1.2.3.4")]
    assert store.pushed_srs("new", "s1")


def test_pushed_srs_are_recorded_once_each_and_an_unreadable_record_is_named(tmp_path):
    store = ReviewStore(tmp_path / "reviews")
    a, b = SRRef("1.2", "1.2.3", "1.2.3.4"), SRRef("1.2", "1.2.3", "1.2.3.5")
    for ref in (a, b, a):
        store.record_pushed_sr("t", "s1", ref)
    assert store.pushed_srs("t", "s1") == [a, b] and store.pushed_srs("t", "s2") == []
    (store.root / thread_key("t") / "pushed-s1.json").write_text("[{\"study_uid\": 1}]")
    with pytest.raises(ReviewError, match="unreadable"):
        store.pushed_srs("t", "s1")
