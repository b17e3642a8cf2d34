"""MedGemma (google/medgemma-4b-it, Gemma 3): the prompts its model card shows, and its answers.

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
"""

from __future__ import annotations

from knowledge.evidence import FindingCall
from tools.vlm.adapters.base import Parsed, Prompt, Task
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
