"""Conversations in a real PostgreSQL server (started by the ``postgres_server`` fixture).

Several app processes share threads through ``CXR_AGENT_CHECKPOINTER_URL=postgresql://...``: a
conversation started by one process is continued by another, concurrent threads stay isolated
through a connection pool smaller than the number of threads, and a server restart loses nothing
(the pool replaces its broken connections and the next turn simply continues).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest
from graph_scripted import ScriptedVLM, classifier

from agents.memory.checkpointers import CheckpointerError, make_checkpointer
from knowledge.evidence import Decision, Evidence

REPO = Path(__file__).resolve().parents[2]


def _report(g, image: Path, thread: str) -> dict:
    return g.invoke({"messages": [("user", "Write a report")], "image": str(image)},
                    {"configurable": {"thread_id": thread}})


def test_postgres_checkpointer_is_a_sized_pool(postgres_url, settings):
    from langgraph.checkpoint.postgres import PostgresSaver
    from psycopg_pool import ConnectionPool

    s = settings.model_copy(update={"checkpointer_url": postgres_url, "checkpointer_pool_min_size": 2,
                                    "checkpointer_pool_max_size": 3})
    saver = make_checkpointer(s)
    assert isinstance(saver, PostgresSaver) and isinstance(saver.conn, ConnectionPool)
    assert (saver.conn.min_size, saver.conn.max_size) == (2, 3)
    with psycopg.connect(postgres_url) as conn:  # setup() ran its migrations
        tables = {r[0] for r in conn.execute("select tablename from pg_tables where schemaname = 'public'")}
    assert {"checkpoints", "checkpoint_blobs", "checkpoint_writes"} <= tables
    saver.conn.close()


def test_unreachable_postgres_names_the_server_not_the_password(settings, postgres_server):
    from postgres_server import free_port

    s = settings.model_copy(update={"checkpointer_pool_timeout_s": 1.0})
    url = f"postgresql://cxr:s3cret@127.0.0.1:{free_port()}/cxr"
    t0 = time.monotonic()
    with pytest.raises(CheckpointerError, match=r"cannot use the Postgres checkpointer at '127\.0\.0\.1:\d+/cxr'") as ei:
        make_checkpointer(s, url=url)
    assert "s3cret" not in str(ei.value)
    assert time.monotonic() - t0 < 10  # bounded by checkpointer_pool_timeout_s, not a hang


def test_conversation_written_by_one_process_is_continued_by_another(make_graph, postgres_url, cxr_image,
                                                                     settings):
    g = make_graph(ScriptedVLM(report="Cardiomegaly."), classifier({"cardiomegaly": 0.85}),
                   checkpointer=make_checkpointer(settings, url=postgres_url))
    first = _report(g, cxr_image, "shared")
    script = textwrap.dedent(f"""
        import json
        from cxr_agent.settings import Settings
        from graph import build_graph
        s = Settings(model_profile="tiny", data_dir={str(settings.data_dir)!r})
        g = build_graph(s, builtin_tools=False, plugins=False)   # checkpointer from the URL below
        out = g.invoke({{"messages": [("user", "why did you call cardiomegaly?")]}},
                       {{"configurable": {{"thread_id": "shared"}}}})
        from agents.memory.checkpointers import make_checkpointer
        pool = make_checkpointer(s).conn   # the pool the environment configures
        print(json.dumps({{"reply": out["messages"][-1].content, "n": len(out["messages"]),
                          "study": out["study_id"], "pool": [pool.min_size, pool.max_size]}}))
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO), "LANGGRAPH_STRICT_MSGPACK": "true",
           "CXR_AGENT_CHECKPOINTER_URL": postgres_url, "CXR_AGENT_CHECKPOINTER_POOL_MIN_SIZE": "1",
           "CXR_AGENT_CHECKPOINTER_POOL_MAX_SIZE": "4", "CXR_AGENT_CHECKPOINTER_POOL_TIMEOUT_S": "10"}
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    other = json.loads(proc.stdout.strip().splitlines()[-1])
    cardio = next(d for d in first["decisions"] if d.finding == "cardiomegaly")
    assert cardio.rationale in other["reply"]
    assert other["n"] == 4 and other["study"] == first["study_id"] and other["pool"] == [1, 4]
    assert "unregistered type" not in proc.stderr and "Blocked deserialization" not in proc.stderr
    # ... and this process sees the other one's turn.
    state = g.get_state({"configurable": {"thread_id": "shared"}}).values
    assert [m.content for m in state["messages"]][2:] == ["why did you call cardiomegaly?", other["reply"]]
    assert state["decisions"] and all(isinstance(d, Decision) for d in state["decisions"])


def test_concurrent_threads_share_a_small_pool(make_graph, postgres_url, cxr_images, settings):
    s = settings.model_copy(update={"checkpointer_pool_min_size": 1, "checkpointer_pool_max_size": 3})
    saver = make_checkpointer(s, url=postgres_url)
    g = make_graph(ScriptedVLM(report="Cardiomegaly.", delay=0.02), classifier({"cardiomegaly": 0.8}, delay=0.02),
                   checkpointer=saver)
    images = cxr_images[:6]

    def converse(i: int):
        cfg = {"configurable": {"thread_id": f"pg-{i}"}}
        first = g.invoke({"messages": [("user", "Write a report")], "image": str(images[i])}, cfg)
        second = g.invoke({"messages": [("user", f"Is there cardiomegaly? ({i})")]}, cfg)
        return first, second

    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(converse, range(6)))
    ids = [first["study_id"] for first, _ in results]
    assert len(set(ids)) == 6
    assert saver.conn.get_stats()["pool_size"] <= 3
    for i, (_, second) in enumerate(results):
        state = g.get_state({"configurable": {"thread_id": f"pg-{i}"}}).values
        assert state["study_id"] == second["study_id"] == ids[i]
        assert state["messages"][2].content == f"Is there cardiomegaly? ({i})"
        assert all(isinstance(e, Evidence) and e.meta.get("study") in (None, ids[i])
                   for e in state["ledger"].evidence())
    saver.conn.close()


def test_conversation_and_pool_survive_a_server_restart(make_graph, postgres_url, postgres_server, cxr_image,
                                                        settings):
    saver = make_checkpointer(settings, url=postgres_url)
    vlm = ScriptedVLM(report="Cardiomegaly.")
    g = make_graph(vlm, classifier({"cardiomegaly": 0.85}), checkpointer=saver)
    first = _report(g, cxr_image, "restart")
    postgres_server.restart()  # fast shutdown: every pooled connection is cut
    out = g.invoke({"messages": [("user", "why did you call cardiomegaly?")]},
                   {"configurable": {"thread_id": "restart"}})
    cardio = next(d for d in first["decisions"] if d.finding == "cardiomegaly")
    assert cardio.rationale in out["messages"][-1].content
    assert out["study_id"] == first["study_id"] and len(out["messages"]) == 4
    saver.conn.close()
    # A process started after the restart reads the same thread.
    fresh = make_graph(ScriptedVLM(), classifier({}), checkpointer=make_checkpointer(settings, url=postgres_url))
    state = fresh.get_state({"configurable": {"thread_id": "restart"}}).values
    assert len(state["messages"]) == 4 and state["study_id"] == first["study_id"]


def test_postgres_rows_hold_no_pixels_and_no_raw_input(make_graph, postgres_url, cxr_image, settings):
    g = make_graph(ScriptedVLM(report="Cardiomegaly."), classifier({"cardiomegaly": 0.85}),
                   checkpointer=make_checkpointer(settings, url=postgres_url))
    _report(g, cxr_image, "small")
    with psycopg.connect(postgres_url) as conn:
        blob = conn.execute("select max(length(blob)) from checkpoint_blobs").fetchone()[0]
        write = conn.execute("select max(length(blob)) from checkpoint_writes").fetchone()[0] or 0  # none: saved at exit
        raw = conn.execute("select count(*) from checkpoint_writes where channel in ('image', 'image_name')"
                           ).fetchone()[0]
        dump = b"".join(r[0] or b"" for r in conn.execute("select blob from checkpoint_writes"))
    assert blob < 50_000 and write < 50_000  # the study is 1024 x 1024 float32 = 4 MB
    assert raw == 0 and cxr_image.name.encode() not in dump
