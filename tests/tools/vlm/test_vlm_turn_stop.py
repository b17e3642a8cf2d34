"""The reader's Stop reaches a generation that is under way: the tiny VLM, run inside a graph run whose
config carries the turn's stop event (tools/stop.py), ends at its next token and frees the model."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from langchain_core.runnables.config import var_child_runnable_config
from PIL import Image

from tools.stop import STOP_KEY, turn_stop, with_turn_stop
from tools.vlm.backends.base import BackendError
from tools.vlm.backends.transformers_backend import TransformersBackend
from tools.vlm.prompts import ChatTurn


@contextmanager
def in_a_run(stop: threading.Event) -> Iterator[None]:
    """What a tool call sees: the run's config, copied into its worker's context by the tool runner."""
    token = var_child_runnable_config.set({"configurable": {"thread_id": "t", STOP_KEY: stop}})
    try:
        yield
    finally:
        var_child_runnable_config.reset(token)


def test_the_turn_stop_is_found_only_inside_a_run_that_has_one():
    assert turn_stop() is None and with_turn_stop(None) is None
    stop, own = threading.Event(), threading.Event()
    with in_a_run(stop):
        assert turn_stop() is stop
        joined = with_turn_stop(own)
        assert joined is not None and not joined.is_set()
        stop.set()
        assert joined.is_set() and not own.is_set()  # the call's own timeout event is left alone


def test_stop_ends_a_running_generation(tiny_backend: TransformersBackend) -> None:
    image = Image.new("RGB", (60, 60), 40)
    stop = threading.Event()
    timer = threading.Timer(0.3, stop.set)
    timer.start()
    try:
        with in_a_run(stop), pytest.raises(BackendError, match="turn was stopped"):
            tiny_backend.generate(image, [ChatTurn("user", "Hi")], max_new_tokens=100_000, min_new_tokens=100_000)
    finally:
        timer.cancel()
    assert tiny_backend._gen_lock.acquire(timeout=1)  # the model is free for the next turn
    tiny_backend._gen_lock.release()
    with in_a_run(stop), pytest.raises(BackendError, match="cancelled before it started"):
        tiny_backend.generate_batch(image, [[ChatTurn("user", "Hi")]])
