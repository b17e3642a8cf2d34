"""The optional LLM router is bounded by router_timeout_s: past it the rules route the turn."""

from __future__ import annotations

import threading

from agents.routing import make_router
from agents.routing.llm import RouteDecision
from cxr_agent.settings import Settings


class _SlowLLM:
    """A chat model stand-in whose structured call blocks until released (or answers at once)."""

    def __init__(self, *, hang: bool):
        self.release = threading.Event()
        self.hang = hang
        self.calls = 0

    def with_structured_output(self, _schema):
        return self

    def invoke(self, _messages):
        self.calls += 1
        if self.hang:
            self.release.wait(30)
        return RouteDecision(intent="similar_cases", finding=None, phrase=None, reason="llm says so")


def test_hung_llm_router_falls_back_to_rules_after_timeout(tmp_path):
    llm = _SlowLLM(hang=True)
    router = make_router(Settings(data_dir=tmp_path, router_timeout_s=0.2), llm=llm)
    try:
        r = router("Is there a pleural effusion?", has_image=True)
    finally:
        llm.release.set()
    assert llm.calls == 1
    assert r.method == "rules" and r.intent == "finding_question" and r.findings == ["pleural_effusion"]
    assert "LLM router timed out after 0.2 s" in r.reason


def test_prompt_llm_router_is_used_within_timeout(tmp_path):
    llm = _SlowLLM(hang=False)
    r = make_router(Settings(data_dir=tmp_path, router_timeout_s=5), llm=llm)("find similar cases", has_image=True)
    assert r.method == "llm" and r.intent == "similar_cases" and r.reason == "llm says so"
