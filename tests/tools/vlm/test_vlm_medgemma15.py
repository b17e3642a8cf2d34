"""MedGemma 1.5 through the adapter layer, on the tiny random Gemma 3 (Gemma 3's real processor and chat
template): the card's report prompt, the localization notebook's box format, and the longitudinal
notebook's two-image comparison as one fresh user turn. MedGemma 1 declares it cannot compare."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from cxr_agent.settings import Settings
from tools.base import ToolRequest
from tools.ingestion.study import Study
from tools.vlm.adapters import get_adapter
from tools.vlm.adapters.medgemma import (
    COMPARE,
    LOCATE,
    MedGemma15Adapter,
    MedGemmaAdapter,
    comparison_messages,
    read_changes,
)
from tools.vlm.backends.transformers_backend import TransformersBackend
from tools.vlm.families import MODEL_IDS
from tools.vlm.geometry import prepare_image
from tools.vlm.prompts import ChatTurn
from tools.vlm.tiny_medgemma import IMAGE_SOFT, TOKENS_PER_IMAGE
from tools.vlm.tool import VLMTool


@pytest.fixture(scope="module")
def mg15_settings(test_data_dir) -> Settings:
    return Settings(model_profile="tiny", data_dir=test_data_dir, vlm_device="cpu", vlm_max_new_tokens=16,
                    vlm_family="medgemma15")


@pytest.fixture(scope="module")
def mg15_backend(mg15_settings) -> TransformersBackend:
    backend = TransformersBackend(mg15_settings)
    backend.load()
    return backend


def test_which_family_can_compare_is_declared() -> None:
    assert MedGemmaAdapter.compares_priors is False and MedGemmaAdapter.localises is False
    mg15 = get_adapter("medgemma15")
    assert isinstance(mg15, MedGemma15Adapter) and mg15.compares_priors is True and mg15.localises is True
    assert mg15.system is None and MODEL_IDS["medgemma15"] == "google/medgemma-1.5-4b-it"
    assert mg15.comparison_prompt().images == ("prior", "current")
    # no documented list or detection ask: the adapter says so rather than improvising one
    assert mg15.prompt("classification", key="s") is None and mg15.prompt("detection", key="s") is None


def test_report_and_locate_prompts_render_as_the_card_and_notebook_show(mg15_backend) -> None:
    a = MedGemma15Adapter()
    report = a.prompt("report", key="s")
    assert mg15_backend.render([ChatTurn("user", report.text, report.image_first)]) == (
        "<bos><start_of_turn>user\n<start_of_image>Describe this X-ray<end_of_turn>\n<start_of_turn>model\n")
    where = a.prompt("grounding", key="s", target="Pleural effusion")
    assert where.text.endswith('Query:\nWhere is the pleural effusion? Don\'t give a final answer without reasoning. '
                               'Output the final answer in the format "Final Answer: X" where X is a JSON list of '
                               'objects. The object needs a "box_2d" and "label" key. Answer:')
    example = where.text.split("for instance ```json", 1)[1].split("```", 1)[0]
    assert json.loads(example) == [{"box_2d": [800, 3, 840, 471], "label": "car"},
                                   {"box_2d": [400, 22, 600, 73], "label": "dog"}]
    assert where.text.count("{") == 2 and LOCATE.count("{}") == 1  # the braces of the example survive format()


def test_comparison_is_one_fresh_user_turn_with_the_prior_first(mg15_backend) -> None:
    import torch

    model, processor = mg15_backend.load()
    prior, current = Image.new("RGB", (90, 60), 0), Image.new("RGB", (60, 90), 255)
    msgs = comparison_messages(prior, current, MedGemma15Adapter().comparison_prompt())
    text = processor.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    assert text == ("<bos><start_of_turn>user\n<start_of_image><start_of_image>" + COMPARE.strip()
                    + "<end_of_turn>\n<start_of_turn>model\n")
    assert text.count("<start_of_turn>") == 2  # one user turn, then the model's: nothing carried over
    inputs = processor.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True, return_dict=True,
                                           return_tensors="pt")
    ids = inputs["input_ids"][0].tolist()
    assert ids.count(processor.tokenizer.convert_tokens_to_ids(IMAGE_SOFT)) == 2 * TOKENS_PER_IMAGE
    pixels = inputs["pixel_values"]
    assert pixels.shape[0] == 2 and float(pixels[0].mean()) < float(pixels[1].mean())  # prior (black) first
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=6, min_new_tokens=6, do_sample=False)
    assert out.shape[1] == len(ids) + 6


def test_boxes_in_the_notebooks_format_map_back_through_the_square_padding() -> None:
    a = MedGemma15Adapter()
    view = prepare_image(np.zeros((50, 100), dtype=np.float32), pad_square=True).view  # 100x100 canvas, 25 px bars
    answer = ('<unused94>thought: the effusion is low on the right<unused95>It sits at the base.\n'
              'Final Answer: ```json[{"box_2d": [500, 100, 750, 400], "label": "pleural effusion"},'
              ' {"box_2d": [700, 100, 600, 400], "label": "upside down"},'
              ' {"box_2d": [0, 0, 1200, 10], "label": "too big"},'
              ' {"box_2d": [0, 0, 200, 900], "label": "in the padding"}]```')
    p = a.parse("grounding", answer, view, target="pleural effusion", finding="pleural_effusion")
    assert p.shape == "boxes" and len(p.locations) == 1 and len(p.rejected) == 3
    box = p.locations[0].box  # y 0.5-0.75 of the square -> (50-75 px - 25 px) / 50 px of the original
    assert (box.x1, box.y1, box.x2, box.y2) == pytest.approx((0.1, 0.5, 0.4, 1.0))
    assert p.locations[0].finding == "pleural_effusion" and p.locations[0].task == "grounding"
    assert [r.split(" (")[-1] for r in p.rejected] == ["not top-left then bottom-right)", "a coordinate outside 0-1000)",
                                                      "outside the image, in its padding)"]
    none = a.parse("grounding", "I cannot see it.", view, target="x")
    assert none.locations == [] and none.notes == ["no JSON list in the answer"]


def test_the_tool_pads_medgemma15_images_and_sends_the_localization_ask(mg15_settings, mg15_backend) -> None:
    study = Study.from_array(np.random.default_rng(5).random((64, 96)).astype(np.float32), view="PA")
    tool = VLMTool(mg15_settings, backend=mg15_backend, name="vlm-medgemma15")
    view = tool.model_image(study).view
    assert view.padded and view.canvas_w == view.canvas_h == 96
    assert not VLMTool(mg15_settings.model_copy(update={"vlm_family": "medgemma"})).model_image(study).view.padded
    ev = tool.run(ToolRequest(intent="locate", study=study, finding="pleural_effusion", thread_id="t15"))
    assert ev.ok and "does not localise" not in (ev.answer or "")
    assert ev.meta["prompt"] == LOCATE.format("pleural effusion") and ev.meta["family"] == "medgemma15"
    rep = tool.run(ToolRequest(intent="report", study=study, thread_id="t15"))
    assert rep.ok and rep.meta["prompts"] == {"report": "Describe this X-ray"}


def test_change_statements_are_read_only_where_one_sentence_is_unambiguous() -> None:
    answer = ("<unused94>...<unused95>Compared with the first image, the left pleural effusion has increased. "
              "No new pneumothorax. The cardiomegaly is unchanged. Edema improved and the effusion is smaller. "
              "The consolidation has resolved. There is a new nodule in the right upper lobe. The lungs are clear.")
    got = [(c.finding, c.change) for c in read_changes(answer, source="vlm-medgemma15")]
    assert got == [("pleural_effusion", "worse"), ("cardiomegaly", "stable"), ("consolidation", "resolved"),
                   ("nodule", "new")]
    assert all(c.source == "vlm-medgemma15" for c in read_changes(answer, source="vlm-medgemma15"))
    assert read_changes("") == [] and read_changes("The effusion is larger but less dense.") == []


def test_the_tool_compares_two_films_in_one_fresh_prompt(mg15_settings, mg15_backend, monkeypatch) -> None:
    from tools.vlm.comparing import compare_with_prior

    rng = np.random.default_rng(9)
    prior = Study.from_array(rng.random((64, 96)).astype(np.float32), view="PA")
    current = Study.from_array(rng.random((80, 80)).astype(np.float32), view="PA")
    tool = VLMTool(mg15_settings, backend=mg15_backend, name="vlm-medgemma15")
    model, processor = mg15_backend.load()
    seen: list[str] = []
    render = processor.apply_chat_template

    def spy(msgs, **kw):
        seen.append(render(msgs, add_generation_prompt=True, tokenize=False))
        return render(msgs, **kw)

    monkeypatch.setattr(processor, "apply_chat_template", spy)
    ev = compare_with_prior(tool, prior, current, max_new_tokens=5)
    assert ev.ok and ev.meta["task"] == "comparison" and ev.meta["prior_study_id"] == prior.id
    assert ev.meta["family"] == "medgemma15" and ev.meta["prompt_id"].startswith("medgemma15:")
    assert isinstance(ev.meta["changes"], list) and ev.calls == []  # statements of change, not finding calls
    assert seen == ["<bos><start_of_turn>user\n<start_of_image><start_of_image>" + COMPARE.strip()
                    + "<end_of_turn>\n<start_of_turn>model\n"]
    same = compare_with_prior(tool, prior, prior)
    assert not same.ok and "same image" in same.error


def test_a_local_comparison_streams_its_answer_as_it_is_written(mg15_settings, mg15_backend) -> None:
    from tools.vlm.comparing import compare_with_prior

    rng = np.random.default_rng(10)
    prior = Study.from_array(rng.random((64, 64)).astype(np.float32), view="PA")
    current = Study.from_array(rng.random((72, 64)).astype(np.float32), view="PA")
    tool = VLMTool(mg15_settings, backend=mg15_backend, name="vlm-medgemma15")
    plain = compare_with_prior(tool, prior, current, max_new_tokens=12)
    pieces: list[str] = []
    streamed = compare_with_prior(tool, prior, current, max_new_tokens=12, on_token=pieces.append)
    assert streamed.ok and (streamed.answer, streamed.truncated) == (plain.answer, plain.truncated)
    assert pieces and "".join(pieces).strip() == streamed.answer  # greedy: the same words, piece by piece

    def broken(_: str) -> None:
        raise RuntimeError("display gone")

    assert compare_with_prior(tool, prior, current, max_new_tokens=12, on_token=broken).answer == plain.answer


def test_a_family_without_a_documented_comparison_is_not_asked(mg15_settings) -> None:
    from tools.vlm.comparing import compare_with_prior

    study = Study.from_array(np.zeros((8, 8), dtype=np.float32), view="PA")
    mg1 = VLMTool(mg15_settings.model_copy(update={"vlm_family": "medgemma"}), backend=object())  # never called
    ev = compare_with_prior(mg1, study, study)
    assert ev.ok and ev.meta["compares_priors"] is False and "cannot compare two films" in ev.answer
