"""Retention and forgetting: conversations, the studies only they used, heatmaps, audit days."""

from __future__ import annotations

import os
import time
from pathlib import Path

from graph_scripted import ScriptedVLM, classifier

from agents.memory.checkpointers import make_checkpointer
from agents.memory.retention import apply_retention, forget_thread, scan
from graph import runtime, store_image


def _graph(make_graph, settings):
    saver = make_checkpointer(settings.model_copy(update={"checkpointer_url": None}))
    g = make_graph(ScriptedVLM(report="Cardiomegaly."), classifier({"cardiomegaly": 0.85}), checkpointer=saver)
    return g, saver


def _turn(g, thread: str, text: str, image: Path | None = None) -> dict:
    inputs: dict = {"messages": [("user", text)]}
    if image is not None:
        inputs["study_id"] = store_image(str(image), graph=g)
    return g.invoke(inputs, {"configurable": {"thread_id": thread}})


def _heatmap_dir(settings, study_id: str) -> Path:
    """What the classifier leaves per study (the scripted classifier writes none)."""
    d = settings.artifacts_dir / study_id
    d.mkdir(parents=True, exist_ok=True)
    (d / "classifier-x-cardiomegaly.npy").write_bytes(b"\x93NUMPY heat")
    return d


def test_data_dir_and_database_are_owner_only(settings):
    make_checkpointer(settings.model_copy(update={"checkpointer_url": None}))
    assert settings.data_dir.stat().st_mode & 0o777 == 0o700
    assert (settings.data_dir / "checkpoints.sqlite").stat().st_mode & 0o777 == 0o600


def test_forget_keeps_a_study_another_thread_uses(make_graph, settings, cxr_images):
    g, saver = _graph(make_graph, settings)
    shared, own = cxr_images[0], cxr_images[1]
    keep = _turn(g, "keep", "Write a report", shared)
    _turn(g, "gone", "Write a report", shared)
    gone = _turn(g, "gone", "Write a report", own)
    for sid in (keep["study_id"], gone["study_id"]):
        _heatmap_dir(settings, sid)
    assert set(scan(saver)) == {"keep", "gone"}
    store = runtime(g).studies.store
    out = forget_thread("gone", saver=saver, store=store, artifacts_dir=settings.artifacts_dir)
    assert out is not None and out.threads == ["gone"] and out.studies == [gone["study_id"]]
    assert gone["study_id"] not in store and keep["study_id"] in store
    assert not (settings.artifacts_dir / gone["study_id"]).exists()
    assert (settings.artifacts_dir / keep["study_id"]).exists()
    assert set(scan(saver)) == {"keep"}
    assert g.get_state({"configurable": {"thread_id": "gone"}}).values == {}
    assert forget_thread("never", saver=saver, store=store, artifacts_dir=settings.artifacts_dir) is None


def test_retention_drops_only_what_is_older(make_graph, settings, cxr_images):
    g, saver = _graph(make_graph, settings)
    old = _turn(g, "old", "Write a report", cxr_images[2])
    orphan_id = store_image(str(cxr_images[4]), graph=g)  # uploaded, never asked about
    audit = settings.data_dir / "audit"
    audit.mkdir(exist_ok=True)
    (audit / "2000-01-01.jsonl").write_text("{}\n")
    time.sleep(0.05)
    boundary = time.time()
    time.sleep(0.05)
    new = _turn(g, "new", "Write a report", cxr_images[3])
    for p in settings.studies_dir.rglob(f"{orphan_id}*"):  # the orphan's files date from before the boundary
        os.utime(p, (boundary - 10, boundary - 10))
    now = time.time()
    days = (now - boundary) / 86400
    off = apply_retention(settings.model_copy(update={"retention_days": 0}), saver=saver, store=runtime(g).studies.store)
    assert not off and set(scan(saver)) == {"old", "new"}
    out = apply_retention(settings.model_copy(update={"retention_days": days}), saver=saver,
                          store=runtime(g).studies.store, now=now)
    assert out.threads == ["old"]
    assert set(out.studies) == {old["study_id"], orphan_id}
    assert new["study_id"] in runtime(g).studies.store and old["study_id"] not in runtime(g).studies.store
    assert not (audit / "2000-01-01.jsonl").exists() and out.audit_files == 1
    assert set(scan(saver)) == {"new"}
