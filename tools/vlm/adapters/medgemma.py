"""MedGemma (google/medgemma-4b-it and google/medgemma-1.5-4b-it, Gemma 3): the prompts their model cards
and Google's notebooks show, and their answers.

MedGemma 1 (``medgemma``):

- System turn "You are an expert radiologist." (the card's example); Gemma 3's template prepends it to
  the first user turn.
- Report: the card's "Describe this X-ray", text BEFORE the image as in the card's content list
  (Gemma 3 renders parts in content order, so order is a real choice here: the report follows the card).
- Yes/no questions and re-asks: "Is there any pleural effusion?" with the image FIRST, so the re-asks of
  a turn share their image prefix and batch (the card documents no order for questions; Gemma 3's own
  examples put the image first).
- No boxes: the card documents no box format, so ``localises`` is False, grounding / detection /
  classification prompts are None, and the tool says locate turns have only the classifier's heatmap.
  Answers are read with the same labeler (report, by the graph) and yes/no reader as RadVLM's.
- It cannot compare with a prior: its card documents no two-image form.

MedGemma 1.5 (``medgemma15``), only what its card and Google's 1.5 notebooks show:
- Report: one user turn, the image then "Describe this X-ray", no system turn (the card's example).
- Boxes: the anatomy-localization notebook's instruction block and query ("Where is the <x>?", reasoning,
  then ``Final Answer:`` and a JSON list of ``{"box_2d": [y0, x0, y1, x1], "label": ...}`` on a 0-1000
  scale of the image it was given, padded to a square as the notebook does). A thinking trace ending in
  ``<unused95>`` is dropped first, as the notebook does.
- Comparison with a prior: the longitudinal notebook's single user turn, the prior image, then the
  current one, then its text, and nothing else (the card says the model was not evaluated for multi-turn
  use, so every comparison is a fresh single-turn prompt). Its answer is prose: change statements are
  read per sentence, only where one sentence names one finding and one unambiguous change cue. A conflict
  with the classifier is re-asked in the same form (both images, one fresh user turn) with a question about
  that one finding; its wording is ours, as no notebook shows a targeted comparison question.
- A thinking trace (up to ``<unused95>``) is dropped from every answer, the report included.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Literal

from knowledge.evidence import Box, FindingCall
from knowledge.vocabulary import FINDING_SET, display_name
from tools.vlm.adapters.base import LOCATION_ONLY, Location, Parsed, Prompt, Task
from tools.vlm.adapters.shapes import sentences
from tools.vlm.geometry import ModelView
from tools.vlm.parsing import parse_yes_no

SYSTEM = "You are an expert radiologist."
REPORT = "Describe this X-ray"
QUESTION = "Is there any {}?"


def sample_prompts() -> list[str]:
    """Prompt text for the tiny tokenizer's corpus."""
    return [SYSTEM, REPORT, QUESTION.format("pleural effusion"), QUESTION.format("pneumothorax")]


class MedGemmaAdapter:
    family = "medgemma"
    display_name = "MedGemma"
    localises = False
    compares_priors = False  # the card documents no two-image form
    pad_square = False
    system: str | None = SYSTEM
    hf_class = "Gemma3ForConditionalGeneration"
    tiny_loader = "tools.vlm.tiny_medgemma:load_tiny_medgemma"

    def prompt(self, task: Task, *, key: str, target: str | None = None) -> Prompt | None:
        if task == "report":
            return Prompt(task, REPORT, image_first=False)
        if task == "question" and target and target.strip():
            return Prompt(task, QUESTION.format(target.strip().lower()), image_first=True)
        if task == "chat" and target is not None:
            return Prompt(task, target, image_first=True)
        return None  # no documented classification list or box format

    def parse(self, task: Task, answer: str, view: ModelView | None, *, target: str | None = None,
              finding: str | None = None, source: str = "vlm") -> Parsed:
        text = (answer or "").strip()
        if not text:
            return Parsed(task, "empty", notes=["the model returned an empty answer"])
        if task == "question":
            out = Parsed(task, "yes_no")
            if finding is not None:
                out.calls.append(FindingCall(finding=finding, status=parse_yes_no(text), source=source, text=text))
            return out
        return Parsed(task, "text")


# --- MedGemma 1.5 -------------------------------------------------------------------------------------
# The anatomy-localization notebook's instruction block, verbatim; ``{}`` is the object asked about.
LOCATE = (
    "Instructions:\n"
    "The following user query will require outputting bounding boxes. The format of bounding boxes coordinates "
    "is [y0, x0, y1, x1] where (y0, x0) must be top-left corner and (y1, x1) the bottom-right corner. This implies "
    "that x0 < x1 and y0 < y1. Always normalize the x and y coordinates the range [0, 1000], meaning that a bounding "
    "box starting at 15% of the image width would be associated with an x coordinate of 150. You MUST output a "
    "single parseable json list of objects enclosed into ```json...``` brackets, for instance "
    "```json[{{\"box_2d\": [800, 3, 840, 471], \"label\": \"car\"}}, {{\"box_2d\": [400, 22, 600, 73], "
    "\"label\": \"dog\"}}]``` is a valid output. Now answer to the user query.\n\n"
    "Remember \"left\" refers to the patient's left side where the heart is and sometimes underneath an L in the "
    "upper right corner of the image.\n\n"
    "Query:\n"
    "Where is the {}? Don't give a final answer without reasoning. Output the final answer in the format "
    "\"Final Answer: X\" where X is a JSON list of objects. The object needs a \"box_2d\" and \"label\" key. Answer:"
)
# The longitudinal notebook's prompt, verbatim (its line break included).
COMPARE = ("Provide a comparison of these two images and include details from\n"
           "the image which students should take note of when reading longitudinal CXR\n")
# A re-ask about one finding, in the comparison's form; it asks for the change words the reader knows.
COMPARE_FINDING = ("Compare the {} in the second image with the first image. Is it new, worse, unchanged, "
                   "improved or resolved? Answer in one sentence.")
BOX_SCALE = 1000.0
THOUGHT_START = "<unused94>"
THOUGHT_END = "<unused95>"

Change = Literal["new", "worse", "stable", "improved", "resolved"]
# One cue family per change; a sentence with cues of two families says nothing we can use.
_CHANGE_CUES: dict[str, re.Pattern[str]] = {
    "new": re.compile(r"\b(?:new(?:ly)?|interval development|has developed|now (?:seen|present|visible))\b", re.I),
    "worse": re.compile(r"\b(?:increas\w*|larger|bigger|wors\w*|progress\w*|enlarg\w*|more (?:extensive|pronounced|prominent|dense))\b",
                        re.I),
    "improved": re.compile(r"\b(?:decreas\w*|improv\w*|smaller|reduc\w*|less (?:extensive|pronounced|prominent|dense))\b",
                           re.I),
    "resolved": re.compile(r"\b(?:resolved|resolution|no longer (?:seen|visible|present|evident))\b", re.I),
    "stable": re.compile(r"\b(?:unchanged|stable|no (?:significant |interval )*change|similar)\b", re.I),
}
_NEGATED_CUE = re.compile(r"\b(?:no|not|without)\s+(?:\w+\s+)?(?:new|increas\w*|decreas\w*|wors\w*|improv\w*)\b", re.I)


@dataclass(frozen=True)
class ChangeStatement:
    """One change the model stated for one finding, with the sentence that says it."""

    finding: str
    change: Change
    text: str
    source: str = "vlm"


@dataclass(frozen=True)
class ComparisonPrompt:
    """A single-turn comparison: the prior image, the current image, then ``text`` (no system turn)."""

    text: str
    images: tuple[str, str] = ("prior", "current")


def comparison_messages(prior: Any, current: Any, prompt: ComparisonPrompt | None = None) -> list[dict[str, Any]]:
    """The notebook's message list for one fresh comparison: one user turn, prior image first."""
    prompt = prompt or ComparisonPrompt(COMPARE)
    return [{"role": "user", "content": [{"type": "image", "image": prior}, {"type": "image", "image": current},
                                         {"type": "text", "text": prompt.text}]}]


def without_thought(text: str) -> str:
    """The answer after a thinking trace (``...<unused95>``), or the whole answer when it has none."""
    return text.split(THOUGHT_END, 1)[1].strip() if THOUGHT_END in text else text


class ThoughtFilter:
    """A token sink that passes a streamed answer on without its thinking trace: pieces are held while the
    answer may still open a trace (``<unused94>``), and a trace's pieces are dropped up to ``<unused95>``."""

    def __init__(self, sink: Any) -> None:
        self.sink, self.held, self.state = sink, "", "undecided"

    def __call__(self, piece: str) -> None:
        if self.state == "open":
            self.sink(piece)
            return
        self.held += piece
        if self.state == "undecided":
            head = self.held.lstrip()
            if head.startswith(THOUGHT_START):
                self.state = "thinking"
            elif not THOUGHT_START.startswith(head):
                self.state, out, self.held = "open", self.held, ""
                self.sink(out)
                return
        if self.state == "thinking" and THOUGHT_END in self.held:
            rest = self.held.split(THOUGHT_END, 1)[1].lstrip()
            self.state, self.held = "open", ""
            if rest:
                self.sink(rest)


def final_answer(text: str) -> str:
    """The answer after any thinking trace and after its last ``Final Answer:``, fences removed."""
    if THOUGHT_END in text:
        text = text.split(THOUGHT_END, 1)[1]
    at = text.rfind("Final Answer:")
    if at >= 0:
        text = text[at + len("Final Answer:"):]
    return text.replace("```json", "").replace("```", "").strip()


def _box_items(text: str) -> tuple[list[Any], str | None]:
    body = final_answer(text)
    start, end = body.find("["), body.rfind("]")
    if start < 0 or end <= start:
        return [], "no JSON list in the answer"
    try:
        items = json.loads(body[start:end + 1])
    except json.JSONDecodeError as exc:
        return [], f"the answer's JSON list does not parse ({exc.msg})"
    return (items, None) if isinstance(items, list) else ([], "the answer's JSON is not a list")


def _coords(item: Any) -> tuple[tuple[float, float, float, float] | None, str]:
    """``box_2d`` [y0, x0, y1, x1] on 0-1000 -> model-image fractions (x1, y1, x2, y2), or None and why."""
    box = item.get("box_2d") if isinstance(item, dict) else None
    if not isinstance(box, list) or len(box) != 4 or not all(isinstance(v, int | float) for v in box):
        return None, "no box_2d of four numbers"
    y0, x0, y1, x1 = (float(v) for v in box)
    if not all(0.0 <= v <= BOX_SCALE for v in (y0, x0, y1, x1)):
        return None, "a coordinate outside 0-1000"
    if not (x0 < x1 and y0 < y1):
        return None, "not top-left then bottom-right"
    return (x0 / BOX_SCALE, y0 / BOX_SCALE, x1 / BOX_SCALE, y1 / BOX_SCALE), ""


def read_changes(answer: str, *, source: str = "vlm") -> list[ChangeStatement]:
    """Change statements from a comparison answer: one per sentence that names exactly one finding and
    cues exactly one change ("the left effusion has increased" -> pleural_effusion worse). A negated cue
    ("no new opacity") or two findings in one sentence give nothing; so does a sentence without a cue."""
    from knowledge.labeler import find_mentions

    out: list[ChangeStatement] = []
    for sentence in sentences(final_answer(answer or "")):
        findings = {m.finding for m in find_mentions(sentence) if m.finding != "no_finding"}
        if len(findings) != 1 or _NEGATED_CUE.search(sentence):
            continue
        cued = [c for c, rx in _CHANGE_CUES.items() if rx.search(sentence)]
        if len(cued) == 1:
            out.append(ChangeStatement(finding=findings.pop(), change=cued[0], text=sentence.strip(),  # type: ignore[arg-type]
                                       source=source))
    return out


class MedGemma15Adapter(MedGemmaAdapter):
    """MedGemma 1.5: the card's report prompt, the localization notebook's boxes, the longitudinal
    notebook's two-image comparison."""

    family = "medgemma15"
    display_name = "MedGemma 1.5"
    localises = True
    compares_priors = True
    pad_square = True  # the localization notebook pads to a square, "as in training and evaluation"
    system: str | None = None

    def prompt(self, task: Task, *, key: str, target: str | None = None) -> Prompt | None:
        if task == "report":
            return Prompt(task, REPORT, image_first=True)
        if task in LOCATION_ONLY and target and target.strip():
            name = display_name(target) if target in FINDING_SET else target.strip()  # ids read as words
            return Prompt(task, LOCATE.format(name.lower()), image_first=True)
        return super().prompt(task, key=key, target=target) if task in ("question", "chat") else None

    def comparison_prompt(self, finding: str | None = None) -> ComparisonPrompt:
        """The longitudinal notebook's prompt, or (``finding``) the same form asking about that one finding."""
        if finding is None:
            return ComparisonPrompt(COMPARE)
        name = display_name(finding) if finding in FINDING_SET else finding.strip()
        return ComparisonPrompt(COMPARE_FINDING.format(name.lower()))

    def stream_filter(self, sink: Any) -> Any:
        """The report's token sink, its thinking trace held back (as ``answer_text`` drops it)."""
        return ThoughtFilter(sink)

    def answer_text(self, task: Task, answer: str) -> str:
        """What the model said, its thinking trace dropped (a report is shown and labelled as written)."""
        return without_thought(answer or "")

    def parse(self, task: Task, answer: str, view: ModelView | None, *, target: str | None = None,
              finding: str | None = None, source: str = "vlm") -> Parsed:
        if task not in LOCATION_ONLY:
            return super().parse(task, final_answer(answer or "") if answer else answer, view, target=target,
                                 finding=finding, source=source)
        items, why = _box_items(answer or "")
        out = Parsed(task, "boxes" if items else "none", notes=[why] if why else [])
        for item in items:
            coords, bad = _coords(item)
            if coords is None:
                out.rejected.append(f"{json.dumps(item)[:80]} ({bad})")
                continue
            label = str(item.get("label") or target or "")
            box = view.box_to_original(coords, label=label) if view is not None else None
            if box is None:
                box = Box(x1=coords[0], y1=coords[1], x2=coords[2], y2=coords[3], label=label)
            elif box.x2 - box.x1 <= 0.0 or box.y2 - box.y1 <= 0.0:
                out.rejected.append(f"{json.dumps(item)[:80]} (outside the image, in its padding)")
                continue
            out.locations.append(Location(box=box, model_coords=coords, target=target or label, finding=finding,
                                          task=task))
        return out
