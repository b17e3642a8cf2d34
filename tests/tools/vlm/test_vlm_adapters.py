"""RadVLM adapter: trained instructions only, answer-shape parsers (golden answers from RADVLM.md
plus paraphrases), degrading to text, and the image order the processor renders."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from knowledge.evidence import Status
from tools.vlm.adapters import get_adapter
from tools.vlm.adapters.base import Adapter, pick
from tools.vlm.adapters.radvlm import (
    CHEXPERT_IDS,
    CLASSIFICATION,
    DETECTION,
    FOREIGN,
    GROUNDING,
    PHRASE,
    REPORT,
    RadVLMAdapter,
)
from tools.vlm.geometry import ModelView

A = RadVLMAdapter()
RADVLM_MD = Path(__file__).resolve().parents[3].parent / "shared" / "RADVLM.md"


def test_is_an_adapter_and_registered() -> None:
    assert isinstance(A, Adapter) and isinstance(get_adapter("radvlm"), RadVLMAdapter)
    with pytest.raises(ValueError, match="known: medgemma, medgemma15, radvlm"):
        get_adapter("nope")


def _md_variants(section: str) -> list[str]:
    text = RADVLM_MD.read_text()
    body = text.split(f"### {section}", 1)[1].split("\n### ", 1)[0].split("\n## ", 1)[0]
    return [m.group(1).strip() for m in re.finditer(r"^- (.+)$", body, re.M)
            if not m.group(1).startswith(("several", "one", "none"))]


@pytest.mark.skipif(not RADVLM_MD.exists(), reason="../shared/RADVLM.md not beside the checkout")
@pytest.mark.parametrize(("section", "ours"), [
    ("Report generation", REPORT), ("Abnormality classification", CLASSIFICATION),
    ("Abnormality detection", DETECTION), ("Grounding of one named", GROUNDING), ("Phrase grounding", PHRASE),
    ("Foreign objects", FOREIGN)])
def test_instruction_lists_are_the_trained_ones(section: str, ours: tuple[str, ...]) -> None:
    assert set(ours) <= set(_md_variants(section)) and len(ours) >= 8


@pytest.mark.parametrize("task", ["report", "classification", "detection", "foreign_objects"])
def test_prompts_are_trained_variants_chosen_deterministically(task) -> None:
    lists = {"report": REPORT, "classification": CLASSIFICATION, "detection": DETECTION, "foreign_objects": FOREIGN}
    got = [A.prompt(task, key=f"study{i}").text for i in range(60)]
    assert set(got) <= set(lists[task]) and len(set(got)) >= len(lists[task]) // 2
    assert got == [A.prompt(task, key=f"study{i}").text for i in range(60)]  # same key, same prompt
    assert all(A.prompt(task, key="x").image_first for _ in range(2))
    assert pick(["a", "b", "c"], "k") == pick(["a", "b", "c"], "k")


def test_grounding_region_phrase_and_question_prompts() -> None:
    p = A.prompt("grounding", key="s", target="pleural_effusion")
    assert p.text in {g.format("pleural effusion") for g in GROUNDING}
    assert A.prompt("grounding", key="s", target="fibrosis").text in {g.format("pulmonary fibrosis") for g in GROUNDING}
    assert A.prompt("grounding", key="s", target="edema") is None  # never trained on that label: caller phrase-grounds
    assert A.prompt("region", key="s", target="The Right Hemidiaphragm").text in {
        g.format("right hemidiaphragm") for g in GROUNDING}
    assert A.prompt("region", key="s", target="left lower lobe") is None
    assert A.prompt("region", key="s", target="the superior vena cava").text in {g.format("svc") for g in GROUNDING}
    assert A.prompt("region", key="s", target="right diaphragm").text in {  # the lexicon's synonym
        g.format("right hemidiaphragm") for g in GROUNDING}
    assert A.prompt("phrase_grounding", key="s", target="small left effusion").text in {
        f.format("small left effusion") for f in PHRASE}
    assert A.prompt("question", key="s", target="Pleural effusion").text == "Is there any pleural effusion?"


def _present(parsed) -> set[str]:
    return {c.finding for c in parsed.calls if c.status is Status.present}


@pytest.mark.parametrize(("answer", "present"), [
    ("The following abnormalities are identified: atelectasis, lung opacity and pleural effusion.",
     {"atelectasis", "lung_opacity", "pleural_effusion"}),
    ("The following abnormalities are present: cardiomegaly and support devices.", {"cardiomegaly", "support_devices"}),
    ("The analysis reveals these abnormalities: enlarged cardiomediastinum, edema, pleural other and fracture.",
     {"enlarged_cardiomediastinum", "edema", "pleural_other", "fracture"}),
    ("The Chest X-ray includes the following abnormalities: pneumonia, consolidation, lung lesion and pneumothorax.",
     {"pneumonia", "consolidation", "lung_lesion", "pneumothorax"}),
    ("Yes, there is one abnormality identified: pneumothorax.", {"pneumothorax"}),
    ("The following abnormality is present: edema.", {"edema"}),
    ("The Chest X-ray includes the following finding: support devices.", {"support_devices"}),
    # paraphrases
    ("I see cardiomegaly and a small pleural effusion.", {"cardiomegaly", "pleural_effusion"}),
    ("Abnormalities: Atelectasis; Pleural Effusion; Support Devices", {"atelectasis", "pleural_effusion",
                                                                      "support_devices"}),
    ("The image shows pulmonary edema as well as cardiomegaly.", {"edema", "cardiomegaly"}),
])
def test_classification_list_answers(answer: str, present: set[str]) -> None:
    p = A.parse("classification", answer, None)
    assert p.shape == "list" and _present(p) == present
    assert {c.finding for c in p.calls} == {*CHEXPERT_IDS, "no_finding"}  # an explicit statement about every label
    assert next(c for c in p.calls if c.finding == "no_finding").status is Status.absent
    assert all(c.source == "vlm" and c.text == answer for c in p.calls)


@pytest.mark.parametrize("answer", [
    "No abnormalities or lesions are detected on this Chest X-ray.", "There are no findings on this Chest X-ray.",
    "The Chest X-ray appears to be clear of any findings.", "Nothing abnormal is seen.", "The chest X-ray is normal.",
])
def test_classification_none_answers(answer: str) -> None:
    p = A.parse("classification", answer, None)
    assert p.shape == "none" and _present(p) == {"no_finding"} and len(p.calls) == 14


@pytest.mark.parametrize("answer", ["", "   ", "asdf qwer", "[0.1, 0.2", "Cardio!!::;;,,", "Yes.", "ĠĠ Ċ 0.3]"])
def test_unfit_answers_degrade_to_text_never_raise(answer: str) -> None:
    for task in ("report", "classification", "detection", "grounding", "region", "phrase_grounding",
                 "foreign_objects", "question", "chat"):
        p = A.parse(task, answer, None, target="pleural effusion", finding="pleural_effusion")
        assert p.shape in {"text", "empty", "none", "yes_no", "list"}, (task, answer, p.shape)
        if task in ("grounding", "region", "phrase_grounding", "detection"):
            assert p.calls == [] and p.locations == []
    p = A.parse("classification", "asdf qwer", None)
    assert p.shape == "text" and p.calls == [] and "kept as text" in p.notes[0]


DET = ("Sure! I can find a pleural effusion located at the coordinates [0.34, 0.63, 0.4, 0.86]; an aortic enlargement "
       "located at the coordinates [0.65, 0.23, 0.95, 0.41] and [0.1, 0.2, 0.3, 0.4].")


@pytest.mark.parametrize(("answer", "expected"), [
    (DET, [("pleural effusion", 0.34), ("aortic enlargement", 0.65), ("aortic enlargement", 0.1)]),
    ("Yes, the following abnormalities are identified: a nodule/mass located at the coordinates [0.1, 0.1, 0.2, 0.2], "
     "[0.3, 0.3, 0.4, 0.4] and [0.5, 0.5, 0.6, 0.6]; a cardiomegaly located at the coordinates [0.3, 0.5, 0.8, 0.8].",
     [("nodule/mass", 0.1), ("nodule/mass", 0.3), ("nodule/mass", 0.5), ("cardiomegaly", 0.3)]),
    ("The findings include an ILD located at the coordinates [0.2, 0.3, 0.45, 0.8]; a pulmonary fibrosis located at "
     "the coordinates [0.55, 0.1, 0.8, 0.4].", [("ild", 0.2), ("pulmonary fibrosis", 0.55)]),
    # paraphrases
    ("Pleural effusion at [0.1, 0.5, 0.3, 0.9], cardiomegaly at [0.3, 0.4, 0.8, 0.85].",
     [("pleural effusion", 0.1), ("cardiomegaly", 0.3)]),
    ("Upon examination, I detect Pleural thickening: [0.7, 0.2, 0.9, 0.5]. Also a calcification is seen at "
     "[0.4, 0.4, 0.45, 0.45].", [("pleural thickening", 0.7), ("calcification", 0.4)]),
])
def test_detection_answers(answer: str, expected: list[tuple[str, float]]) -> None:
    p = A.parse("detection", answer, None)
    assert p.shape == "boxes" and [(loc.target, loc.box.x1) for loc in p.locations] == expected
    with_id = [loc for loc in p.locations if loc.finding]
    assert [(c.finding, c.box) for c in p.calls] == [(loc.finding, loc.box) for loc in with_id]
    assert all(c.status is Status.present for c in p.calls)


@pytest.mark.parametrize("answer", ["I can't find any lesion on the image.",
                                    "No abnormalities or lesions are detected on this Chest X-ray.",
                                    "There are no abnormalities to localise."])
def test_detection_none(answer: str) -> None:
    p = A.parse("detection", answer, None)
    assert p.shape == "none" and p.calls == [] and p.locations == []


@pytest.mark.parametrize(("task", "answer", "n"), [
    ("grounding", "The pleural effusion is located at the coordinates [0.12, 0.55, 0.4, 0.83] on the image.", 1),
    ("region", "You'll find the cardiac silhouette at [0.35, 0.45, 0.75, 0.8] in the X-ray.", 1),
    ("phrase_grounding", "This sentence is located at the coordinates [0.1, 0.2, 0.3, 0.4] and [0.5, 0.6, 0.7, 0.8] "
     "on the image.", 2),
    ("phrase_grounding", "The bounding box for this observation is [0.2, 0.2, 0.4, 0.5].", 1),
    ("grounding", "Sure, it is at [0.5, 0.5, 0.7, 0.9].", 1),  # paraphrase
])
def test_grounding_is_locations_only(task: str, answer: str, n: int) -> None:
    p = A.parse(task, answer, None, target="pleural effusion", finding="pleural_effusion")
    assert p.calls == [] and len(p.locations) == n and p.shape == "boxes"
    assert {loc.target for loc in p.locations} == {"pleural effusion"} and {loc.task for loc in p.locations} == {task}


def test_foreign_objects_are_support_devices_with_boxes() -> None:
    p = A.parse("foreign_objects", "Foreign objects are detected at these positions: [0.1, 0.2, 0.3, 0.4] and "
                "[0.5, 0.5, 0.6, 0.7].", None)
    assert [(c.finding, c.status, c.box.x1) for c in p.calls] == [("support_devices", Status.present, 0.1),
                                                                  ("support_devices", Status.present, 0.5)]
    p = A.parse("foreign_objects", "No foreign objects are detected on this Chest X-ray.", None)
    assert p.shape == "none" and p.calls == []


def test_boxes_map_back_through_padding_and_bad_boxes_are_rejected() -> None:
    view = ModelView((96, 64), 96, 64, 96, 96, 0, 16)  # 96x64 padded to a square
    p = A.parse("detection", "a cardiomegaly located at the coordinates [0.25, 0.5, 0.75, 0.75] and "
                "[0.1, 0.2, 1.7, 0.4].", view)
    assert [(c.box.y1, c.box.y2) for c in p.calls] == [pytest.approx((0.5, 0.875))]
    assert p.rejected == ["[0.1, 0.2, 1.7, 0.4] (coordinates outside 0-1)"]


def test_the_processor_renders_both_orders_the_same(tiny_backend) -> None:
    """LLaVA-OneVision's template puts images before text whatever the content order: the authors'
    [text, image] and our [image, text] are one prompt, so image-first costs nothing in distribution."""
    from tools.vlm.prompts import ChatTurn

    first = tiny_backend.render([ChatTurn("user", "Provide a radiology report for this exam.", True)])
    last = tiny_backend.render([ChatTurn("user", "Provide a radiology report for this exam.", False)])
    assert first == last == "<|im_start|>user\n<image>\nProvide a radiology report for this exam.<|im_end|>\n" \
                            "<|im_start|>assistant\n"


def test_openai_messages_follow_the_order() -> None:
    from tools.vlm.backends.openai_backend import to_openai_messages
    from tools.vlm.prompts import ChatTurn

    assert [p["type"] for p in to_openai_messages([ChatTurn("user", "Q", True)], "data:x")[0]["content"]] == \
        ["image_url", "text"]
    assert [p["type"] for p in to_openai_messages([ChatTurn("user", "Q", False)], "data:x")[0]["content"]] == \
        ["text", "image_url"]
