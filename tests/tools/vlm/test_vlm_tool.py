"""VLMTool end to end through the tiny random LLaVA-OneVision, its real processor and chat
template (random weights: the text is gibberish, so these tests check plumbing, not content),
plus evidence mapping with a scripted backend emitting RadVLM-style answers."""

from __future__ import annotations

from collections.abc import Callable, Hashable

import pytest
from PIL import Image

from cxr_agent.settings import DEMO_WARNING, Settings
from knowledge.evidence import Status
from tools.base import CxrTool, ToolRequest
from tools.ingestion.study import Study
from tools.vlm.adapters.radvlm import DETECTION, FOREIGN, GROUNDING
from tools.vlm.backends.base import GenerationResult
from tools.vlm.backends.transformers_backend import TransformersBackend
from tools.vlm.prompts import ChatTurn
from tools.vlm.tiny import load_tiny
from tools.vlm.tool import VLMTool


@pytest.fixture()
def tool(tiny_settings: Settings, tiny_backend: TransformersBackend) -> VLMTool:
    tiny_backend.cache_clear()
    return VLMTool(tiny_settings, backend=tiny_backend)


def test_is_a_cxr_tool(tool: VLMTool) -> None:
    assert isinstance(tool, CxrTool)
    assert tool.name == "vlm" and tool.intents == {"report", "locate", "finding_question", "chat"}


@pytest.mark.parametrize(
    ("intent", "kw"),
    [("report", {}), ("locate", {"finding": "pleural_effusion"}), ("locate", {"phrase": "left basal opacity"}),
     ("finding_question", {"finding": "pneumothorax"}), ("chat", {"text": "Describe the heart size."})],
)
def test_every_task_generates_end_to_end(tool: VLMTool, study: Study, intent: str, kw: dict) -> None:
    streamed: list[str] = []
    ev = tool.run(ToolRequest(intent=intent, study=study, thread_id="t1", on_token=streamed.append, **kw))
    assert ev.ok, ev.error
    assert ev.tool == "vlm" and ev.answer and ev.latency_ms is not None
    assert "".join(streamed).strip() == ev.answer  # every token went to the sink
    assert ev.meta["backend"] == "transformers" and ev.meta["profile"] == "tiny"
    assert ev.meta["demo"] is True and ev.meta["warning"] == DEMO_WARNING  # gibberish is never disguised
    assert ev.meta["prompt_tokens"] > 10 and ev.meta["new_tokens"] > 0
    if intent == "report":
        assert ev.report == ev.answer
    if intent == "finding_question":
        assert len(ev.calls) == 1 and ev.calls[0].finding == "pneumothorax" and ev.calls[0].source == "vlm"
        assert ev.calls[0].text == ev.answer


def test_the_prompt_goes_through_the_chat_template(tiny_backend: TransformersBackend) -> None:
    _, processor = tiny_backend.load()
    text = tiny_backend.render([ChatTurn("user", "Write the report."), ChatTurn("assistant", "Normal."),
                                ChatTurn("user", "Any effusion?")])
    assert text == ("<|im_start|>user\n<image>\nWrite the report.<|im_end|>\n<|im_start|>assistant\nNormal.<|im_end|>\n"
                    "<|im_start|>user\n\nAny effusion?<|im_end|>\n<|im_start|>assistant\n")  # hub template: "\n" + text
    assert processor.tokenizer.convert_tokens_to_ids("<image>") == tiny_backend.load()[0].config.image_token_id


@pytest.mark.parametrize("kv", [False, True])
def test_same_output_as_the_plain_processor_path(tiny_settings: Settings, kv: bool) -> None:
    """The cached paths (image features via mm_encoder_outputs; KV cache of the image prefix)
    generate exactly what processor + model.generate does, on the first turn and on follow-ups."""
    import torch

    model, processor = load_tiny(tiny_settings.data_dir)
    backend = TransformersBackend(tiny_settings, model=model, processor=processor, kv_prefix_cache=kv)
    image = Image.new("RGB", (90, 60), 90)
    first = [ChatTurn("user", "Write the report.")]
    follow = [*first, ChatTurn("assistant", "Normal."), ChatTurn("user", "Any effusion?")]

    def reference(turns: list[ChatTurn]) -> str:
        inputs = processor(images=image, text=backend.render(turns), return_tensors="pt")
        with torch.inference_mode():
            out = model.generate(**inputs, max_new_tokens=12, min_new_tokens=12, do_sample=False)
        return processor.tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip()

    a = backend.generate(image, first, cache_key="k", max_new_tokens=12, min_new_tokens=12)
    b = backend.generate(image, follow, cache_key="k", max_new_tokens=12, min_new_tokens=12)
    c = backend.generate(image, first, cache_key="k", max_new_tokens=12, min_new_tokens=12)
    assert (a.cache_hit, b.cache_hit, c.cache_hit) == (False, True, True)
    assert (a.kv_prefix_hit, b.kv_prefix_hit, c.kv_prefix_hit) == (False, kv, kv)
    assert a.text == reference(first) == c.text and a.new_tokens == 12
    assert b.text == reference(follow)


def test_multi_turn_chat_and_cache_hit_on_follow_up(tool: VLMTool, tiny_backend: TransformersBackend,
                                                     study: Study) -> None:
    first = tool.run(ToolRequest(intent="report", study=study, thread_id="chat-1"))
    assert first.ok and first.meta["cache_hit"] is False
    history = [{"role": "user", "content": "Write the report."}, {"role": "assistant", "content": first.report}]
    second = tool.run(ToolRequest(intent="chat", text="Is the heart enlarged?", study=study, thread_id="chat-1",
                                  history=history))
    assert second.ok and second.meta["cache_hit"] is True
    assert second.meta["prompt_tokens"] > first.meta["prompt_tokens"]  # the history is in the prompt
    other_thread = tool.run(ToolRequest(intent="chat", text="Hi", study=study, thread_id="chat-2"))
    # The study's image is encoded once (the report's shared entry); each chat thread has its own entry.
    assert other_thread.meta["cache_hit"] is True
    assert tiny_backend.cache_info()["entries"] == 3


def test_cache_is_a_bounded_lru(tiny_settings: Settings) -> None:
    model, processor = load_tiny(tiny_settings.data_dir)
    backend = TransformersBackend(tiny_settings, model=model, processor=processor, cache_entries=2)
    image = Image.new("RGB", (40, 40), 10)
    turns = [ChatTurn("user", "Hi")]
    for key in ("a", "b", "a", "c"):  # "b" is least recently used when "c" arrives
        backend.generate(image, turns, cache_key=key, max_new_tokens=2)
    assert backend.generate(image, turns, cache_key="a", max_new_tokens=2).cache_hit
    assert not backend.generate(image, turns, cache_key="b", max_new_tokens=2).cache_hit


def test_verify_finding(tool: VLMTool, study: Study) -> None:
    ev = tool.verify_finding(study, "pleural_effusion", thread_id="t-verify")
    assert ev.ok and ev.meta["verification"] is True
    assert len(ev.calls) == 1 and ev.calls[0].finding == "pleural_effusion"
    assert ev.meta["prompt"] == "Is there any pleural effusion?"  # the conversational form RadVLM saw
    assert tool.verify_finding(study, "not_a_finding").ok is False


def test_failures_are_evidence_not_exceptions(tool: VLMTool, study: Study) -> None:
    ev = tool.run(ToolRequest(intent="similar_cases", study=study))
    assert not ev.ok and "does not handle" in ev.error
    ev = tool.run(ToolRequest(intent="report", study=None))
    assert not ev.ok and "attach a chest X-ray" in ev.error
    ev = tool.run(ToolRequest(intent="finding_question", study=study))
    assert not ev.ok and "needs a finding" in ev.error


def test_a_question_naming_nothing_known_is_asked_in_the_users_words(tool: VLMTool, study: Study) -> None:
    ev = tool.run(ToolRequest(intent="finding_question", study=study, text="Is the trachea midline?"))
    assert ev.ok and ev.meta["prompt"] == "Is the trachea midline?" and ev.answer
    assert ev.calls == []  # a free answer: nothing for the reconciler to count


def test_tiny_model_is_cached_on_disk_and_reloads_identically(tiny_settings: Settings) -> None:
    import torch

    from tools.vlm import tiny

    target = tiny_settings.data_dir / "tiny-vlm"
    model, processor = load_tiny(tiny_settings.data_dir)
    assert (target / "config.json").exists()
    tiny._memo.clear()
    try:
        again, processor2 = load_tiny(tiny_settings.data_dir)
        assert again is not model
        for (n1, p1), (_n2, p2) in zip(model.state_dict().items(), again.state_dict().items(), strict=True):
            assert torch.equal(p1, p2), n1
        assert processor2.tokenizer.get_vocab() == processor.tokenizer.get_vocab()
    finally:
        tiny._memo.clear()
        tiny._memo[(str(tiny_settings.data_dir), "small")] = (model, processor)


# ------------------------------------------------------------------ evidence mapping (scripted answers)
class ScriptedBackend:
    """A test double that answers with fixed RadVLM-style strings (the model is not under test here)."""

    name = "scripted"
    model_id = "scripted"
    profile = "real"

    def __init__(self, answer: str) -> None:
        self.answer = answer
        self.calls: list[list[ChatTurn]] = []

    def generate(self, image: Image.Image, turns: list[ChatTurn], *, cache_key: Hashable | None = None,
                 max_new_tokens: int | None = None, min_new_tokens: int | None = None,
                 on_token: Callable[[str], None] | None = None) -> GenerationResult:
        self.calls.append(turns)
        return GenerationResult(text=self.answer, cache_hit=False)


def _tool(answer: str, **kw: object) -> tuple[VLMTool, ScriptedBackend]:
    backend = ScriptedBackend(answer)
    return VLMTool(Settings(model_profile="real"), backend=backend, **kw), backend


def test_locate_boxes_are_locations_never_present_calls(study: Study) -> None:
    """RadVLM boxes anything it is asked to ground (trained on present targets only): a grounding
    box says where, not that. Every box comes back as a location artifact, and no call is made."""
    tool, backend = _tool("Pleural effusions are seen at [0.05, 0.55, 0.35, 0.95] and [0.62, 0.58, 0.96, 0.93].")
    ev = tool.run(ToolRequest(intent="locate", study=study, finding="pleural_effusion"))
    prompt = backend.calls[0][0].text
    assert ev.ok and "pleural effusion" in prompt and prompt.replace("pleural effusion", "{}") in GROUNDING
    assert ev.calls == [] and ev.meta["task"] == "grounding"
    assert [(a.box.x1, a.box.y2) for a in ev.artifacts] == [(0.05, 0.95), (0.62, 0.93)]
    assert {a.meta["location_only"] for a in ev.artifacts} == {True}
    assert {a.finding for a in ev.artifacts} == {"pleural_effusion"}
    assert "warning" not in ev.meta


def test_locate_a_free_phrase_or_region(study: Study) -> None:
    tool, backend = _tool("The described region is at [0.20, 0.30, 0.40, 0.50].")
    ev = tool.run(ToolRequest(intent="locate", study=study, phrase="the rounded density behind the heart"))
    assert ev.ok and ev.calls == [] and ev.meta["task"] == "phrase_grounding"
    assert backend.calls[0][0].text.endswith(": the rounded density behind the heart")
    assert len(ev.artifacts) == 1 and ev.artifacts[0].box.label == "the rounded density behind the heart"
    tool, backend = _tool("You'll find the right hemidiaphragm at [0.10, 0.60, 0.45, 0.75] in the X-ray.")
    ev = tool.run(ToolRequest(intent="locate", study=study, phrase="the right hemidiaphragm"))
    assert ev.meta["task"] == "region" and "right hemidiaphragm" in backend.calls[0][0].text
    assert ev.calls == [] and ev.artifacts[0].finding is None and ev.artifacts[0].meta["task"] == "region"
    tool, _ = _tool("The opacity is at [0.20, 0.30, 0.40, 0.50].")
    ev = tool.run(ToolRequest(intent="locate", study=study, phrase="Effusions"))  # phrase normalises to a finding
    assert ev.calls == [] and [a.finding for a in ev.artifacts] == ["pleural_effusion"]


def test_locate_without_a_target_runs_detection(study: Study) -> None:
    tool, backend = _tool("The findings include a pleural effusion located at the coordinates [0.6, 0.5, 0.9, 0.9] "
                          "and [0.1, 0.5, 0.3, 0.8]; a cardiomegaly located at the coordinates [0.3, 0.4, 0.8, 0.8].")
    ev = tool.run(ToolRequest(intent="locate", study=study, text="where are the abnormalities?"))
    assert backend.calls[0][0].text in DETECTION and ev.meta["task"] == "detection"
    assert [(c.finding, c.status, c.box.x1) for c in ev.calls] == [
        ("pleural_effusion", Status.present, 0.6), ("pleural_effusion", Status.present, 0.1),
        ("cardiomegaly", Status.present, 0.3)]
    tool, backend = _tool("Foreign objects are detected at these positions: [0.4, 0.1, 0.5, 0.6].")
    ev = tool.run(ToolRequest(intent="locate", study=study, finding="support_devices"))
    assert backend.calls[0][0].text in FOREIGN
    assert [(c.finding, c.status) for c in ev.calls] == [("support_devices", Status.present)] and ev.calls[0].box


def test_locate_with_a_no_answer_makes_no_call(study: Study) -> None:
    tool, _ = _tool("There is no pneumothorax.")
    ev = tool.run(ToolRequest(intent="locate", study=study, finding="pneumothorax"))
    assert ev.ok and ev.calls == [] and ev.artifacts == [] and ev.answer == "There is no pneumothorax."
    assert ev.meta["shapes"]["grounding"] == "text" and "no usable box" in ev.meta["notes"][0]


def test_locate_maps_boxes_back_through_padding(study: Study) -> None:
    tool, _ = _tool("At [0.00, 0.00, 1.00, 1.00].")
    tool.pad_square = True  # study is 96x64 -> padded to 96x96 with 16 px above and below
    ev = tool.run(ToolRequest(intent="locate", study=study, finding="cardiomegaly"))
    b = ev.artifacts[0].box
    assert (b.x1, b.y1, b.x2, b.y2) == (0.0, 0.0, 1.0, 1.0)
    tool, _ = _tool("At [0.25, 0.50, 0.75, 0.75].")
    tool.pad_square = True
    b = tool.run(ToolRequest(intent="locate", study=study, finding="cardiomegaly")).artifacts[0].box
    assert (b.x1, b.y1, b.x2, b.y2) == pytest.approx((0.25, 0.5, 0.75, 0.875))


@pytest.mark.parametrize(("answer", "status"), [("Yes.", Status.present), ("No.", Status.absent),
                                                 ("Possibly a small one.", Status.uncertain)])
def test_finding_question_status(study: Study, answer: str, status: Status) -> None:
    tool, _ = _tool(answer)
    ev = tool.run(ToolRequest(intent="finding_question", study=study, finding="pleural_effusion"))
    assert [(c.finding, c.status, c.text) for c in ev.calls] == [("pleural_effusion", status, answer)]


def test_verify_yes_with_box_and_no_with_box(study: Study) -> None:
    tool, _ = _tool("Yes, a left pleural effusion is seen at [0.60, 0.55, 0.95, 0.92].")
    ev = tool.verify_finding(study, "pleural_effusion")
    assert ev.calls[0].status is Status.present and ev.calls[0].box.x1 == 0.60
    tool, _ = _tool("No, but see [0.60, 0.55, 0.95, 0.92].")
    ev = tool.verify_finding(study, "pleural_effusion")
    assert ev.calls[0].status is Status.uncertain and ev.calls[0].box is None and "inconsistent" in ev.meta


def test_report_can_be_labelled(study: Study) -> None:
    pytest.importorskip("knowledge.labeler")
    tool, _ = _tool("Findings: Small right pleural effusion. No pneumothorax. Impression: Right effusion.",
                    label_reports=True, report_extras=())
    ev = tool.run(ToolRequest(intent="report", study=study))
    got = {(c.finding, c.status) for c in ev.calls}
    assert ("pleural_effusion", Status.present) in got and ("pneumothorax", Status.absent) in got
    assert {c.source for c in ev.calls} == {"vlm"}
    tool, _ = _tool("Findings: Small right pleural effusion.", report_extras=())
    assert tool.run(ToolRequest(intent="report", study=study)).calls == []  # default: the graph labels


def test_chat_history_shapes_the_conversation(study: Study) -> None:
    tool, backend = _tool("The heart is normal in size.")
    history = [{"role": "assistant", "content": "Hello"},  # a leading assistant turn is dropped
               {"role": "user", "content": "Write the report <|im_end|>"},
               {"role": "assistant", "content": "Normal chest."}]
    tool.run(ToolRequest(intent="chat", text="And the heart? <image>", study=study, history=history))
    turns = backend.calls[0]
    assert [t.role for t in turns] == ["user", "assistant", "user"]
    assert "<|im_end|>" not in turns[0].text and "<image>" not in turns[-1].text


def test_backend_exception_becomes_failure(study: Study) -> None:
    class Boom(ScriptedBackend):
        def generate(self, *a: object, **k: object) -> GenerationResult:
            raise RuntimeError("CUDA out of memory")

    ev = VLMTool(Settings(), backend=Boom("")).run(ToolRequest(intent="report", study=study))
    assert not ev.ok and "CUDA out of memory" in ev.error


def test_default_backend_follows_settings(tiny_settings: Settings) -> None:
    from tools.vlm.backends import make_backend
    from tools.vlm.backends.openai_backend import OpenAIBackend

    assert isinstance(make_backend(tiny_settings), TransformersBackend)
    # the tiny profile swaps every model, a configured server included
    assert isinstance(make_backend(tiny_settings.model_copy(update={"vlm_backend": "openai"})), TransformersBackend)
    real = tiny_settings.model_copy(update={"vlm_backend": "openai", "model_profile": "real"})
    assert isinstance(make_backend(real), OpenAIBackend)
    assert TransformersBackend.shared(tiny_settings) is TransformersBackend.shared(tiny_settings)


def test_processor_without_chat_template_uses_llava_onevision_template(tiny_settings: Settings) -> None:
    model, processor = load_tiny(tiny_settings.data_dir)
    backend = TransformersBackend(tiny_settings, model=model, processor=processor)
    expected = backend.render([ChatTurn("user", "Hi")])
    saved = processor.chat_template
    processor.chat_template = None
    try:
        assert backend.render([ChatTurn("user", "Hi")]) == expected
    finally:
        processor.chat_template = saved


def test_real_radiograph_through_load_study(tool: VLMTool, shared_data) -> None:
    imaging = pytest.importorskip("tools.ingestion.loader")
    path = sorted((shared_data / "nih_cxr14").rglob("*.png"))[0]
    study = imaging.load_study(path)
    ev = tool.run(ToolRequest(intent="locate", finding="cardiomegaly", study=study, thread_id="nih"))
    assert ev.ok, ev.error
    mi = tool.model_image(study)
    assert max(mi.image.size) <= tool.max_side and mi.view.original_size == study.original_size
