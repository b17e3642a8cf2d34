"""An answer stopped at the token limit is reported as such by every backend, and the VLM tool marks
its Evidence truncated (naming the asks cut off) while keeping what the answer did say."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from fake_radvlm import FakeRadVLM  # tests/tools/vlm/fake_radvlm.py (test-only backend)
from PIL import Image

from cxr_agent.settings import Settings
from tools.base import ToolRequest
from tools.ingestion.study import Study
from tools.vlm.backends.openai_backend import OpenAIBackend
from tools.vlm.backends.transformers_backend import TransformersBackend
from tools.vlm.prompts import ChatTurn
from tools.vlm.tool import VLMTool

IMAGE = Image.new("RGB", (90, 60), 70)
TURNS = [ChatTurn("user", "Describe this chest X-ray.")]


@contextmanager
def every_token_ends(model: Any) -> Iterator[None]:
    """Make every token an end-of-answer token, so the random model's answer ends after one token."""
    before = model.generation_config.eos_token_id
    model.generation_config.eos_token_id = list(range(int(model.config.text_config.vocab_size)))
    try:
        yield
    finally:
        model.generation_config.eos_token_id = before


def test_transformers_answer_at_the_limit_is_truncated(tiny_backend: TransformersBackend) -> None:
    res = tiny_backend.generate(IMAGE, TURNS, cache_key="trunc", max_new_tokens=2)
    assert res.truncated is True and res.new_tokens == 2


def test_transformers_answer_that_ended_is_not_truncated(tiny_backend: TransformersBackend) -> None:
    model, _ = tiny_backend.load()
    with every_token_ends(model):
        ended = tiny_backend.generate(IMAGE, TURNS, cache_key="trunc", max_new_tokens=4)
        at_limit = tiny_backend.generate(IMAGE, TURNS, cache_key="trunc", max_new_tokens=1)
    assert ended.truncated is False
    assert at_limit.truncated is False  # its one token was the end of the answer: complete


def test_batched_answers_report_truncation_per_row(tiny_backend: TransformersBackend) -> None:
    convs = [[ChatTurn("user", q)] for q in ("Is there any pleural effusion?", "Is there any pneumothorax?")]
    cut = tiny_backend.generate_batch(IMAGE, convs, cache_key="trunc-b", max_new_tokens=2)
    model, _ = tiny_backend.load()
    with every_token_ends(model):
        whole = tiny_backend.generate_batch(IMAGE, convs, cache_key="trunc-b", max_new_tokens=3)
    assert [r.truncated for r in cut] == [True, True]
    assert [r.truncated for r in whole] == [False, False]


def test_tiny_report_cut_off_marks_the_evidence(tiny_settings: Settings, tiny_backend: TransformersBackend,
                                                study: Study) -> None:
    settings = tiny_settings.model_copy(update={"vlm_max_new_tokens": 3})
    ev = VLMTool(settings, backend=tiny_backend).run(ToolRequest(intent="report", study=study, thread_id="t"))
    assert ev.ok, ev.error
    assert ev.truncated is True and ev.report  # what it said is kept
    assert "report" in ev.meta["truncated_asks"] and ev.meta["max_new_tokens"] == 3
    assert {a["task"] for a in ev.meta["asks"] if a["truncated"]} >= {"report"}


def test_cut_off_report_keeps_its_calls_and_is_marked(tiny_settings: Settings, study: Study) -> None:
    whole = VLMTool(tiny_settings, backend=FakeRadVLM()).run(ToolRequest(intent="report", study=study))
    cut = VLMTool(tiny_settings, backend=FakeRadVLM(cut_off=frozenset({"report"}))).run(
        ToolRequest(intent="report", study=study))
    assert whole.truncated is False and "truncated_asks" not in whole.meta
    assert cut.ok and cut.truncated is True and cut.meta["truncated_asks"] == ["report"]
    assert cut.report and len(cut.report) < len(whole.report or "")
    # the asks beside the report were answered whole: their calls stand
    assert [(c.finding, c.status, c.task) for c in cut.calls] == [(c.finding, c.status, c.task) for c in whole.calls]
    assert cut.calls and "classification" in cut.meta["call_tasks"]


def test_cut_off_answers_are_named_per_finding(tiny_settings: Settings, study: Study) -> None:
    tool = VLMTool(tiny_settings, backend=FakeRadVLM(cut_off=frozenset({"question"})))
    verified = tool.verify(study, ["cardiomegaly", "pneumothorax"], thread_id="v")
    assert [e.truncated for e in verified] == [True, True]
    assert [e.meta["truncated_asks"] for e in verified] == [["question:cardiomegaly"], ["question:pneumothorax"]]
    several = tool.run(ToolRequest(intent="finding_question", study=study, finding="cardiomegaly",
                                   findings=("cardiomegaly", "pneumothorax")))
    assert several.truncated is True
    assert several.meta["truncated_asks"] == ["question:cardiomegaly", "question:pneumothorax"]
    one = VLMTool(tiny_settings, backend=FakeRadVLM(cut_off=frozenset({"report"}))).run(
        ToolRequest(intent="finding_question", study=study, finding="cardiomegaly"))
    assert one.truncated is False and "truncated_asks" not in one.meta


@pytest.mark.parametrize("stream", [False, True])
def test_openai_finish_reason_length_is_truncation(openai_server, tiny_backend: TransformersBackend, study: Study,
                                                   stream: bool) -> None:
    root, _ = openai_server
    settings = Settings(model_profile="real", vlm_backend="openai", openai_base_url=root + "/v1",
                        openai_model="tiny-radvlm", openai_timeout_s=30.0, openai_max_retries=0, vlm_max_new_tokens=2)
    backend = OpenAIBackend(settings, backoff_s=0.01)
    sink = (lambda piece: None) if stream else None
    cut = backend.generate(IMAGE, TURNS, max_new_tokens=2, on_token=sink)
    model, _ = tiny_backend.load()
    with every_token_ends(model):
        whole = backend.generate(IMAGE, TURNS, max_new_tokens=3, on_token=sink)
    assert cut.truncated is True and whole.truncated is False
    ev = VLMTool(settings, backend=backend).run(ToolRequest(intent="finding_question", finding="pleural_effusion",
                                                            study=study, thread_id="o", on_token=sink))
    assert ev.ok and ev.truncated is True and ev.meta["truncated_asks"] == ["question"]
