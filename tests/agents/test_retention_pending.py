"""Forgetting a conversation keeps a study another conversation uploaded for itself and has not yet
used in a checkpointed turn, even when that upload came before the forgotten one's own upload and turn;
the reference ends when its conversation uses the study, is forgotten, or outlives the retention."""

from __future__ import annotations

import time

from retention_graph import ask, checkpointed_graph

from agents.memory.retention import apply_retention, forget_thread
from graph import runtime, store_image
from tools.ingestion.pending import held_by, holders


def _forget(thread: str, saver, g, settings):
    return forget_thread(thread, saver=saver, store=runtime(g).studies.store, artifacts_dir=settings.artifacts_dir,
                         settings=settings)


def test_an_earlier_upload_by_another_conversation_of_the_same_user_is_kept_until_that_one_goes(
        make_graph, settings, cxr_images):
    g, saver = checkpointed_graph(make_graph, settings)
    store = runtime(g).studies.store
    sid = store_image(str(cxr_images[4]), graph=g, thread_id="b")  # B uploads X and has not asked yet
    time.sleep(0.02)
    assert store_image(str(cxr_images[4]), graph=g, thread_id="a") == sid  # A uploads the same X...
    time.sleep(0.02)
    ask(g, "a", "Write a report", sid)  # ...and asks: A's first turn comes after both uploads
    out = _forget("a", saver, g, settings)
    assert out is not None and out.studies == [] and out.kept_recent == [sid]
    assert sid in store and holders(settings, [sid]) == {sid: {"b": ""}}  # A's own reference went with it
    reply = ask(g, "b", "Write a report", sid)  # B's first turn reads X: nobody asks for the image again
    assert reply["study_id"] == sid and "not in the study store" not in reply["messages"][-1].content
    out = _forget("b", saver, g, settings)
    assert out is not None and out.studies == [sid] and out.kept_recent == []
    assert sid not in store and held_by(settings, "b") == set()


def test_a_reference_is_released_once_its_conversation_has_used_the_study(make_graph, settings, cxr_images):
    g, saver = checkpointed_graph(make_graph, settings)
    store = runtime(g).studies.store
    x = store_image(str(cxr_images[5]), graph=g, thread_id="b")
    ask(g, "b", "Write a report", x)  # B uses X: its checkpoint now references it
    ask(g, "a", "Write a report", store_image(str(cxr_images[5]), graph=g, thread_id="a"))
    out = _forget("a", saver, g, settings)
    assert out is not None and out.studies == [] and out.kept_recent == []  # kept by B's checkpoint
    assert held_by(settings, "b") == set() and x in store  # B's upload is no longer pending
    out = _forget("b", saver, g, settings)
    assert out is not None and out.studies == [x] and x not in store


def test_a_conversation_forgotten_before_its_first_turn_takes_its_upload(make_graph, settings, cxr_images):
    g, saver = checkpointed_graph(make_graph, settings)
    sid = store_image(str(cxr_images[7]), graph=g, thread_id="never-asked")
    out = _forget("never-asked", saver, g, settings)
    assert out is not None and out.studies == [sid] and sid not in runtime(g).studies.store
    assert _forget("never-asked", saver, g, settings) is None  # nothing left to know it by


def test_a_pending_reference_expires_with_the_retention(make_graph, settings, cxr_images):
    g, saver = checkpointed_graph(make_graph, settings)
    sid = store_image(str(cxr_images[3]), graph=g, thread_id="idle")
    now = time.time() + 3600  # an hour later, under a retention of half an hour
    out = apply_retention(settings.model_copy(update={"retention_days": 0.5 / 24}), saver=saver,
                          store=runtime(g).studies.store, now=now)
    assert out.studies == [sid] and held_by(settings, "idle") == set()
