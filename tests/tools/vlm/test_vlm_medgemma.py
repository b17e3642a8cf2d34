"""MedGemma through the adapter layer: its own tiny random Gemma 3 (real processor and chat template),
the card's prompts (system turn, "Describe this X-ray" before the image), yes/no answers, no boxes,
and generation identical to the card's own processor path."""

from __future__ import annotations

import pytest
from PIL import Image

from cxr_agent.settings import Settings
from knowledge.evidence import Status
from tools.base import ToolRequest
from tools.ingestion.study import Study
from tools.vlm.adapters import get_adapter
from tools.vlm.adapters.medgemma import MedGemmaAdapter
from tools.vlm.backends.transformers_backend import TransformersBackend
from tools.vlm.prompts import ChatTurn
from tools.vlm.tool import VLMTool

SYSTEM = ChatTurn("system", "You are an expert radiologist.")


@pytest.fixture(scope="module")
def mg_settings(test_data_dir) -> Settings:
    return Settings(model_profile="tiny", data_dir=test_data_dir, vlm_device="cpu", vlm_max_new_tokens=16,
                    vlm_family="medgemma")


@pytest.fixture(scope="module")
def mg_backend(mg_settings) -> TransformersBackend:
    backend = TransformersBackend(mg_settings)
    backend.load()
    return backend


def test_the_tiny_model_is_gemma3_with_its_processor(mg_backend: TransformersBackend) -> None:
    model, processor = mg_backend.load()
    assert type(model).__name__ == "Gemma3ForConditionalGeneration" and type(processor).__name__ == "Gemma3Processor"
    assert mg_backend.model_id == "tiny-random-medgemma" and isinstance(get_adapter("medgemma"), MedGemmaAdapter)
    assert (mg_backend.settings.data_dir / "tiny-medgemma" / "config.json").exists()


def test_content_order_is_honoured_by_gemma3(mg_backend: TransformersBackend) -> None:
    report = mg_backend.render([SYSTEM, ChatTurn("user", "Describe this X-ray", image_first=False)])
    assert report == ("<bos><start_of_turn>user\nYou are an expert radiologist.\n\nDescribe this X-ray"
                      "<start_of_image><end_of_turn>\n<start_of_turn>model\n")
    question = mg_backend.render([SYSTEM, ChatTurn("user", "Is there any edema?", image_first=True)])
    assert "\n\n<start_of_image>Is there any edema?<end_of_turn>" in question


@pytest.mark.parametrize("image_first", [False, True])
@pytest.mark.parametrize("kv", [False, True])
def test_generation_matches_the_model_cards_processor_path(mg_settings, mg_backend, image_first, kv) -> None:
    import torch

    model, processor = mg_backend.load()
    image = Image.new("RGB", (90, 60), 90)
    content = [{"type": "text", "text": "Describe this X-ray"}]
    content.insert(0 if image_first else 1, {"type": "image", "image": image})
    msgs = [{"role": "system", "content": [{"type": "text", "text": SYSTEM.text}]}, {"role": "user", "content": content}]
    inputs = processor.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True, return_dict=True,
                                           return_tensors="pt")
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=10, min_new_tokens=10, do_sample=False)
    ref = processor.tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip()
    backend = TransformersBackend(mg_settings, model=model, processor=processor, kv_prefix_cache=kv)
    turns = [SYSTEM, ChatTurn("user", "Describe this X-ray", image_first)]
    first = backend.generate(image, turns, cache_key="c", max_new_tokens=10, min_new_tokens=10)
    again = backend.generate(image, turns, cache_key="c", max_new_tokens=10, min_new_tokens=10)
    assert first.text == again.text == ref and first.prompt_tokens == inputs["input_ids"].shape[1]
    assert again.cache_hit and again.kv_prefix_hit == kv


def _study() -> Study:
    import numpy as np

    return Study.from_array(np.random.default_rng(3).random((64, 96)).astype(np.float32), view="PA")


def test_tool_speaks_the_cards_prompts(mg_settings, mg_backend) -> None:
    tool = VLMTool(mg_settings, backend=mg_backend, name="vlm-medgemma")
    study = _study()
    ev = tool.run(ToolRequest(intent="report", study=study, thread_id="mg"))
    assert ev.ok and ev.report and ev.tool == "vlm-medgemma" and ev.meta["family"] == "medgemma"
    assert ev.meta["prompts"] == {"report": "Describe this X-ray"}  # no classification list, no boxes
    assert ev.meta["demo"] is True
    ev = tool.run(ToolRequest(intent="finding_question", study=study, finding="pneumothorax", thread_id="mg"))
    assert ev.meta["prompt"] == "Is there any pneumothorax?"
    assert [(c.finding, c.source) for c in ev.calls] == [("pneumothorax", "vlm-medgemma")]
    ev = tool.run(ToolRequest(intent="locate", study=study, finding="pleural_effusion"))
    assert ev.ok and ev.calls == [] and ev.artifacts == [] and "does not localise" in ev.answer
    assert "heatmap is the only location" in ev.answer and ev.meta["localises"] is False


def test_batched_reasks_parse_like_serial(mg_settings, mg_backend) -> None:
    tool = VLMTool(mg_settings, backend=mg_backend)
    study = _study()
    findings = ["pleural_effusion", "edema", "cardiomegaly"]
    batched = tool.verify(study, findings, thread_id="mb")
    serial = [tool.verify(study, [f], thread_id="ms")[0] for f in findings]
    assert all(e.ok for e in batched + serial)
    assert [[(c.finding, c.status, c.box) for c in e.calls] for e in batched] == \
        [[(c.finding, c.status, c.box) for c in e.calls] for e in serial]


@pytest.mark.parametrize(("answer", "status"), [("Yes, there is a small left effusion.", Status.present),
                                                 ("No.", Status.absent), ("It may be present.", Status.uncertain)])
def test_yes_no_answers(answer, status) -> None:
    p = MedGemmaAdapter().parse("question", answer, None, target="pleural effusion", finding="pleural_effusion")
    assert [(c.finding, c.status) for c in p.calls] == [("pleural_effusion", status)] and p.locations == []
    assert MedGemmaAdapter().prompt("grounding", key="s", target="pleural_effusion") is None


def test_openai_wire_format_has_the_system_turn_and_card_order() -> None:
    from tools.vlm.backends.openai_backend import to_openai_messages
    from tools.vlm.prompts import conversation

    a = MedGemmaAdapter()
    p = a.prompt("report", key="s")
    msgs = to_openai_messages(conversation(p.text, image_first=p.image_first, system=a.system), "data:x")
    assert msgs[0] == {"role": "system", "content": "You are an expert radiologist."}
    assert [part["type"] for part in msgs[1]["content"]] == ["text", "image_url"]


@pytest.mark.filterwarnings("error::FutureWarning")  # the KV cache under transformers' current keyword
def test_sliding_window_cache_and_unshared_prefixes(mg_settings, mg_backend) -> None:
    """Gemma 3's sliding-window KV cache cannot be cropped back: a cached image prefix is copied per
    generation. Batches whose padding would overflow the window, or whose prompts differ before the
    image (text first), are asked one by one: the same answers as plain generation either way."""
    import transformers

    model, processor = mg_backend.load()
    config = model.config
    config.text_config.sliding_window = 16  # far shorter than the prompts
    small = transformers.Gemma3ForConditionalGeneration(config).eval()
    small.load_state_dict(model.state_dict())
    small.generation_config = model.generation_config
    config.text_config.sliding_window = 512
    image = Image.new("RGB", (90, 60), 90)
    plain = TransformersBackend(mg_settings, model=small, processor=processor, kv_prefix_cache=False)
    cached = TransformersBackend(mg_settings, model=small, processor=processor, kv_prefix_cache=True)
    for image_first in (True, False):
        convs = [[SYSTEM, ChatTurn("user", q, image_first)] for q in ("Is there any edema?", "Hi")]
        ref = [plain.generate(image, c, max_new_tokens=20, min_new_tokens=20).text for c in convs]
        for _ in range(2):  # the second round reuses the cached prefix
            assert [cached.generate(image, c, cache_key="w", max_new_tokens=20, min_new_tokens=20).text
                    for c in convs] == ref
        assert [r.text for r in cached.generate_batch(image, convs, cache_key="w", max_new_tokens=20,
                                                      min_new_tokens=20)] == ref
