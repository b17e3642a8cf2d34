"""Two VLM families side by side: names, settings, and both as independent sources in one graph turn."""

from __future__ import annotations

import pytest
from fake_radvlm import FakeRadVLM  # tests/tools/vlm/fake_radvlm.py
from pydantic import SecretStr

from cxr_agent.settings import Settings
from tools.vlm.families import MODEL_IDS, CompareVLMTool, family_settings, selected, vlm_tools
from tools.vlm.tool import VLMTool


class FakeMedGemma(FakeRadVLM):
    """Answers MedGemma's card prompts: a prose report and yes/no (it draws no boxes)."""

    name = model_id = "fake-medgemma"

    def check_turns(self, turns):
        assert turns[0].role == "system" and turns[0].text == "You are an expert radiologist."
        assert turns[1].image_first is (turns[-1].text != "Describe this X-ray")  # the card's order for reports

    def answer(self, text: str) -> tuple[str, str]:
        if text == "Describe this X-ray":
            return "report", "The heart is enlarged. There is no pleural effusion. No pneumothorax."
        task, out = super().answer(text)
        return (task, out) if task == "question" else ("untrained", "I cannot help with that.")


def test_selection_and_settings() -> None:
    s = Settings(model_profile="tiny")
    assert selected(s) == [("vlm", "radvlm")]
    both = s.model_copy(update={"vlm_compare": "medgemma"})
    assert selected(both) == [("vlm", "radvlm"), ("vlm-medgemma", "medgemma")]
    mg = family_settings(both, "medgemma")
    assert (mg.vlm_family, mg.vlm_model_id, mg.openai_model) == ("medgemma", MODEL_IDS["medgemma"], MODEL_IDS["medgemma"])
    # A path configured for the first family never loads the second one (it has its own setting).
    custom = both.model_copy(update={"vlm_model_id": "/models/my-radvlm"})
    assert family_settings(custom, "radvlm").vlm_model_id == "/models/my-radvlm"  # an explicit path is kept
    assert family_settings(custom, "medgemma").vlm_model_id == MODEL_IDS["medgemma"]
    own = custom.model_copy(update={"vlm_compare_model_id": "/models/my-medgemma"})
    assert (family_settings(own, "medgemma").vlm_model_id, family_settings(own, "medgemma").openai_model) == (
        "/models/my-medgemma", "/models/my-medgemma")
    # over the OpenAI-compatible backend each family may have its own server (one vLLM serves one model)
    assert family_settings(own, "medgemma").openai_base_url == own.openai_base_url  # unset: the same one
    served = own.model_copy(update={"openai_compare_base_url": "https://gpu-b:8000/v1",
                                    "openai_compare_api_key": SecretStr("key-b")})
    second, first = family_settings(served, "medgemma"), family_settings(served, "radvlm")
    assert (second.openai_base_url, second.openai_api_key.get_secret_value()) == ("https://gpu-b:8000/v1", "key-b")
    assert (first.openai_base_url, first.openai_api_key.get_secret_value()) == (own.openai_base_url, "EMPTY")
    first_mg = Settings(model_profile="tiny", vlm_family="medgemma", vlm_model_id="/models/my-medgemma",
                        vlm_compare="radvlm")
    assert family_settings(first_mg, "radvlm").vlm_model_id == MODEL_IDS["radvlm"]
    assert [t.name for t in vlm_tools(both)] == ["vlm", "vlm-medgemma"]
    assert [t.adapter.family for t in vlm_tools(both)] == ["radvlm", "medgemma"]
    tool = CompareVLMTool(both)
    assert tool.name == "vlm-medgemma" and tool.adapter.family == "medgemma"
    with pytest.raises(ValueError, match="VLM_COMPARE"):
        CompareVLMTool(s)
    with pytest.raises(ValueError, match="unknown VLM family"):
        family_settings(s, "gpt")


def test_both_vlms_are_sources_in_one_report_turn(make_graph, thread, cxr_image, settings) -> None:
    rad, med = FakeRadVLM(), FakeMedGemma()
    both = settings.model_copy(update={"vlm_compare": "medgemma"})
    tools = [VLMTool(family_settings(both, "radvlm"), backend=rad),
             VLMTool(family_settings(both, "medgemma"), backend=med, name="vlm-medgemma")]
    out = make_graph(*tools).invoke({"messages": [("user", "Write a report")], "image": str(cxr_image)}, thread())
    reports = {e.tool: e.report for e in out["evidence"] if e.report}
    assert set(reports) == {"vlm", "vlm-medgemma"} and reports["vlm-medgemma"].startswith("The heart is enlarged")
    assert med.prompts[0] == "Describe this X-ray" and med.untrained == [] and rad.untrained == []
    cardio = next(d for d in out["decisions"] if d.finding == "cardiomegaly")
    assert {"vlm", "vlm-medgemma"} <= {c.source for c in cardio.calls}
