"""Retention and forgetting: conversations, the studies only they used, heatmaps, audit days."""

from __future__ import annotations

import os
import time
from pathlib import Path

from retention_graph import ask
from retention_graph import checkpointed_graph as _graph

from agents.memory.checkpointers import make_checkpointer
from agents.memory.retention import apply_retention, forget_thread, scan
from graph import runtime, store_image


def _turn(g, thread: str, text: str, image: Path | None = None) -> dict:
    return ask(g, thread, text, store_image(str(image), graph=g) if image is not None else None)


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


def _audit_threads(settings) -> list[str]:
    import json

    return [json.loads(line)["thread"] for f in sorted((settings.data_dir / "audit").glob("*.jsonl"))
            for line in f.read_text().splitlines()]


def test_forget_removes_the_threads_audit_lines(make_graph, settings, cxr_images):
    g, saver = _graph(make_graph, settings)
    _turn(g, "keep", "Write a report", cxr_images[0])
    _turn(g, "gone", "Write a report", cxr_images[1])
    _turn(g, "gone", "why?")
    assert sorted(_audit_threads(settings)) == ["gone", "gone", "keep"]
    out = forget_thread("gone", saver=saver, store=runtime(g).studies.store, artifacts_dir=settings.artifacts_dir,
                        settings=settings)
    assert out is not None and out.audit_lines == 2
    assert _audit_threads(settings) == ["keep"]
    for f in (settings.data_dir / "audit").iterdir():
        assert f.suffix == ".jsonl" and f.stat().st_mode & 0o777 == 0o600  # no temporary file left behind


def test_forget_keeps_a_study_uploaded_again_and_not_yet_used(make_graph, settings, cxr_images):
    g, saver = _graph(make_graph, settings)
    first = _turn(g, "gone", "Write a report", cxr_images[0])
    time.sleep(0.02)
    pending = store_image(str(cxr_images[0]), graph=g)  # another conversation's upload, before its first turn
    assert pending == first["study_id"]
    store = runtime(g).studies.store
    out = forget_thread("gone", saver=saver, store=store, artifacts_dir=settings.artifacts_dir, settings=settings)
    assert out is not None and out.kept_recent == [pending] and out.studies == []
    assert pending in store
    g.invoke({"messages": [("user", "Write a report")], "study_id": pending}, {"configurable": {"thread_id": "b"}})


def test_retention_reads_one_checkpoint_per_live_thread(make_graph, settings, cxr_images):
    g, saver = _graph(make_graph, settings)
    old = _turn(g, "old", "Write a report", cxr_images[2])
    _turn(g, "old", "why?")
    time.sleep(0.05)
    boundary = time.time()
    time.sleep(0.05)
    for _ in range(3):
        _turn(g, "new", "why?", cxr_images[3])
    listed: list = []
    read: list = []
    real_list, real_get = saver.list, saver.get_tuple
    saver.list = lambda config, **kw: (listed.append(config), real_list(config, **kw))[1]
    saver.get_tuple = lambda config: (read.append(config), real_get(config))[1]
    now = time.time()
    out = apply_retention(settings.model_copy(update={"retention_days": (now - boundary) / 86400}), saver=saver,
                          store=runtime(g).studies.store, now=now)
    assert out.threads == ["old"] and out.studies == [old["study_id"]] and out.compacted is True
    assert None not in listed  # never every checkpoint of every thread
    assert [c["configurable"]["thread_id"] for c in listed] == ["old"]  # history only of the expired thread
    assert sorted(c["configurable"]["thread_id"] for c in read) == ["new", "old"]


def test_compaction_that_cannot_finish_is_reported(make_graph, settings, cxr_images):
    import sqlite3

    g, saver = _graph(make_graph, settings)
    _turn(g, "a", "Write a report", cxr_images[0])
    _turn(g, "b", "Write a report", cxr_images[1])
    reader = sqlite3.connect(settings.data_dir / "checkpoints.sqlite", timeout=0.1)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM checkpoints").fetchall()  # a read transaction pins the WAL
    saver.conn.execute("PRAGMA busy_timeout=100")
    store = runtime(g).studies.store
    try:
        held = forget_thread("a", saver=saver, store=store, artifacts_dir=settings.artifacts_dir, settings=settings)
    finally:
        reader.rollback()
        reader.close()
    assert held is not None and held.compacted is False
    done = forget_thread("b", saver=saver, store=store, artifacts_dir=settings.artifacts_dir, settings=settings)
    assert done is not None and done.compacted is True
