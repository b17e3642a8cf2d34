"""Threads are isolated: concurrent conversations never see each other's study or evidence."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from graph_scripted import ScriptedVLM, classifier

from agents.memory.checkpointers import make_checkpointer


@pytest.mark.parametrize("store", ["memory", "sqlite"])
def test_eight_concurrent_threads_are_isolated(make_graph, cxr_images, tmp_path, store):
    clf = classifier({"cardiomegaly": 0.8}, delay=0.05)
    vlm = ScriptedVLM(report="Cardiomegaly.", delay=0.05)
    url = "memory" if store == "memory" else f"sqlite:///{tmp_path / 'threads.sqlite'}"
    g = make_graph(vlm, clf, checkpointer=make_checkpointer(url=url))
    images = cxr_images[:8]

    def converse(i: int):
        cfg = {"configurable": {"thread_id": f"iso-{i}"}}
        first = g.invoke({"messages": [("user", "Write a report")], "image": str(images[i])}, cfg)
        second = g.invoke({"messages": [("user", f"Is there cardiomegaly? ({i})")]}, cfg)
        return first, second

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(converse, range(8)))

    ids = [first["study_id"] for first, _ in results]
    assert len(set(ids)) == 8
    for i, (first, second) in enumerate(results):
        assert second["study_id"] == ids[i]
        for out in (first, second):
            clf_ev = next(e for e in out["evidence"] if e.tool == "classifier")
            assert clf_ev.meta["study"] == ids[i]  # the tool saw this thread's study
        assert len(second["messages"]) == 4
        assert second["messages"][2].content == f"Is there cardiomegaly? ({i})"
        state = g.get_state({"configurable": {"thread_id": f"iso-{i}"}}).values
        assert state["study_id"] == ids[i]
        assert state["ledger"].study_id == ids[i]
