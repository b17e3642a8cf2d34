"""cxr_agent/heap.py: a one-time load's live objects leave the full collections; garbage is not frozen."""

from __future__ import annotations

import gc
import weakref

import pytest

from cxr_agent import heap
from cxr_agent.settings import get_settings


@pytest.fixture(autouse=True)
def _fresh_settings():
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


class _Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cyclic collector frees it


def test_settle_freezes_the_live_heap_after_collecting(monkeypatch):
    monkeypatch.setenv("CXR_AGENT_GC_FREEZE", "true")
    gc.unfreeze()
    garbage, alive = _Node(), _Node()
    dead = weakref.ref(garbage)
    del garbage  # a cycle nobody references: garbage only the cyclic collector can free
    assert dead() is not None
    heap.settle()
    assert dead() is None  # collected first, not frozen
    assert gc.get_freeze_count() > 0 and not any(o is alive for o in gc.get_objects())  # alive: frozen
    gc.unfreeze()
    assert any(o is alive for o in gc.get_objects())


def test_settle_is_off_when_configured(monkeypatch):
    monkeypatch.setenv("CXR_AGENT_GC_FREEZE", "false")
    gc.unfreeze()
    heap.settle()
    assert gc.get_freeze_count() == 0


def test_loading_the_labelers_pipeline_settles_the_heap(monkeypatch):
    monkeypatch.setenv("CXR_AGENT_GC_FREEZE", "true")
    from knowledge import context_cues

    context_cues.context.cache_clear()
    gc.unfreeze()
    context_cues.context()
    assert gc.get_freeze_count() > 0
