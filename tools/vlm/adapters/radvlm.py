"""RadVLM (LLaVA-OneVision fine-tuned by KrauthammerLab): its trained instructions and answer shapes.

Every instruction below is one the model was fine-tuned on (uzh-dqbm-cmi/RadVLM,
``radvlm/data/create_instructions.py``; see ../shared/RADVLM.md); a task sends one variant, picked
deterministically from ``key`` (study id + task + target), so prompts are reproducible.

Image order: IMAGE FIRST for every task. The training conversations are ``"<image>\\n" + instruction``
(create_instructions.py prefixes the image to the first human turn), and the model's own chat template
(``convert_llava_onevision_weights_to_hf.py``) renders every image part before the text parts whatever
order the content list has: the authors' ``[text, image]`` content and our ``[image, text]`` content
render to the SAME prompt (measured with the tiny model's processor: tests/tools/vlm/test_vlm_adapters.py).
Image first is therefore both in distribution and what lets report, classification, detection and
re-asks share one cached KV prefix ("<|im_start|>user\\n<image>x N") in the transformers backend.

Which instruction for which ask:
- a named finding in the VinDr-CXR label set -> "grounding" (trained on VinDr labels); another finding
  -> "phrase_grounding" with its name (MS-CXR phrases), since grounding never saw that label;
- an anatomical region of Chest ImaGenome -> "region" (the grounding instructions); any other phrase ->
  "phrase_grounding"; devices (support_devices) -> "foreign_objects";
- yes/no -> the conversational form ("Is there any pleural effusion?"): the only yes/no it saw.
Grounding boxes are LOCATIONS only: the model was trained only on present targets and boxes anything.
"""

from __future__ import annotations

import re

from knowledge.evidence import FindingCall, Status
from knowledge.vocabulary import display_name
from tools.vlm.adapters.base import LOCATION_ONLY, Parsed, Prompt, Task, pick
from tools.vlm.adapters.shapes import (
    NEGATION,
    LabelTable,
    box_groups,
    list_part,
    locations,
    negated,
    split_items,
)
from tools.vlm.geometry import ModelView
from tools.vlm.parsing import parse_yes_no

REPORT = (
    "Provide a radiology report for this Chest X-Ray.", "Analyze the Chest X-Ray and report your findings.",
    "Please give a detailed radiology report from this Chest X-Ray image.",
    "Please offer a detailed analysis based on this image.", "Analyze this image and provide a report.",
    "Write a radiology report for this Chest X-ray.", "Draft a concise report for this image.",
    "Please provide a brief radiology report.", "Compose a radiology report focusing on key findings.",
    "Create a structured radiology report for this X-ray.", "Produce a summary radiology report for this chest image.",
    "Provide a radiology report for this exam.", "Write a report summarizing this Chest X-ray.",
    "Draft a simple radiology report for these findings.", "Outline a radiology report for this X-ray.",
)
CLASSIFICATION = (
    "Can you tell me if there are any abnormalities on this image?", "Are there any abnormalities on this Chest X-ray?",
    "Please identify abnormalities on this X-ray.", "Can you point out if there are any abnormalities on this Chest X-ray?",
    "Are there abnormalities on this Chest X-ray?", "Tell me about abnormalities on this image",
    "Do any abnormalities appear on this Chest X-ray?", "Identify abnormalities on this image",
    "Could you indicate if there are any lesions on this Chest X-ray?", "Are there any abnormalities present on this image?",
    "Please identify the abnormalities from this image.",
)
DETECTION = (
    "Could you indicate if there are any abnormalities on this Chest X-ray and their locations?",
    "Are abnormalities present on this Chest X-ray? Where exactly can they be found?",
    "Please identify any lesions or abnormalities on this X-ray and specify their locations.",
    "On this Chest X-ray, can you point out any abnormalities and their precise positions?",
    "I need information on any abnormalities or lesions on this X-ray, including their locations. Can you help?",
    "Can you detect and describe the location of any abnormalities found on this Chest X-ray?",
    "Are there identifiable abnormalities on this Chest X-ray? If so, where are they located?",
    "Tell me about any lesions on this X-ray and detail their specific locations.",
    "Do any abnormalities appear on this Chest X-ray? Please point them out along with their locations.",
    "Identify any abnormalities or lesions present on this X-ray and provide their exact locations.",
)
GROUNDING = (
    "Where is the {} located in this Chest X-ray?", "Can you point out the {}'s position on the image?",
    "What's the location of the {} in the X-ray?", "Identify where the {} is on this Chest X-ray, please.",
    "Where exactly is the {} found on this image?", "Could you specify where to find the {} on this X-ray?",
    "Highlight the {}'s area on the image.", "Show me the {}'s location on this CXR.",
    "Where should I look to find the {} in this image?", "Can you locate the {} on this X-ray for me?",
    "Please point to the {} on this Chest X-ray.", "Indicate the position of the {} on this image.",
    "Describe the location of the {} on the X-ray.", "Where on this image is the {} located?",
    "Point out the exact location of the {} in the Chest X-ray.", "How can I identify the {} on this image?",
    "Where is the {} situated in this CXR?", "Can you highlight the {} on this image?",
    "Indicate where the {} is found on this X-ray.", "Describe where to find the {} on this Chest X-ray.",
)
PHRASE = (
    "Please locate the following sentence: {}", "Identify the position of the following phrase in the CXR: {}",
    "Please show me the location of: {}", "Highlight the area of the following observation on the image: {}",
    "Where on the image can you see the following observation: {}", "Find the region corresponding to: {}",
    "Please indicate where this finding is located: {}", "Mark the area where you observe: {}",
)
FOREIGN = (
    "Could you indicate if there are any foreign objects on this Chest X-ray and their locations?",
    "Are there any foreign objects visible on this Chest X-ray and, if so, where?",
    "Can you detect and pinpoint the location of any foreign objects on this X-ray?",
    "Do you see any foreign objects present on this Chest X-ray? Where exactly?",
    "Are any unexpected items or foreign objects showing up in this X-ray image?",
    "Can you identify if there are foreign objects in this X-ray, and provide their locations?",
    "Could you locate and describe any foreign objects in this Chest X-ray?",
    "On this X-ray, are there signs of any foreign objects? Where can they be found?",
    "Please point out any foreign objects on this X-ray along with their coordinates.",
    "Can you report the presence and locations of any foreign objects in this Chest X-ray?",
)
QUESTION = "Is there any {}?"  # the conversational form (RADVLM.md, Conversation)

CHEXPERT = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Enlarged Cardiomediastinum", "Fracture",
            "Lung Lesion", "Lung Opacity", "Pleural Effusion", "Pleural Other", "Pneumonia", "Pneumothorax",
            "Support Devices")
VINDR = ("Aortic enlargement", "Atelectasis", "Calcification", "Cardiomegaly", "Consolidation", "ILD", "Infiltration",
         "Lung Opacity", "Nodule/Mass", "Other lesion", "Pleural effusion", "Pleural thickening", "Pneumothorax",
         "Pulmonary fibrosis")
REGIONS = ("right lung", "left lung", "right upper lung zone", "left upper lung zone", "right mid lung zone",
           "left mid lung zone", "right lower lung zone", "left lower lung zone", "right hilar structures",
           "left hilar structures", "right apical zone", "left apical zone", "right costophrenic angle",
           "left costophrenic angle", "right hemidiaphragm", "left hemidiaphragm", "trachea", "spine",
           "right clavicle", "left clavicle", "aortic arch", "mediastinum", "upper mediastinum", "svc",
           "cardiac silhouette", "cavoatrial junction", "right atrium", "carina", "abdomen")

CHEXPERT_TABLE = LabelTable.of(CHEXPERT)
CHEXPERT_IDS: tuple[str, ...] = tuple(dict.fromkeys(v for v in CHEXPERT_TABLE.labels.values() if v))
DETECT_TABLE = LabelTable.of(VINDR + CHEXPERT, {"nodule": "nodule", "mass": "mass", "foreign object": "support_devices",
                                                "foreign objects": "support_devices"})
_REGION_KEYS = {r: r for r in REGIONS} | {"superior vena cava": "svc", "heart": "cardiac silhouette"}


def region_name(text: str | None) -> str | None:
    """The model's name for an anatomical region ("the Right Hemidiaphragm" -> "right hemidiaphragm")."""
    if not text:
        return None
    key = re.sub(r"^(the|a|an)\s+", "", re.sub(r"\s+", " ", text.strip().lower())).strip(" ?.!")
    if key in _REGION_KEYS:
        return _REGION_KEYS[key]
    from knowledge.vocabulary import normalize_region  # the lexicon's synonyms ("right diaphragm")

    rid = normalize_region(key)
    name = rid.replace("_", " ") if rid else None
    return name if name in _REGION_KEYS else None


def vindr_name(finding: str | None) -> str | None:
    """The VinDr-CXR label the model was trained to ground for a vocabulary id, if any."""
    if not finding:
        return None
    for name in VINDR:
        if DETECT_TABLE.labels.get(name.lower()) == finding:
            return name.lower()
    return None


class RadVLMAdapter:
    family = "radvlm"
    display_name = "RadVLM"
    localises = True
    # Trained on single images: no instruction reads a study against a prior, so a difference between
    # two of its reports is at most a possible change for a reader to check.
    compares_priors = False
    system: str | None = None  # the authors' inference sends none
    hf_class = "LlavaOnevisionForConditionalGeneration"  # what the transformers backend loads
    tiny_loader = "tools.vlm.tiny:load_tiny"  # the offline random stand-in (profile tiny)

    def prompt(self, task: Task, *, key: str, target: str | None = None) -> Prompt | None:
        k = f"{key}|{task}|{(target or '').lower()}"
        if task == "report":
            return Prompt(task, pick(REPORT, k))
        if task == "classification":
            return Prompt(task, pick(CLASSIFICATION, k))
        if task == "detection":
            return Prompt(task, pick(DETECTION, k))
        if task == "foreign_objects":
            return Prompt(task, pick(FOREIGN, k))
        if task == "grounding":  # target: a vocabulary id or its name; only VinDr labels were trained
            name = vindr_name(target) or (target.lower() if target and target.lower() in
                                          {v.lower() for v in VINDR} else None)
            return Prompt(task, pick(GROUNDING, k).format(name)) if name else None
        if task == "region":
            name = region_name(target)
            return Prompt(task, pick(GROUNDING, k).format(name)) if name else None
        if task == "phrase_grounding" and target and target.strip():
            return Prompt(task, pick(PHRASE, k).format(target.strip()))
        if task == "question" and target and target.strip():
            return Prompt(task, QUESTION.format(target.strip().lower()))
        if task == "chat" and target is not None:
            return Prompt(task, target)
        return None

    # ------------------------------------------------------------------ answers
    def parse(self, task: Task, answer: str, view: ModelView | None, *, target: str | None = None,
              finding: str | None = None, source: str = "vlm") -> Parsed:
        text = (answer or "").strip()
        if not text:
            return Parsed(task, "empty", notes=["the model returned an empty answer"])
        if task == "classification":
            return _classification(text, source)
        if task in ("detection", "foreign_objects"):
            return _detection(task, text, view, source)
        if task in LOCATION_ONLY:
            return _grounding(task, text, view, target or (display_name(finding) if finding else "target"), finding)
        if task == "question":
            return _question(text, view, target or "", finding, source)
        out = Parsed(task, "text")
        if task == "chat":
            for g in box_groups(text):
                out.locations += locations(g.spans, view, target=target or "", finding=None, task="chat",
                                           rejected=out.rejected)
        return out


def _classification(text: str, source: str) -> Parsed:
    """"<anything>: a, b and c." -> listed present, the other CheXpert labels absent; a negative
    sentence naming no label -> all absent and no_finding present; else text with a note."""
    out = Parsed("classification", "list")
    present: dict[str, str] = {}
    denied: dict[str, str] = {}
    for item in split_items(list_part(text)):
        hit = CHEXPERT_TABLE.find_in(item)
        if hit is None or hit[1] is None:
            continue
        (denied if NEGATION.search(item) else present).setdefault(hit[1], item)
    if not present:
        if not negated(text):
            out.shape = "text"
            out.notes.append("classification answer names no CheXpert label and is not a negative statement: "
                             "kept as text")
            return out
        out.shape = "none"
    for fid in dict.fromkeys([*CHEXPERT_IDS, *present]):
        status = Status.present if fid in present else Status.absent
        out.calls.append(FindingCall(finding=fid, status=status, source=source, text=text))
    out.calls.append(FindingCall(finding="no_finding", status=Status.absent if present else Status.present,
                                 source=source, text=text))
    return out


def _detection(task: str, text: str, view: ModelView | None, source: str) -> Parsed:
    """Runs of boxes, each named by the words before it -> a present call per box (and a Location)."""
    out = Parsed(task, "boxes")
    for group in box_groups(text):
        if task == "foreign_objects":
            hit: tuple[str, str | None] | None = ("foreign object", "support_devices")
        else:
            hit = DETECT_TABLE.find_in(group.context)
        name, fid = hit if hit else ("unnamed abnormality", None)
        if hit is None:
            out.notes.append(f"boxes {', '.join(s.chunk for s in group.spans)} follow no known label")
        elif fid is None:
            out.notes.append(f"'{name}' has no vocabulary id: kept as a location only")
        locs = locations(group.spans, view, target=name, finding=fid, task=task, rejected=out.rejected)
        out.locations += locs
        if fid is not None:
            out.calls += [FindingCall(finding=fid, status=Status.present, source=source, box=loc.box,
                                      text=text) for loc in locs]
    if not out.locations and not out.rejected:
        out.shape = "none" if negated(text) else "text"
        if out.shape == "text":
            out.notes.append(f"{task} answer has no boxes and is not a negative statement: kept as text")
    return out


def _grounding(task: str, text: str, view: ModelView | None, target: str, finding: str | None) -> Parsed:
    out = Parsed(task, "boxes")
    for group in box_groups(text):
        out.locations += locations(group.spans, view, target=target, finding=finding, task=task,
                                   rejected=out.rejected)
    if not out.locations:
        out.shape = "text"
        out.notes.append(f"no usable box for '{target}' in the answer")
    return out


def _question(text: str, view: ModelView | None, target: str, finding: str | None, source: str) -> Parsed:
    out = Parsed("question", "yes_no")
    status = parse_yes_no(text)
    for group in box_groups(text):
        out.locations += locations(group.spans, view, target=target, finding=finding, task="question",
                                   rejected=out.rejected)
    if status is Status.absent and out.locations:
        status = Status.uncertain
        out.notes.append("answered no but drew a box")
    if finding is not None:
        box = out.locations[0].box if out.locations and status is Status.present else None
        out.calls.append(FindingCall(finding=finding, status=status, source=source, box=box, text=text))
    return out
