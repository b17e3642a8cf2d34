"""The tool runner and the graph's edges: bounded pool, cancellation, the turn deadline, the input
schema, the lazy checkpointer and the one ingestion path."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from graph_scripted import ScriptedTool, ScriptedVLM, classifier

from agents.turn.tool_runner import Deadline, PoolFull, ToolPool, call_with_timeout
from knowledge.evidence import Evidence, Status

REPO = Path(__file__).resolve().parents[2]


def test_full_pool_refuses_with_a_clear_error_instead_of_growing():
    pool = ToolPool(max_workers=1, prefix="cxr-test-full")
    release = threading.Event()
    hung = call_with_timeout("hung", lambda: release.wait(10) and Evidence(tool="hung"), 0.1, pool=pool)
    assert not hung.ok and hung.error == "hung timed out after 0.1 s"  # still holds the only worker
    t0 = time.perf_counter()
    ev = call_with_timeout("next", lambda: Evidence(tool="next"), 0.2, pool=pool)
    assert not ev.ok and ev.error.startswith("next was not run: all 1 tool workers stayed busy for 0.2 s")
    assert "CXR_AGENT_TOOL_WORKERS" in ev.error and time.perf_counter() - t0 < 5
    assert pool.workers == 1  # no thread was added for it
    with pytest.raises(PoolFull):
        pool.submit(lambda: None)
    release.set()  # the hung call returns: its worker serves the next call
    deadline = time.monotonic() + 5
    while pool.busy and time.monotonic() < deadline:
        time.sleep(0.01)
    assert call_with_timeout("again", lambda: Evidence(tool="again", answer="ok"), 5.0, pool=pool).answer == "ok"
    assert pool.workers == 1


def test_timed_out_call_has_its_cancel_event_set():
    cancel = threading.Event()
    seen = threading.Event()

    def slow():
        if cancel.wait(5):
            seen.set()
        return Evidence(tool="slow")

    ev = call_with_timeout("slow", slow, 0.1, cancel=cancel, pool=ToolPool(2, prefix="cxr-test-cancel"))
    assert not ev.ok and "timed out" in ev.error and cancel.is_set()
    assert seen.wait(5)  # the tool saw it and stopped early


def test_graph_sets_a_timed_out_tools_request_cancel(make_graph, thread, cxr_image):
    stopped = threading.Event()

    def generate(request):
        if request.cancel.wait(5):  # a generation's stopping criterion would check this
            stopped.set()
        return Evidence(tool="slowvlm", answer="late")

    slow = ScriptedTool("slowvlm", {"chat"}, generate, image_source=False)
    out = make_graph(slow, tool_timeout_s=0.3).invoke({"messages": [("user", "hello")]}, thread())
    ev = next(e for e in out["evidence"] if e.tool == "slowvlm")
    assert ev.error == "slowvlm timed out after 0.3 s"
    assert stopped.wait(5) and slow.requests[0].cancel.is_set()


def test_verification_shares_what_is_left_of_the_turn(make_graph, thread, cxr_image):
    def slow_verify(finding):
        time.sleep(3)
        return Evidence(tool="vlm", answer="Yes.")

    vlm = ScriptedVLM(report="Mild cardiomegaly.", verify=slow_verify)
    clf = classifier({"pleural_effusion": 0.9, "pneumothorax": 0.9, "cardiomegaly": 0.8})
    t0 = time.perf_counter()
    out = make_graph(vlm, clf, tool_timeout_s=10, turn_timeout_s=1.5).invoke(
        {"messages": [("user", "Write a report")], "image": str(cxr_image)}, thread())
    elapsed = time.perf_counter() - t0
    rechecks = [e for e in out["evidence"] if e.meta.get("verification")]
    assert sorted(e.meta["verification"] for e in rechecks) == ["pleural_effusion", "pneumothorax"]
    assert len(vlm.verify_batches) == 1  # one call for both conflicts
    timeout = float(rechecks[0].error.removeprefix("vlm timed out after ").removesuffix(" s"))
    assert 0 < timeout < 1.5  # the turn's remainder, not the 10 s tool timeout
    assert elapsed < 6
    for d in out["decisions"]:
        if d.finding in ("pleural_effusion", "pneumothorax"):
            assert d.needs_review and d.status is Status.uncertain


def test_a_turn_past_its_deadline_runs_no_more_tools(make_graph, thread, cxr_image, monkeypatch):
    import agents.turn.nodes as nodes_module

    vlm = ScriptedVLM()
    real = nodes_module.Deadline

    class Expired(real):
        def left(self) -> float:
            return -1.0

    monkeypatch.setattr(nodes_module, "Deadline", Expired)
    out = make_graph(vlm).invoke({"messages": [("user", "hello")]}, thread())
    assert vlm.calls == 0
    assert "not run: the turn's deadline" in next(e for e in out["evidence"] if e.tool == "vlm").error
    assert Deadline.after(5).budget(300) <= 5 and Deadline.after(500).budget(3) == 3


@pytest.mark.parametrize("bad, key", [({"image": 5}, "image"), ({"study_id": 3}, "study_id"),
                                      ({"image": "x.png", "image_name": ["a"]}, "image_name"),
                                      ({"study_id": "  "}, "study_id")])
def test_invoke_validates_its_input(make_graph, thread, bad, key):
    from agents.state import GraphInputError

    with pytest.raises(GraphInputError, match=f"invalid graph input: {key} must be"):
        make_graph(ScriptedVLM()).invoke({"messages": [("user", "hello")], **bad}, thread())


def test_input_schema_is_the_documented_keys(make_graph):
    schema = make_graph(ScriptedVLM()).get_input_jsonschema()
    assert set(schema["properties"]) == {"messages", "image", "image_name", "study_id", "prior_study_id", "pairs",
                                          "patient_salt"}
    assert schema["additionalProperties"] is False


def test_import_graph_opens_no_database(tmp_path):
    """`import graph` (and `from graph import graph`) creates no checkpoint file; the first turn does."""
    code = (
        "import pathlib, sys, graph; from graph import graph as g; "
        "files = sorted(p.name for p in pathlib.Path(sys.argv[1]).rglob('*') if p.is_file()); "
        "print('after import:', files); "
        "g.get_state({'configurable': {'thread_id': 'x'}}); "
        "print('after first use:', sorted(p.name for p in pathlib.Path(sys.argv[1]).rglob('*.sqlite')))"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "CXR_AGENT_DATA_DIR": str(tmp_path)}
    env.pop("CXR_AGENT_CHECKPOINTER_URL", None)
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    assert lines[-2] == "after import: []"
    assert lines[-1] == "after first use: ['checkpoints.sqlite']"  # the lazy saver opened it on demand


def test_lazy_saver_delegates_and_opens_once(tmp_path):
    from agents.memory.checkpointers import make_checkpointer
    from agents.memory.lazy_saver import LazySaver

    made = []

    def factory():
        made.append(1)
        return make_checkpointer(url=f"sqlite:///{tmp_path / 'c.sqlite'}")

    saver = LazySaver(factory)
    assert not saver.opened and not (tmp_path / "c.sqlite").exists()
    assert saver.get_tuple({"configurable": {"thread_id": "t", "checkpoint_ns": ""}}) is None
    assert saver.opened and len(made) == 1 and (tmp_path / "c.sqlite").exists()
    assert list(saver.list(None)) == [] and len(made) == 1


def test_ui_and_graph_share_one_store_and_the_cache_is_bounded(make_graph, thread, cxr_images):
    from graph import ingest_image, runtime, store_image

    g = make_graph(ScriptedVLM(), classifier({"cardiomegaly": 0.8}), study_cache_size=2)
    rt = runtime(g)
    study = ingest_image(str(cxr_images[0]), graph=g)
    assert study.id in rt.studies.store and rt.studies.cached == [study.id]
    ids = [store_image(str(p), graph=g) for p in cxr_images[1:4]]
    assert rt.studies.cached == ids[-2:]  # the setting bounds the decoded studies kept in memory
    out = g.invoke({"messages": [("user", "Is there cardiomegaly?")], "study_id": study.id}, thread())
    assert out["study_id"] == study.id  # the graph read what the store API put
    with pytest.raises(ValueError, match="not compiled by graph.build_graph"):
        runtime(object())
    assert not hasattr(g, "cxr_nodes")


def test_a_saver_passed_in_drops_the_raw_image_input(make_graph, thread, cxr_image):
    from langgraph.checkpoint.memory import InMemorySaver

    saver = InMemorySaver()
    g = make_graph(ScriptedVLM(), checkpointer=saver)
    data = cxr_image.read_bytes()
    cfg = thread()
    g.invoke({"messages": [("user", "hello")], "image": data, "image_name": "DOE_JOHN.png"}, cfg)
    dump = repr(saver.storage) + repr(saver.writes)
    assert "DOE_JOHN" not in dump and data[:64] not in dump.encode()
    assert [c.checkpoint["channel_values"].get("study_id") for c in saver.list(cfg)][0]


def test_a_served_graph_takes_only_messages_study_ids_and_pairs(settings):
    from graph import build_graph

    g = build_graph(settings, tools=[ScriptedVLM()], builtin_tools=False, plugins=False, checkpointer=False,
                    server_input=True)
    assert set(g.get_input_jsonschema()["properties"]) == {"messages", "study_id", "prior_study_id", "pairs"}


def test_ingestion_uses_the_graphs_settings(make_graph, cxr_image):
    from graph import store_image
    from tools.ingestion.study import StudyError

    g = make_graph(ScriptedVLM(), max_image_pixels=4096)  # the smallest cap the setting allows
    with pytest.raises(StudyError):
        store_image(str(cxr_image), graph=g)
