"""MedGemma 1.5's thinking trace never reaches a report, and which built-in VLM declares it compares priors."""

from __future__ import annotations

import numpy as np

from cxr_agent.settings import Settings
from tools.base import ToolRequest
from tools.ingestion.study import Study
from tools.registry import builtin_tools
from tools.vlm.adapters.medgemma import MedGemma15Adapter, ThoughtFilter, without_thought
from tools.vlm.backends.base import GenerationResult
from tools.vlm.tool import VLMTool

THOUGHT = "<unused94>thought\nThe costophrenic angle is blunted on the left.<unused95>"
REPORT = "There is a small left pleural effusion. No pneumothorax."


class Answers:
    """A backend that answers every prompt with one fixed text (what the model would have generated),
    streamed to ``on_token`` a few characters at a time."""

    name, model_id, profile = "scripted", "google/medgemma-1.5-4b-it", "real"

    def __init__(self, text: str) -> None:
        self.text = text

    def generate(self, image, turns, *, on_token=None, **kw) -> GenerationResult:
        for i in range(0, len(self.text), 3):
            if on_token is not None:
                on_token(self.text[i:i + 3])
        return GenerationResult(text=self.text)


def test_the_report_is_what_follows_the_thinking_trace():
    study = Study.from_array(np.zeros((32, 32), dtype=np.float32), view="PA")
    tool = VLMTool(Settings(model_profile="tiny", vlm_family="medgemma15"), backend=Answers(THOUGHT + REPORT),
                   label_reports=True)
    ev = tool.run(ToolRequest(intent="report", study=study, thread_id="t"))
    assert ev.ok and ev.report == REPORT and ev.answer == REPORT
    assert {c.finding for c in ev.calls if c.status.value == "present"} == {"pleural_effusion"}
    plain = VLMTool(Settings(model_profile="tiny", vlm_family="medgemma15"), backend=Answers(REPORT))
    assert plain.run(ToolRequest(intent="report", study=study, thread_id="t")).report == REPORT
    cut = VLMTool(Settings(model_profile="tiny", vlm_family="medgemma15"), backend=Answers(THOUGHT))
    assert not cut.run(ToolRequest(intent="report", study=study, thread_id="t")).ok  # only thoughts: no report


def test_the_trace_is_dropped_like_in_yes_no_and_box_answers():
    a = MedGemma15Adapter()
    assert a.answer_text("report", THOUGHT + REPORT) == REPORT and without_thought(REPORT) == REPORT
    assert a.parse("question", THOUGHT + "No.", None, finding="pneumothorax").calls[0].status.value == "absent"


def test_only_a_family_with_a_two_image_prompt_declares_compares_priors():
    caps = {t.name: t.capabilities for t in builtin_tools(Settings(vlm_family="medgemma15", vlm_compare="radvlm"))}
    assert caps["vlm"].compares_priors and not caps["vlm-radvlm"].compares_priors
    assert not caps["classifier"].compares_priors
    caps = {t.name: t.capabilities for t in builtin_tools(Settings(vlm_compare="medgemma15"))}
    assert not caps["vlm"].compares_priors and caps["vlm-medgemma15"].compares_priors
    assert not any(t.capabilities.compares_priors for t in builtin_tools(Settings(vlm_compare="medgemma")))


def test_the_streamed_report_holds_the_trace_back():
    study = Study.from_array(np.zeros((32, 32), dtype=np.float32), view="PA")
    streamed: list[str] = []
    tool = VLMTool(Settings(model_profile="tiny", vlm_family="medgemma15"), backend=Answers(THOUGHT + REPORT))
    ev = tool.run(ToolRequest(intent="report", study=study, thread_id="t", on_token=streamed.append))
    assert "".join(streamed) == REPORT == ev.report
    plain: list[str] = []
    sink = ThoughtFilter(plain.append)
    for piece in ("No", " pneumo", "thorax."):
        sink(piece)
    assert plain == ["No", " pneumo", "thorax."]  # no trace: every piece goes on as it comes
    held: list[str] = []
    sink = ThoughtFilter(held.append)
    for piece in ("<unu", "sed94>thinking", " more<unu", "sed95>", "Clear", " lungs."):
        sink(piece)
    assert "".join(held) == "Clear lungs."
