"""The reader's Stop reaches the classifier: inside a run whose config carries the turn's stop event
(tools/stop.py), the tiny classifier looks before its forward pass and before each heatmap, and a stopped
call ends as a failure that says so, with no scores (a half-run call is never recorded as an answer)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from langchain_core.runnables.config import var_child_runnable_config

from tools.base import ToolRequest
from tools.stop import STOP_KEY


@contextmanager
def in_a_run(stop: threading.Event) -> Iterator[None]:
    """What a tool call sees: the run's config, copied into its worker's context by the tool runner."""
    token = var_child_runnable_config.set({"configurable": {"thread_id": "t", STOP_KEY: stop}})
    try:
        yield
    finally:
        var_child_runnable_config.reset(token)


@pytest.fixture
def passes(tiny_tool, monkeypatch) -> dict[str, int]:
    """Counts the tiny model's forward passes and heatmaps (the real ones run)."""
    seen = {"forward": 0, "heatmap": 0}
    forward, heatmap = tiny_tool._forward, tiny_tool._heatmap

    def counted_forward(prepped):
        seen["forward"] += 1
        return forward(prepped)

    def counted_heatmap(*args):
        seen["heatmap"] += 1
        return heatmap(*args)

    monkeypatch.setattr(tiny_tool, "_forward", counted_forward)
    monkeypatch.setattr(tiny_tool, "_heatmap", counted_heatmap)
    return seen


def locate(study) -> ToolRequest:
    return ToolRequest(intent="locate", study=study, finding="pleural_effusion")


def test_unstopped_run_scores_and_maps(tiny_tool, real_study, passes):
    with in_a_run(threading.Event()):
        ev = tiny_tool.run(locate(real_study))
    assert ev.ok, ev.error
    assert ev.calls and [a.finding for a in ev.artifacts] == ["pleural_effusion"]
    assert passes == {"forward": 1, "heatmap": 1}


def test_stop_set_before_the_call_runs_no_forward_pass(tiny_tool, real_study, passes):
    stop = threading.Event()
    stop.set()
    with in_a_run(stop):
        ev = tiny_tool.run(locate(real_study))
    assert not ev.ok and ev.tool == "classifier"
    assert ev.error == "stopped by the reader before its forward pass: no scores recorded"
    assert ev.calls == [] and ev.artifacts == []
    assert passes == {"forward": 0, "heatmap": 0}


def test_stop_during_the_forward_pass_ends_before_the_heatmap(tiny_tool, real_study, passes, monkeypatch):
    stop = threading.Event()
    forward = tiny_tool._forward

    def forward_then_stop(prepped):
        out = forward(prepped)
        stop.set()  # the reader presses Stop while the model runs
        return out

    monkeypatch.setattr(tiny_tool, "_forward", forward_then_stop)
    with in_a_run(stop):
        ev = tiny_tool.run(locate(real_study))
    assert not ev.ok
    assert ev.error == "stopped by the reader before the heatmap of Pleural effusion: no scores recorded"
    assert ev.calls == [] and ev.artifacts == []
    assert passes["forward"] == 1 and passes["heatmap"] == 0


def test_the_calls_own_timeout_also_ends_it(tiny_tool, real_study, passes):
    request = locate(real_study)
    request.cancel.set()  # what the tool runner does when the call's time is up
    ev = tiny_tool.run(request)
    assert not ev.ok and ev.error.startswith("cancelled (the call timed out) before its forward pass")
    assert passes["forward"] == 0


def test_a_graph_run_given_a_set_stop_keeps_no_classifier_scores(make_graph, tiny_tool, cxr_image):
    """Through the graph's tool runner (its pool workers copy the run's context): the stop event of the run's
    config reaches the classifier, whose call ends stopped; no finding is decided from it."""
    from langchain_core.messages import HumanMessage

    graph = make_graph(tiny_tool)
    stop = threading.Event()
    stop.set()
    out = graph.invoke({"messages": [HumanMessage("Is there a pleural effusion?")], "image": str(cxr_image)},
                       {"configurable": {"thread_id": "stopped-classifier", STOP_KEY: stop}})
    ran = [e for e in out["evidence"] if e.tool == "classifier"]
    assert len(ran) == 1 and not ran[0].ok
    assert ran[0].error == "stopped by the reader before its forward pass: no scores recorded"
    assert not any("classifier" in d.agreeing + d.disagreeing for d in out.get("decisions") or [])
    unstopped = graph.invoke({"messages": [HumanMessage("Is there a pleural effusion?")], "image": str(cxr_image)},
                             {"configurable": {"thread_id": "running-classifier", STOP_KEY: threading.Event()}})
    assert [e.ok for e in unstopped["evidence"] if e.tool == "classifier"] == [True]
    assert any("classifier" in d.agreeing + d.disagreeing for d in unstopped["decisions"])
