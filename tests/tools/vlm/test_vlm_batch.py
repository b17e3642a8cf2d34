"""Batched re-asks on the tiny random LLaVA-OneVision: the same PARSED results as serial asks (random
weights may break greedy ties differently, so calls are compared, not text), and cancel stops a
generation and frees the model."""

from __future__ import annotations

import threading
import time

import pytest
from PIL import Image

from tools.base import ToolRequest
from tools.ingestion.study import Study
from tools.vlm.backends.base import BackendError
from tools.vlm.backends.transformers_backend import TransformersBackend
from tools.vlm.prompts import ChatTurn
from tools.vlm.tool import VLMTool

FINDINGS = ["pleural_effusion", "pneumothorax", "cardiomegaly", "edema"]


def _parsed(ev) -> list[tuple]:
    return [(c.finding, c.status, c.box) for c in ev.calls]


def test_batched_reasks_parse_like_serial_ones(tiny_settings, tiny_backend: TransformersBackend, study: Study) -> None:
    tiny_backend.cache_clear()
    tool = VLMTool(tiny_settings, backend=tiny_backend)
    batched = tool.verify(study, FINDINGS, thread_id="b")
    serial = [tool.verify(study, [f], thread_id="s")[0] for f in FINDINGS]
    assert all(e.ok for e in batched + serial), [e.error for e in batched + serial]
    assert [_parsed(e) for e in batched] == [_parsed(e) for e in serial]
    assert [e.meta["prompt"] for e in batched] == [e.meta["prompt"] for e in serial]
    assert batched[0].meta["batch_size"] == len(FINDINGS) and serial[0].meta["batch_size"] == 1


@pytest.mark.filterwarnings("error::FutureWarning")  # the KV cache under transformers' current keyword
def test_batch_generate_matches_serial_text_on_the_tiny_model(tiny_backend: TransformersBackend) -> None:
    image = Image.new("RGB", (90, 60), 90)
    convs = [[ChatTurn("user", "Is there any pleural effusion?")], [ChatTurn("user", "Hi")],
             [ChatTurn("user", "Are there any abnormalities on this Chest X-ray?")]]
    serial = [tiny_backend.generate(image, c, cache_key="bt", max_new_tokens=10) for c in convs]
    batched = tiny_backend.generate_batch(image, convs, cache_key="bt", max_new_tokens=10)
    assert [r.text for r in batched] == [r.text for r in serial]  # measured identical on CPU float32
    assert all(r.cache_hit for r in batched) and batched[0].kv_prefix_hit


def test_report_turn_runs_classification_on_the_same_image(tiny_settings, tiny_backend, study: Study) -> None:
    tiny_backend.cache_clear()
    ev = VLMTool(tiny_settings, backend=tiny_backend).run(ToolRequest(intent="report", study=study, thread_id="rt"))
    assert ev.ok and set(ev.meta["prompts"]) == {"report", "classification", "detection"}
    assert set(ev.meta["answers"]) == {"classification", "detection"}  # gibberish, parsed or kept as text
    assert tiny_backend.cache_info()["entries"] == 1  # one encoded image served all three asks


def test_cancel_stops_generation_and_releases_the_model(tiny_settings, tiny_backend: TransformersBackend) -> None:
    image = Image.new("RGB", (60, 60), 30)
    cancel = threading.Event()
    timer = threading.Timer(0.3, cancel.set)
    timer.start()
    t0 = time.perf_counter()
    try:
        tiny_backend.generate(image, [ChatTurn("user", "Hi")], max_new_tokens=100_000, min_new_tokens=100_000,
                              cancel=cancel)
        raise AssertionError("generation was not cancelled")
    except BackendError as exc:
        assert "cancelled" in str(exc)
    finally:
        timer.cancel()
    assert time.perf_counter() - t0 < 30
    assert tiny_backend._gen_lock.acquire(timeout=1)  # the lock is free again
    tiny_backend._gen_lock.release()
    done = threading.Event()
    done.set()
    try:
        tiny_backend.generate_batch(image, [[ChatTurn("user", "Hi")]], cancel=done)
        raise AssertionError("a cancelled batch ran")
    except BackendError as exc:
        assert "cancelled" in str(exc)
