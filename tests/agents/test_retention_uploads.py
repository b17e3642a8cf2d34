"""Forgetting a conversation never deletes a study another conversation has uploaded and not yet used
in a checkpointed turn (a pending upload), and retention takes an expired thread's audit lines with it."""

from __future__ import annotations

import json
import time

from retention_graph import ask, checkpointed_graph

from agents.memory.retention import apply_retention, forget_thread
from graph import runtime, store_image


def test_a_study_uploaded_by_another_conversation_before_this_ones_last_turn_is_kept(make_graph, settings,
                                                                                    cxr_images):
    g, saver = checkpointed_graph(make_graph, settings)
    sid = store_image(str(cxr_images[0]), graph=g)  # this conversation's own upload
    ask(g, "gone", "Write a report", sid)
    time.sleep(0.02)
    assert store_image(str(cxr_images[0]), graph=g) == sid  # another conversation uploads the same image...
    time.sleep(0.02)
    ask(g, "gone", "Is there cardiomegaly?")  # ...and this one asks again before that one's first turn
    store = runtime(g).studies.store
    out = forget_thread("gone", saver=saver, store=store, artifacts_dir=settings.artifacts_dir, settings=settings)
    assert out is not None and out.studies == [] and out.kept_recent == [sid]
    assert sid in store
    reply = ask(g, "other", "Write a report", sid)  # the other conversation's first turn still reads it
    assert reply["study_id"] == sid and "not in the study store" not in reply["messages"][-1].content


def test_a_conversations_own_upload_goes_with_it_after_several_turns(make_graph, settings, cxr_images):
    g, saver = checkpointed_graph(make_graph, settings)
    sid = store_image(str(cxr_images[1]), graph=g)
    ask(g, "gone", "Write a report", sid)
    time.sleep(0.02)
    ask(g, "gone", "Is there cardiomegaly?")
    store = runtime(g).studies.store
    out = forget_thread("gone", saver=saver, store=store, artifacts_dir=settings.artifacts_dir, settings=settings)
    assert out is not None and out.studies == [sid] and out.kept_recent == []
    assert sid not in store


def _audit_threads(settings) -> list[str]:
    return [json.loads(line)["thread"] for f in sorted((settings.data_dir / "audit").glob("*.jsonl"))
            for line in f.read_text().splitlines()]


def test_retention_removes_an_expired_threads_audit_lines_of_a_day_it_keeps(make_graph, settings, cxr_images):
    g, saver = checkpointed_graph(make_graph, settings)
    ask(g, "old", "Write a report", store_image(str(cxr_images[2]), graph=g))
    time.sleep(0.05)
    boundary = time.time()
    time.sleep(0.05)
    ask(g, "new", "Write a report", store_image(str(cxr_images[3]), graph=g))
    assert sorted(_audit_threads(settings)) == ["new", "old"]  # both lines in today's file
    now = time.time()
    out = apply_retention(settings.model_copy(update={"retention_days": (now - boundary) / 86400}), saver=saver,
                          store=runtime(g).studies.store, now=now)
    assert out.threads == ["old"] and out.audit_lines == 1 and out.audit_files == 0
    assert _audit_threads(settings) == ["new"]
